/** The "Connections" sidebar: every connection with this user's status and actions. */

import {
  addIcon,
  caretDownIcon,
  caretRightIcon,
  editIcon,
  refreshIcon,
  ReactWidget
} from '@jupyterlab/ui-components';
import type { Message } from '@lumino/messaging'; // a type only (of @lumino/widgets)
import * as React from 'react';

import { Controller } from './controller';
import { CONNECTOR_LABELS } from './fields';
import { ConnectionForm } from './form';
import { statusLine } from './format';
import { ConnectionsModel } from './state';
import { TreeView } from './treeview';
import { IConnectionStatus } from './types';

function useModel(model: ConnectionsModel): void {
  const [, setVersion] = React.useState(0);
  React.useEffect(() => model.changed.connect(() => setVersion(v => v + 1)), [model]);
}

function Card(props: {
  controller: Controller;
  c: IConnectionStatus;
  open: boolean;
  onToggle: () => void;
  onEdit: () => void;
}): JSX.Element {
  const { controller, c, open, onToggle, onEdit } = props;
  const model = controller.model;
  const line = statusLine(c);
  const busy = model.busy.get(c.name);
  const note = model.notes.get(c.name);
  const waiting = model.watching(c.name);
  const usable = c.status !== 'error' || c.error !== 'config_error';
  return (
    <li className={`jp-ConnAuth-card jp-ConnAuth-card-${c.status}`} data-connection={c.name}>
      <div className="jp-ConnAuth-cardHead">
        <button
          className="jp-ConnAuth-iconButton"
          aria-expanded={open}
          title={open ? 'Hide the browse tree' : 'Browse catalogs, schemas and tables'}
          onClick={onToggle}
          disabled={!usable}
        >
          {open ? <caretDownIcon.react tag="span" /> : <caretRightIcon.react tag="span" />}
        </button>
        <span className="jp-ConnAuth-name" title={c.description || c.name}>
          {c.name}
        </span>
        <span className="jp-ConnAuth-connector">
          {c.connector ? CONNECTOR_LABELS[c.connector] : ''}
          {c.source === 'config' ? ' · config' : ''}
        </span>
        {c.editable && (
          <button className="jp-ConnAuth-iconButton" title="Edit" onClick={onEdit}>
            <editIcon.react tag="span" />
          </button>
        )}
      </div>
      <div className={`jp-ConnAuth-status jp-ConnAuth-${line.tone}`}>
        <span className="jp-ConnAuth-dot" />
        {line.text}
      </div>
      {line.fix && <div className="jp-ConnAuth-fix">Fix: {line.fix}</div>}
      {waiting && (
        <div className="jp-ConnAuth-note jp-ConnAuth-warn">Waiting for the sign-in in the popup…</div>
      )}
      {note && (
        <div className={`jp-ConnAuth-note jp-ConnAuth-${note.tone}`} role="status">
          {note.text}
          {note.fix && <div className="jp-ConnAuth-fix">Fix: {note.fix}</div>}
        </div>
      )}
      <div className="jp-ConnAuth-actions">
        <button
          className="jp-Button jp-mod-styled jp-ConnAuth-action"
          disabled={!!busy || !usable}
          onClick={() => void controller.authorize(c.name)}
          title="Sign in at the identity provider (popup)"
        >
          {busy === 'authorize' ? 'Opening…' : c.status === 'authorized' ? 'Re-authorize' : 'Authorize'}
        </button>
        {c.status === 'authorized' && (
          <button
            className="jp-Button jp-mod-styled jp-ConnAuth-action"
            disabled={!!busy || !usable}
            onClick={() => void controller.authorize(c.name, true)}
            title="Sign in with another account at the identity provider (replaces the current one)"
          >
            Switch account
          </button>
        )}
        <button
          className="jp-Button jp-mod-styled jp-ConnAuth-action"
          disabled={!!busy || !usable}
          onClick={() => void controller.test(c.name)}
          title="Run a trivial query through the broker"
        >
          {busy === 'test' ? 'Testing…' : 'Test'}
        </button>
        <button
          className="jp-Button jp-mod-styled jp-ConnAuth-action"
          disabled={!!busy || c.status !== 'authorized'}
          onClick={() => void controller.revoke(c.name)}
          title="Forget your token (and revoke it at the identity provider)"
        >
          {busy === 'revoke' ? 'Revoking…' : 'Revoke'}
        </button>
      </div>
      {open && usable && (
        <TreeView
          tree={model.tree(c.name)}
          showError={e => model.setNote(c.name, { tone: 'error', text: e.message, fix: e.fix })}
        />
      )}
    </li>
  );
}

function PanelView(props: { controller: Controller }): JSX.Element {
  const { controller } = props;
  const model = controller.model;
  useModel(model);
  const [open, setOpen] = React.useState<Set<string>>(new Set());
  const [form, setForm] = React.useState<{ existing: IConnectionStatus | null } | null>(null);
  const allowAdd = model.info?.allow_api_connections !== false;

  if (form) {
    return (
      <div className="jp-ConnAuth-panelBody">
        <ConnectionForm
          key={form.existing?.name ?? '(new)'}
          controller={controller}
          existing={form.existing}
          onDone={() => {
            setForm(null);
            void model.refresh();
          }}
        />
      </div>
    );
  }
  const toggle = (name: string) =>
    setOpen(prev => {
      const next = new Set(prev);
      if (next.has(name)) {
        next.delete(name);
      } else {
        next.add(name);
      }
      return next;
    });
  const configError = model.info?.config_error;
  const needing = controller.needingConsent().length;
  return (
    <div className="jp-ConnAuth-panelBody">
      <div className="jp-ConnAuth-toolbar">
        <h2 className="jp-ConnAuth-title">Connections</h2>
        <button
          className="jp-ConnAuth-iconButton"
          title="Refresh"
          onClick={() => void model.refresh()}
          disabled={model.loading}
        >
          <refreshIcon.react tag="span" />
        </button>
        {allowAdd && (
          <button
            className="jp-ConnAuth-iconButton jp-ConnAuth-add"
            title="Add connection…"
            onClick={() => setForm({ existing: null })}
          >
            <addIcon.react tag="span" />
          </button>
        )}
        {needing > 0 && (
          <button
            className="jp-Button jp-mod-styled jp-ConnAuth-action jp-ConnAuth-authorizeAll"
            disabled={controller.chain.running}
            onClick={() => void controller.authorizeAll()}
            title="Sign in for every connection that needs your consent, one after the other in one popup"
          >
            Authorize all ({needing})
          </button>
        )}
      </div>
      {model.error && (
        <div className="jp-ConnAuth-errorBox" role="alert">
          <div>{model.error.message}</div>
          {model.error.fix && <div className="jp-ConnAuth-fix">Fix: {model.error.fix}</div>}
          <button className="jp-ConnAuth-link" onClick={() => void model.refresh()}>
            Try again
          </button>
        </div>
      )}
      {configError && (
        <div className="jp-ConnAuth-errorBox" role="alert">
          <div>{configError.message}</div>
          {configError.fix && <div className="jp-ConnAuth-fix">Fix: {configError.fix}</div>}
        </div>
      )}
      {!model.loaded && !model.error && <div className="jp-ConnAuth-dim">Loading…</div>}
      {model.loaded && model.connections.length === 0 && (
        <div className="jp-ConnAuth-empty">
          <p>No connections yet.</p>
          <p className="jp-ConnAuth-hint">
            An admin adds them to <code>c.ConnAuth.connections</code> in jupyter_server_config.py
            {allowAdd ? ', or add one here.' : '.'}
          </p>
          {allowAdd && (
            <button
              className="jp-Button jp-mod-styled jp-mod-accept"
              onClick={() => setForm({ existing: null })}
            >
              Add connection…
            </button>
          )}
        </div>
      )}
      <ul className="jp-ConnAuth-list">
        {model.connections.map(c => (
          <Card
            key={c.name}
            controller={controller}
            c={c}
            open={open.has(c.name)}
            onToggle={() => toggle(c.name)}
            onEdit={() => setForm({ existing: c })}
          />
        ))}
      </ul>
      {model.loaded && model.connections.length > 0 && allowAdd && (
        <button
          className="jp-ConnAuth-link jp-ConnAuth-addLink"
          onClick={() => setForm({ existing: null })}
        >
          Add connection…
        </button>
      )}
    </div>
  );
}

export class ConnectionsPanel extends ReactWidget {
  constructor(readonly controller: Controller) {
    super();
    this.addClass('jp-ConnAuth-panel');
  }

  /** Shown again: what changed meanwhile (a notebook's revoke) shows at once. */
  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.controller.model.refresh();
  }

  render(): JSX.Element {
    return <PanelView controller={this.controller} />;
  }
}
