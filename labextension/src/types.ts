/**
 * The broker API's JSON shapes (see jupyter_connauth/server/handlers.py).
 * Pure types: no JupyterLab imports, so the unit tests load this module in Node.
 */

export type ConnectorName = 'bigquery' | 'databricks' | 'snowflake';
export type AuthMode = 'oauth' | 'oauth-jwt' | 'on-behalf-of' | 'token-exchange';
export type Flavour = 'azure' | 'google' | 'okta' | 'keycloak' | 'oidc';

/** `GET connections` items: a connection and this user's status. */
export interface IConnectionStatus {
  name: string;
  status: 'authorized' | 'consent_required' | 'error';
  connector?: ConnectorName;
  auth?: AuthMode;
  scopes?: string[];
  params?: Record<string, string>;
  description?: string;
  source?: 'config' | 'api';
  editable?: boolean;
  resource?: string;
  jwt_audience?: string;
  /** A name of c.ConnAuth.providers; absent: the top-level identity provider. */
  provider?: string;
  jwt_user_claim?: string;
  private_key_configured?: boolean;
  // authorized
  authorized_as?: string | null;
  expires_at?: number | null;
  granted_scopes?: string[] | null;
  refreshable?: boolean;
  // consent_required
  reason?: string;
  reason_text?: string;
  // error
  error?: string;
  message?: string;
  fix?: string | null;
}

export interface IProviderInfo {
  name: string;
  flavour: Flavour;
  scope_templates: Record<string, string[] | null>;
}

export interface IInfo {
  version?: string;
  user?: string;
  flavour: Flavour;
  redirect_uri?: string;
  discovery_url?: string | null;
  client_id?: string | null;
  config_error?: IErrorBody | null;
  allow_api_connections?: boolean;
  /** The default scopes per "connector/auth" for this flavour. */
  scope_templates?: Record<string, string[] | null>;
  /** c.ConnAuth.providers: the identity providers a connection may name instead. */
  providers?: IProviderInfo[];
}

/** `consent_required` answers of token / test / browse. */
export interface IConsentRequired {
  status: 'consent_required';
  connection?: string;
  reason?: string;
  reason_text?: string;
  authorize_url: string;
  flow_id: string;
  expires_at?: number;
}

export interface IFlowStart {
  authorize_url: string;
  flow_id: string;
  [key: string]: unknown;
}

export interface ITestOk {
  status: 'ok';
  connection?: string;
  elapsed: number;
  whoami?: Record<string, unknown> | null;
}

export type TestAnswer = ITestOk | IConsentRequired;

export type BrowseItem = string | { name: string; type?: string; nullable?: boolean };

export interface IBrowseOk {
  status: 'ok';
  connection?: string;
  path?: string[];
  items: BrowseItem[];
}

export type BrowseAnswer = IBrowseOk | IConsentRequired;

export interface IFlow {
  flow_id: string;
  connection: string;
  status: 'pending' | 'complete' | 'failed';
  expires_at?: number;
  reason?: string;
  error?: string | null;
  message?: string | null;
  fix?: string | null;
  identity?: string | null;
}

/** The callback page's postMessage to its opener (jupyter_connauth/broker/pages.py). */
export interface IFlowMessage {
  type: 'connauth:flow';
  status: 'complete' | 'failed';
  flow_id: string | null;
  connection: string | null;
  error?: string | null;
}

export interface IErrorBody {
  error: string;
  message: string;
  fix?: string | null;
}

/** An error answer of the API (or a network failure), with the fix when there is one. */
export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly fix: string | null = null,
    readonly httpStatus = 0
  ) {
    super(message);
    this.name = 'ApiError';
  }

  static from(err: unknown): ApiError {
    if (err instanceof ApiError) {
      return err;
    }
    const message = err instanceof Error ? err.message : String(err);
    return new ApiError('client_error', message || 'unknown error');
  }
}

/** What the panel needs from the broker API; the unit tests pass a fake. */
export interface IBrokerApi {
  info(): Promise<IInfo>;
  connections(): Promise<IConnectionStatus[]>;
  connection(name: string): Promise<IConnectionStatus>;
  create(body: Record<string, unknown>): Promise<IConnectionStatus>;
  update(name: string, body: Record<string, unknown>): Promise<IConnectionStatus>;
  remove(name: string): Promise<void>;
  authorize(name: string, switchAccount?: boolean): Promise<IFlowStart>;
  revoke(name: string): Promise<unknown>;
  uploadPrivateKey(name: string, pem: string): Promise<unknown>;
  test(name: string): Promise<TestAnswer>;
  browse(name: string, path: string[]): Promise<BrowseAnswer>;
  flow(flowId: string): Promise<IFlow>;
}
