/**
 * The connection form's fields per connector (jupyter_connauth/core/connections.py)
 * and the default scope templates (jupyter_connauth/core/flavours.py).
 */

import { AuthMode, ConnectorName, Flavour, IInfo } from './types';

export interface IField {
  key: string;
  label: string;
  required: boolean;
  placeholder?: string;
}

export const CONNECTOR_LABELS: Record<ConnectorName, string> = {
  bigquery: 'BigQuery',
  databricks: 'Databricks SQL',
  snowflake: 'Snowflake'
};

export const CONNECTOR_FIELDS: Record<ConnectorName, IField[]> = {
  bigquery: [
    { key: 'project', label: 'Project', required: true, placeholder: 'acme-analytics' },
    { key: 'location', label: 'Location', required: false, placeholder: 'EU' },
    { key: 'dataset', label: 'Default dataset', required: false }
  ],
  databricks: [
    {
      key: 'server_hostname',
      label: 'Workspace host',
      required: true,
      placeholder: 'adb-123.azuredatabricks.net'
    },
    {
      key: 'http_path',
      label: 'Warehouse HTTP path',
      required: true,
      placeholder: '/sql/1.0/warehouses/abc'
    },
    { key: 'catalog', label: 'Catalog', required: false },
    { key: 'schema', label: 'Schema', required: false }
  ],
  snowflake: [
    { key: 'account', label: 'Account', required: true, placeholder: 'acme-xy12345' },
    { key: 'warehouse', label: 'Warehouse', required: false },
    { key: 'database', label: 'Database', required: false },
    { key: 'schema', label: 'Schema', required: false },
    { key: 'role', label: 'Role', required: false },
    { key: 'host', label: 'Host', required: false }
  ]
};

export const AUTH_LABELS: Record<AuthMode, string> = {
  oauth: 'OAuth',
  'oauth-jwt': 'OAuth (JWT)',
  'on-behalf-of': 'On-behalf-of',
  'token-exchange': 'Token exchange'
};

export function authModes(connector: ConnectorName): AuthMode[] {
  return connector === 'snowflake'
    ? ['oauth', 'oauth-jwt', 'on-behalf-of', 'token-exchange']
    : ['oauth', 'on-behalf-of', 'token-exchange'];
}

const AZURE_DATABRICKS = '2ff814a6-3304-4ab8-85cb-cd0e6f879c1d';
const OIDC_SCOPES = new Set(['openid', 'email', 'profile', 'offline_access']);
const TEMPLATES: Record<string, string[]> = {
  'bigquery/oidc': ['https://www.googleapis.com/auth/bigquery'],
  'bigquery/azure': ['https://bigquery.googleapis.com/.default', 'offline_access'],
  'databricks/azure': [`${AZURE_DATABRICKS}/user_impersonation`, 'offline_access'],
  'databricks/oidc': ['offline_access'],
  'snowflake/oidc': ['session:role-any', 'offline_access']
};
const JWT_IDENTITY_SCOPES = ['openid', 'email', 'offline_access'];

/**
 * The template scopes, as the broker computes them (`default_scopes`), or null when
 * the admin must choose (Snowflake on Azure). `fromServer` (GET info's
 * scope_templates, when the broker sends them) wins over the built-in copy.
 */
export function defaultScopes(
  connector: ConnectorName,
  flavour: Flavour,
  auth: AuthMode = 'oauth',
  fromServer?: Record<string, string[] | null>
): string[] | null {
  const key = `${connector}/${auth}`;
  if (fromServer && key in fromServer) {
    return fromServer[key];
  }
  if (auth === 'oauth-jwt') {
    return JWT_IDENTITY_SCOPES;
  }
  const template = TEMPLATES[`${connector}/${flavour}`];
  if (!template) {
    return null;
  }
  if (auth === 'on-behalf-of' || auth === 'token-exchange') {
    const out: string[] = [];
    for (const s of template) {
      if (OIDC_SCOPES.has(s)) {
        continue;
      }
      const scope =
        s.includes('/') && !s.startsWith('http') ? `${s.slice(0, s.lastIndexOf('/'))}/.default` : s;
      if (!out.includes(scope)) {
        out.push(scope);
      }
    }
    return out;
  }
  return template;
}

/** "a b  c" → ["a", "b", "c"] */
export function parseScopes(text: string): string[] {
  return text.split(/[\s,]+/).filter(Boolean);
}

export function sameScopes(a: string[], b: string[]): boolean {
  const sa = new Set(a);
  const sb = new Set(b);
  return sa.size === sb.size && [...sa].every(s => sb.has(s));
}

export const FLAVOUR_LABELS: Record<Flavour, string> = {
  azure: 'Azure (Entra ID)',
  google: 'Google',
  okta: 'Okta',
  keycloak: 'Keycloak',
  oidc: 'OIDC'
};

/**
 * The flavour and scope templates of the identity provider a connection names
 * (`provider`, a name of c.ConnAuth.providers), or of the top-level one.
 */
export function providerRules(
  info: IInfo | null | undefined,
  provider: string
): { flavour: Flavour; templates?: Record<string, string[] | null> } {
  const named = provider ? info?.providers?.find(p => p.name === provider) : undefined;
  if (named) {
    return { flavour: named.flavour, templates: named.scope_templates };
  }
  return { flavour: info?.flavour ?? 'oidc', templates: info?.scope_templates };
}
