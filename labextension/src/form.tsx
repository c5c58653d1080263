/** "Add connection…" and "Edit": connector, its parameters, auth, scopes; Test and Save. */

import { Dialog, showDialog } from '@jupyterlab/apputils';
import * as React from 'react';

import { Controller } from './controller';
import {
  AUTH_LABELS,
  authModes,
  CONNECTOR_FIELDS,
  CONNECTOR_LABELS,
  defaultScopes,
  FLAVOUR_LABELS,
  parseScopes,
  providerRules,
  sameScopes
} from './fields';
import { fieldError } from './format';
import { openPopup } from './popup';
import { ApiError, AuthMode, ConnectorName, IConnectionStatus } from './types';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const PASS_THROUGH: AuthMode[] = ['on-behalf-of', 'token-exchange'];

export interface IFormProps {
  controller: Controller;
  existing: IConnectionStatus | null;
  onDone: (saved: string | null) => void;
}

interface IFormState {
  name: string;
  connector: ConnectorName;
  auth: AuthMode;
  params: Record<string, string>;
  scopes: string;
  scopesTouched: boolean;
  description: string;
  resource: string;
  jwtAudience: string;
  provider: string;
  keyFile: { name: string; pem: string } | null;
}

function initial(existing: IConnectionStatus | null): IFormState {
  return {
    name: existing?.name ?? '',
    connector: existing?.connector ?? 'bigquery',
    auth: existing?.auth ?? 'oauth',
    params: { ...(existing?.params ?? {}) },
    scopes: (existing?.scopes ?? []).join(' '),
    scopesTouched: !!existing,
    description: existing?.description ?? '',
    resource: existing?.resource ?? '',
    jwtAudience: existing?.jwt_audience ?? '',
    provider: existing?.provider ?? '',
    keyFile: null
  };
}

function FieldError(props: { error?: string }): JSX.Element | null {
  return props.error ? (
    <div className="jp-ConnAuth-fieldError" role="alert">
      {props.error}
    </div>
  ) : null;
}

export function ConnectionForm(props: IFormProps): JSX.Element {
  const { controller, existing, onDone } = props;
  const model = controller.model;
  const [s, setS] = React.useState<IFormState>(() => initial(existing));
  const providers = model.info?.providers ?? [];
  const { flavour, templates } = providerRules(model.info, s.provider);
  const [errors, setErrors] = React.useState<Record<string, string>>({});
  const [general, setGeneral] = React.useState<ApiError | null>(null);
  const [busy, setBusy] = React.useState<string | null>(null);
  const [result, setResult] = React.useState<{ tone: string; text: string } | null>(null);
  const [saved, setSaved] = React.useState<string | null>(existing?.name ?? null);
  const waitingRetest = React.useRef(false);
  // The form as last saved: Test runs on what is saved, so it saves first only when
  // there is something to save (and says so on the button).
  const savedForm = React.useRef<IFormState | null>(existing ? s : null);
  const dirty = !saved || JSON.stringify(savedForm.current) !== JSON.stringify(s);

  const template = defaultScopes(s.connector, flavour, s.auth, templates);
  const scopes = s.scopesTouched ? s.scopes : (template ?? []).join(' ');
  const scopesChanged =
    !!existing &&
    (!sameScopes(parseScopes(scopes), existing.scopes ?? []) ||
      s.auth !== existing.auth ||
      s.provider !== (existing.provider ?? ''));

  const set = (patch: Partial<IFormState>) => setS(prev => ({ ...prev, ...patch }));
  const setParam = (key: string, value: string) =>
    setS(prev => ({ ...prev, params: { ...prev.params, [key]: value } }));

  // After consent from the form's Test, test again by itself.
  React.useEffect(
    () =>
      model.flowFinished.connect(() => {
        const name = saved;
        if (waitingRetest.current && name && !model.watching(name)) {
          waitingRetest.current = false;
          if (model.lastFlow.get(name)?.status === 'complete') {
            void runTest(name, null);
          }
        }
      }),
    [saved]
  );

  function body(): Record<string, unknown> {
    const out: Record<string, unknown> = { name: s.name.trim(), connector: s.connector, auth: s.auth };
    for (const f of CONNECTOR_FIELDS[s.connector]) {
      const v = (s.params[f.key] ?? '').trim();
      if (v) {
        out[f.key] = v;
      }
    }
    const list = parseScopes(scopes);
    if (list.length && !(template && sameScopes(list, template))) {
      out.scopes = list.join(' ');
    }
    if (s.description.trim()) {
      out.description = s.description.trim();
    }
    if (s.resource.trim()) {
      out.resource = s.resource.trim();
    }
    if (s.auth === 'oauth-jwt' && s.jwtAudience.trim()) {
      out.jwt_audience = s.jwtAudience.trim();
    }
    if (s.provider) {
      out.provider = s.provider;
    }
    return out;
  }

  function validate(): boolean {
    const e: Record<string, string> = {};
    if (!NAME_RE.test(s.name.trim())) {
      e.name = "1-64 letters, digits, '_', '-' or '.', starting with a letter or digit";
    }
    for (const f of CONNECTOR_FIELDS[s.connector]) {
      if (f.required && !(s.params[f.key] ?? '').trim()) {
        e[f.key] = `required for ${CONNECTOR_LABELS[s.connector]}`;
      }
    }
    if (!parseScopes(scopes).length && template === null) {
      e.scopes = `there is no default scope for ${s.connector} with this identity provider: enter the scopes`;
    }
    if (s.auth === 'oauth-jwt' && !s.jwtAudience.trim()) {
      e.jwt_audience = 'the JWT Audience the Snowflake security integration expects';
    }
    setErrors(e);
    return Object.keys(e).length === 0;
  }

  /** Create or update; then upload the key. Returns the saved name or null. */
  async function save(): Promise<string | null> {
    setGeneral(null);
    setResult(null);
    if (!validate()) {
      return null;
    }
    const name = s.name.trim();
    try {
      if (saved) {
        const out = await model.api.update(saved, body());
        const dropped = (out as { tokens_invalidated?: number }).tokens_invalidated;
        if (dropped) {
          setResult({ tone: 'warn', text: `Saved; ${dropped} user token(s) invalidated.` });
        }
      } else {
        await model.api.create(body());
        setSaved(name);
      }
      if (s.keyFile) {
        await model.api.uploadPrivateKey(name, s.keyFile.pem);
        set({ keyFile: null });
        savedForm.current = { ...s, keyFile: null };
      } else {
        savedForm.current = s;
      }
    } catch (err) {
      const e = ApiError.from(err);
      const fe = fieldError(e);
      if (fe) {
        setErrors({ [fe.field]: e.fix ? `${fe.message} (${e.fix})` : fe.message });
      } else {
        setGeneral(e);
      }
      return null;
    } finally {
      await model.refresh();
    }
    return name;
  }

  async function runTest(name: string, popup: Window | null): Promise<void> {
    setBusy('test');
    const answer = await controller.test(name, popup);
    setBusy(null);
    const note = model.notes.get(name);
    if (answer?.status === 'consent_required') {
      waitingRetest.current = true;
      setResult({ tone: 'warn', text: 'Sign in in the popup; the test runs again by itself.' });
    } else if (note) {
      setResult({ tone: note.tone, text: note.fix ? `${note.text} Fix: ${note.fix}` : note.text });
    }
  }

  // Test = (save if changed, then) a trivial query; the popup must open within this click.
  const onTest = () => {
    const wouldConsent =
      !PASS_THROUGH.includes(s.auth) &&
      (!saved || scopesChanged || model.get(saved)?.status === 'consent_required');
    const popupNow = wouldConsent && validate();
    // Open now, within the click; it is pointed at the IdP when the URL arrives.
    const placeholder = popupNow ? openPopup() : null;
    if (!dirty && saved) {
      void runTest(saved, placeholder);
      return;
    }
    setBusy('save');
    void save().then(name => {
      setBusy(null);
      if (!name) {
        placeholder?.close();
        return;
      }
      void runTest(name, placeholder);
    });
  };

  const onSave = () => {
    setBusy('save');
    void save().then(name => {
      setBusy(null);
      if (name) {
        onDone(name);
      }
    });
  };

  const fields = CONNECTOR_FIELDS[s.connector];
  return (
    <form
      className="jp-ConnAuth-form"
      aria-label={existing ? `Edit ${existing.name}` : 'Add connection'}
      onSubmit={e => {
        e.preventDefault();
        onSave();
      }}
    >
      <h3 className="jp-ConnAuth-formTitle">{existing ? `Edit ${existing.name}` : 'Add connection'}</h3>
      <label className="jp-ConnAuth-field">
        <span>Name</span>
        <input
          className="jp-mod-styled"
          name="name"
          value={s.name}
          disabled={!!saved}
          placeholder="sales"
          onChange={e => set({ name: e.currentTarget.value })}
        />
        <FieldError error={errors.name} />
      </label>
      <label className="jp-ConnAuth-field">
        <span>Connector</span>
        <select
          className="jp-mod-styled"
          name="connector"
          value={s.connector}
          onChange={e => {
            const connector = e.currentTarget.value as ConnectorName;
            set({
              connector,
              auth: authModes(connector).includes(s.auth) ? s.auth : 'oauth'
            });
          }}
        >
          {(Object.keys(CONNECTOR_LABELS) as ConnectorName[]).map(c => (
            <option key={c} value={c}>
              {CONNECTOR_LABELS[c]}
            </option>
          ))}
        </select>
        <FieldError error={errors.connector} />
      </label>
      {fields.map(f => (
        <label className="jp-ConnAuth-field" key={`${s.connector}:${f.key}`}>
          <span>
            {f.label}
            {f.required ? ' *' : ''}
          </span>
          <input
            className="jp-mod-styled"
            name={f.key}
            value={s.params[f.key] ?? ''}
            placeholder={f.placeholder}
            onChange={e => setParam(f.key, e.currentTarget.value)}
          />
          <FieldError error={errors[f.key]} />
        </label>
      ))}
      <label className="jp-ConnAuth-field">
        <span>Auth</span>
        <select
          className="jp-mod-styled"
          name="auth"
          value={s.auth}
          onChange={e => set({ auth: e.currentTarget.value as AuthMode })}
        >
          {authModes(s.connector).map(a => (
            <option key={a} value={a}>
              {AUTH_LABELS[a]}
            </option>
          ))}
        </select>
        <FieldError error={errors.auth} />
      </label>
      {providers.length > 0 && (
        <label className="jp-ConnAuth-field">
          <span>Identity provider</span>
          <select
            className="jp-mod-styled"
            name="provider"
            value={s.provider}
            onChange={e => set({ provider: e.currentTarget.value })}
          >
            <option value="">Default ({FLAVOUR_LABELS[model.info?.flavour ?? 'oidc']})</option>
            {providers.map(p => (
              <option key={p.name} value={p.name}>
                {p.name} ({FLAVOUR_LABELS[p.flavour] ?? p.flavour})
              </option>
            ))}
          </select>
          <FieldError error={errors.provider} />
        </label>
      )}
      {s.auth === 'oauth-jwt' && (
        <>
          <label className="jp-ConnAuth-field">
            <span>JWT Audience *</span>
            <input
              className="jp-mod-styled"
              name="jwt_audience"
              value={s.jwtAudience}
              placeholder="https://acme-xy12345.snowflakecomputing.com"
              onChange={e => set({ jwtAudience: e.currentTarget.value })}
            />
            <FieldError error={errors.jwt_audience} />
          </label>
          <label className="jp-ConnAuth-field">
            <span>Private key (PEM)</span>
            <input
              type="file"
              name="private_key"
              accept=".pem,.p8,.key,application/x-pem-file"
              onChange={e => {
                const file = e.currentTarget.files?.[0];
                if (file) {
                  void file.text().then(pem => set({ keyFile: { name: file.name, pem } }));
                }
              }}
            />
            <span className="jp-ConnAuth-hint">
              {s.keyFile
                ? `${s.keyFile.name} is uploaded on Save (stored encrypted, never shown again)`
                : existing?.private_key_configured
                  ? 'A key is configured; choose a file to replace it'
                  : 'The key the broker signs JWTs with; it never leaves the server'}
            </span>
            <FieldError error={errors.private_key} />
          </label>
        </>
      )}
      <label className="jp-ConnAuth-field">
        <span>Scopes</span>
        <textarea
          className="jp-mod-styled"
          name="scopes"
          rows={2}
          value={scopes}
          placeholder={template === null ? 'required for this connector and IdP' : ''}
          onChange={e => set({ scopes: e.currentTarget.value, scopesTouched: true })}
        />
        <span className="jp-ConnAuth-hint">
          {PASS_THROUGH.includes(s.auth)
            ? 'The scopes of the exchanged token; no popup for users.'
            : `Template for ${s.connector} with ${FLAVOUR_LABELS[flavour] ?? flavour}.`}
          {s.scopesTouched && template && !sameScopes(parseScopes(scopes), template) && (
            <>
              {' '}
              <button
                type="button"
                className="jp-ConnAuth-link"
                onClick={() => set({ scopesTouched: false })}
              >
                Reset to template
              </button>
            </>
          )}
        </span>
        {scopesChanged && (
          <div className="jp-ConnAuth-warn jp-ConnAuth-scopeWarning" role="status">
            Changing the scopes, auth or identity provider asks every user to consent again.
          </div>
        )}
        <FieldError error={errors.scopes} />
      </label>
      <label className="jp-ConnAuth-field">
        <span>Resource (optional, RFC 8707)</span>
        <input
          className="jp-mod-styled"
          name="resource"
          value={s.resource}
          onChange={e => set({ resource: e.currentTarget.value })}
        />
        <FieldError error={errors.resource} />
      </label>
      <label className="jp-ConnAuth-field">
        <span>Description</span>
        <input
          className="jp-mod-styled"
          name="description"
          value={s.description}
          onChange={e => set({ description: e.currentTarget.value })}
        />
      </label>
      {general && (
        <div className="jp-ConnAuth-errorBox" role="alert">
          <div>{general.message}</div>
          {general.fix && <div className="jp-ConnAuth-fix">Fix: {general.fix}</div>}
        </div>
      )}
      {result && <div className={`jp-ConnAuth-${result.tone}`}>{result.text}</div>}
      <div className="jp-ConnAuth-formButtons">
        {existing?.editable && (
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-warn jp-ConnAuth-delete"
            disabled={busy !== null}
            onClick={async () => {
              const answer = await showDialog({
                title: `Delete "${existing.name}"?`,
                body: 'The connection and every user\'s token for it are deleted.',
                buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
              });
              if (!answer.button.accept) {
                return;
              }
              setBusy('delete');
              model.api
                .remove(existing.name)
                .then(() => onDone(null))
                .catch(err => setGeneral(ApiError.from(err)))
                .finally(() => {
                  setBusy(null);
                  void model.refresh();
                });
            }}
          >
            Delete
          </button>
        )}
        <button type="button" className="jp-Button jp-mod-styled jp-mod-reject" onClick={() => onDone(null)}>
          {saved && !existing ? 'Close' : 'Cancel'}
        </button>
        <button
          type="button"
          className="jp-Button jp-mod-styled"
          disabled={busy !== null}
          onClick={onTest}
          title={
            dirty
              ? 'Save the connection, then run a trivial query (the consent popup opens when needed)'
              : 'Run a trivial query (the consent popup opens when needed)'
          }
        >
          {busy === 'test' ? 'Testing…' : dirty ? 'Save and test' : 'Test'}
        </button>
        <button type="submit" className="jp-Button jp-mod-styled jp-mod-accept" disabled={busy !== null}>
          {busy === 'save' ? 'Saving…' : 'Save'}
        </button>
      </div>
    </form>
  );
}
