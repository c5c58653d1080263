// Test OpenID provider for jupyter-connauth's test suite.
//
// A real, certified OpenID provider (panva/oidc-provider 9.x) with an in-memory
// store, configured by one JSON document in the IDP_CONFIG environment variable.
// See README.md next to this file for the config keys and the /__test__ hooks.
//
// Prints exactly one line "READY <issuer>" on stdout once it is listening.
// Never logs token or secret values.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';

import { makeProfile } from './profiles.mjs';

// ---------------------------------------------------------------- config ---

const cfg = JSON.parse(process.env.IDP_CONFIG || '{}');

const port = Number(cfg.port ?? 0);
const host = cfg.host ?? '127.0.0.1';

// Things tests may change at runtime through POST /__test__/config (profiles add more).
const runtime = {
  delay_ms: Number(cfg.delay_ms ?? 0),
  fail_token_endpoint: cfg.fail_token_endpoint ?? null,
  fail_times: cfg.fail_times ?? null,
  fail_error: cfg.fail_error ?? null,
  garbage: Boolean(cfg.garbage ?? false),
  access_token_ttl: Number(cfg.access_token_ttl ?? 300),
  narrow_scopes: [...(cfg.narrow_scopes ?? [])],
  // Token exchange and on-behalf-of answer invalid_grant for every subject token, as
  // Entra does for a revoked session or a Conditional Access change (AADSTS50173).
  reject_subject_tokens: Boolean(cfg.reject_subject_tokens ?? false),
  // RFC 8628: the device code's lifetime (expires_in) and the polling interval the
  // device authorization response names (oidc-provider names none: clients then use 5 s).
  device_code_ttl: Number(cfg.device_code_ttl ?? 600),
  device_interval: cfg.device_interval ?? null,
};

// A vendor profile (profiles.mjs): "generic" (default) changes nothing.
const profile = makeProfile(cfg, { errors, runtime });
const RUNTIME_KEYS = new Set(Object.keys(runtime));

const issuer = (cfg.issuer ?? `http://${host}:${port}${profile.mountPath}`).replace(/\/$/, '');
const refreshTokenPolicy = cfg.refresh_token_policy ?? profile.refreshTokenPolicy ?? 'consent';
if (!['consent', 'always'].includes(refreshTokenPolicy)) {
  throw new Error(`refresh_token_policy must be "consent" or "always", got ${JSON.stringify(refreshTokenPolicy)}`);
}

const OIDC_SCOPES = ['openid', 'email', 'profile', 'offline_access'];
const DEFAULT_RESOURCE = 'urn:connauth:test-api';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const AT_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
// RFC 8628 device flow: on for the generic profile unless `device_flow: false` (an IdP
// whose discovery has no device_authorization_endpoint).
const deviceFlow = Boolean(cfg.device_flow ?? profile.name === 'generic');

const extraScopes = [...(cfg.extra_scopes ?? [])];

// resource indicator -> { audience, scopes: [] }
const resources = {};
for (const [indicator, info] of Object.entries({ ...profile.extraResources, ...(cfg.resources ?? {}) })) {
  resources[indicator] = {
    audience: info.audience ?? indicator,
    scopes: [...(info.scopes ?? [])],
  };
}
// The built-in default resource makes access tokens JWTs even when the client
// names no resource and no configured resource matches the requested scopes.
// It accepts every extra_scopes entry. `default_resource: null` disables it
// (then such access tokens are opaque and usable at the userinfo endpoint).
let defaultResource = profile.defaultResource?.indicator ?? DEFAULT_RESOURCE;
if (Object.hasOwn(cfg, 'default_resource')) {
  defaultResource = cfg.default_resource || null;
}
if (defaultResource && !resources[defaultResource]) {
  const audience = profile.defaultResource?.indicator === defaultResource
    ? profile.defaultResource.audience : defaultResource;
  resources[defaultResource] = { audience, scopes: [] };
}
if (defaultResource) {
  const rs = resources[defaultResource];
  rs.scopes = [...new Set([...rs.scopes, ...extraScopes])];
}

const knownScopes = new Set([
  ...OIDC_SCOPES,
  ...extraScopes,
  ...Object.values(resources).flatMap((r) => r.scopes),
]);
for (const s of profile.knownScopesExclude) knownScopes.delete(s);

const stats = newStats();
function newStats() {
  return {
    token_requests: {},
    token_errors: {},
    authorization_requests: 0,
    revocation_requests: 0,
    introspection_requests: 0,
    device_authorization_requests: 0,
    device_slow_down: 0,
    // the device codes issued, for the tests' leak scans (a test IdP may tell them)
    device_codes: [],
    token_log: [],
  };
}
function resetStats() {
  Object.assign(stats, newStats());
}

// ---------------------------------------------------------------- keys -----

function loadOrCreateSigningKey() {
  const file = cfg.keys_file;
  if (file && fs.existsSync(file)) {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  }
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  jwk.kid = crypto.randomBytes(8).toString('hex');
  jwk.alg = 'RS256';
  jwk.use = 'sig';
  if (file) {
    fs.writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  }
  return jwk;
}
const signingJwk = loadOrCreateSigningKey();
const verifyKey = crypto.createPublicKey({
  key: { kty: signingJwk.kty, n: signingJwk.n, e: signingJwk.e },
  format: 'jwk',
});

// ---------------------------------------------------------------- clients --

const clientGrantTypes = [
  'authorization_code', 'refresh_token', TOKEN_EXCHANGE, JWT_BEARER,
  ...(deviceFlow ? [DEVICE_GRANT] : []),
];
const clients = (cfg.clients ?? []).map((c) => {
  const { client_secret: secret, ...rest } = c;
  return {
    grant_types: clientGrantTypes,
    response_types: ['code'],
    token_endpoint_auth_method: secret ? 'client_secret_basic' : 'none',
    ...rest,
    ...(secret ? { client_secret: secret } : {}),
  };
});

// ---------------------------------------------------------------- helpers --

// login -> claims that replace or add to the defaults (e.g. an unverified email, an
// Entra-style immutable `oid`); added claims are released with the openid scope.
const accountOverrides = cfg.account_claims ?? {};
const STANDARD_CLAIMS = ['sub', 'email', 'email_verified', 'name', 'preferred_username'];
const addedClaims = [
  ...new Set([
    ...Object.keys(profile.idTokenClaims()),
    ...Object.values(accountOverrides).flatMap((o) => Object.keys(o)),
  ]),
].filter((c) => !STANDARD_CLAIMS.includes(c));

function accountClaims(login) {
  const email = login.includes('@') ? login : `${login}@example.com`;
  const local = email.split('@')[0];
  return {
    sub: login,
    email,
    email_verified: true,
    name: local.charAt(0).toUpperCase() + local.slice(1),
    preferred_username: email,
    ...profile.idTokenClaims(login),
    ...(accountOverrides[login] ?? {}),
  };
}

function narrowed(scopeString) {
  const narrow = new Set(runtime.narrow_scopes);
  const keep = [];
  const drop = [];
  for (const s of (scopeString || '').split(' ').filter(Boolean)) {
    (narrow.has(s) ? drop : keep).push(s);
  }
  return { keep: keep.join(' '), drop: drop.join(' ') };
}

function resourceInfo(indicator) {
  const rs = resources[indicator];
  if (!rs) return undefined;
  return {
    scope: rs.scopes.join(' '),
    audience: rs.audience,
    accessTokenTTL: runtime.access_token_ttl,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };
}

// Resource for a request that names none: the first configured resource one of
// whose scopes is requested (how Google / Azure pick the API by scope), else the
// default resource.
function resourceForScopes(scopeString) {
  const requested = new Set((scopeString || '').split(' ').filter(Boolean));
  for (const [indicator, rs] of Object.entries(resources)) {
    if (indicator === defaultResource) continue;
    if (rs.scopes.some((s) => requested.has(s))) return indicator;
  }
  return defaultResource || undefined;
}

function b64urlJson(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

// Verifies an access token this provider issued (RS256 JWT) and returns its payload.
function verifyOwnJwt(token, label) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) {
    throw new errors.InvalidGrant(`${label} is not a JWT issued by this provider`);
  }
  let header;
  let payload;
  try {
    header = b64urlJson(parts[0]);
    payload = b64urlJson(parts[1]);
  } catch {
    throw new errors.InvalidGrant(`${label} is malformed`);
  }
  const ok = header.alg === 'RS256' && crypto.verify(
    'sha256',
    Buffer.from(`${parts[0]}.${parts[1]}`),
    verifyKey,
    Buffer.from(parts[2], 'base64url'),
  );
  if (!ok) throw new errors.InvalidGrant(`${label} signature is invalid`);
  if (payload.iss !== issuer) throw new errors.InvalidGrant(`${label} was not issued by this provider`);
  if (typeof payload.exp !== 'number' || payload.exp < Math.floor(Date.now() / 1000)) {
    throw new errors.InvalidGrant(`${label} is expired`);
  }
  if (!payload.sub) throw new errors.InvalidGrant(`${label} has no subject`);
  return payload;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function readRawBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

// ---------------------------------------------------------------- provider -

const configuration = {
  clients,
  jwks: { keys: [signingJwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: OIDC_SCOPES,
  responseTypes: ['code'],
  claims: {
    openid: ['sub', ...addedClaims],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return accountClaims(id);
      },
    };
  },
  // OpenID Connect Core 5.4: with the code flow, the claims of the profile and email
  // scopes may be returned from the UserInfo endpoint only. oidc-provider does so (an ID
  // token with `sub` only) whenever the access token can be used at UserInfo, i.e. it
  // names no resource: set `default_resource: null` for such an IdP.
  conformIdTokenClaims: true,
  pkce: { required: () => true },
  rotateRefreshToken: Boolean(cfg.rotate_refresh_token ?? false),
  ttl: {
    AccessToken: () => runtime.access_token_ttl,
    AuthorizationCode: 60,
    IdToken: Number(cfg.id_token_ttl ?? 3600),
    DeviceCode: () => runtime.device_code_ttl,
    Grant: 14 * 24 * 3600,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    RefreshToken: Number(cfg.refresh_token_ttl ?? 14 * 24 * 3600),
  },
  async issueRefreshToken(ctx, client, code) {
    if (!client.grantTypeAllowed('refresh_token')) return false;
    const byProfile = profile.issueRefreshToken(ctx, code, client);
    if (byProfile !== undefined) return byProfile;
    if (refreshTokenPolicy === 'always') return true;
    return code.scopes.has('offline_access');
  },
  async expiresWithSession(ctx, code) {
    if (refreshTokenPolicy === 'always') return false;
    if (profile.codeMeta.get(ctx.oidc.params?.code)?.offline) return false;
    return !code.scopes.has('offline_access');
  },
  async extraTokenClaims(ctx, token) {
    if (token.kind === 'AccessToken' && token.accountId) {
      const { email } = accountClaims(token.accountId);
      return { email, ...profile.accessTokenClaims(ctx, token) };
    }
    return undefined;
  },
  // Unknown scopes are an invalid_scope error at the authorization endpoint
  // (after redirect_uri validation, so it is a redirect back to the client).
  extraParams: {
    ...Object.fromEntries(profile.extraParams.map((p) => [p, null])),
    async connauth_scope_check(ctx) {
      const unknown = (ctx.oidc.params.scope || '').split(' ')
        .filter((s) => s && !knownScopes.has(s));
      if (unknown.length) {
        throw new errors.InvalidScope(`unsupported scope requested: ${unknown.join(' ')}`, unknown.join(' '));
      }
      if (ctx.oidc.route === 'authorization') profile.checkAuthorization(ctx);
    },
  },
  ...(profile.routes ? { routes: profile.routes } : {}),
  ...(profile.clientAuthMethods ? { clientAuthMethods: profile.clientAuthMethods } : {}),
  features: {
    devInteractions: { enabled: true },
    // RFC 8628; the default user-code input and confirmation pages (its Abort button
    // denies: the token endpoint then answers access_denied).
    deviceFlow: { enabled: deviceFlow },
    revocation: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
    clientCredentials: { enabled: false },
    resourceIndicators: {
      enabled: true,
      async defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        // the device flow's resource is picked where the user consents, as the code's
        const routes = ['authorization', 'device_authorization', 'code_verification', 'device_resume'];
        if (!routes.includes(ctx.oidc.route)) {
          return undefined;
        }
        return resourceForScopes(ctx.oidc.params.scope);
      },
      async useGrantedResource() {
        return true;
      },
      async getResourceServerInfo(ctx, indicator) {
        const info = resourceInfo(indicator);
        if (!info) throw new errors.InvalidTarget(`unknown resource indicator ${indicator}`);
        return info;
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
    ctx.body = `<!DOCTYPE html><html><head><title>oops! something went wrong</title></head><body>
<h1>oops! something went wrong</h1>
${Object.entries(out).map(([k, v]) => `<pre><strong>${esc(k)}</strong>: ${esc(v)}</pre>`).join('\n')}
</body></html>`;
  },
};

const provider = new Provider(issuer, configuration);
provider.proxy = false;

// Consent narrowing: the scopes in runtime.narrow_scopes are never granted,
// they are recorded as rejected (so the consent prompt does not loop).
{
  const { Grant } = provider;
  const addOIDCScope = Grant.prototype.addOIDCScope;
  const addResourceScope = Grant.prototype.addResourceScope;
  const asString = (scope) => ((scope instanceof Set || Array.isArray(scope)) ? [...scope].join(' ') : scope);
  Grant.prototype.addOIDCScope = function narrowingAddOIDCScope(scope) {
    // rejectOIDCScope() calls this with `this` = the grant's "rejected" record
    if (!(this instanceof Grant)) return addOIDCScope.call(this, scope);
    const { keep, drop } = narrowed(asString(scope));
    if (drop) this.rejectOIDCScope(drop);
    if (keep) addOIDCScope.call(this, keep);
    return undefined;
  };
  Grant.prototype.addResourceScope = function narrowingAddResourceScope(resource, scope) {
    if (!(this instanceof Grant)) return addResourceScope.call(this, resource, scope);
    const { keep, drop } = narrowed(asString(scope));
    if (drop) this.rejectResourceScope(resource, drop);
    if (keep) addResourceScope.call(this, resource, keep);
    return undefined;
  };
}

provider.on('authorization.success', (ctx, out) => { profile.onAuthorizationSuccess(ctx, out); });

provider.on('device_authorization.success', (ctx, body) => {
  stats.device_codes.push(body.device_code);
});

provider.on('server_error', (ctx, err) => {
  console.error(`server_error ${ctx.method} ${ctx.path}:`, err);
});

// Grants by id, so tests can revoke them all ("admin revoked the app").
const grantIds = new Set();
provider.on('grant.saved', (grant) => { grantIds.add(grant.jti); });
provider.on('grant.destroyed', (grant) => { grantIds.delete(grant.jti); });

async function revokeGrants(accountId) {
  let count = 0;
  for (const id of [...grantIds]) {
    const grant = await provider.Grant.find(id);
    if (!grant) { grantIds.delete(id); continue; }
    if (accountId && grant.accountId !== accountId) continue;
    await Promise.all([
      provider.AccessToken.revokeByGrantId(id),
      provider.RefreshToken.revokeByGrantId(id),
      provider.AuthorizationCode.revokeByGrantId(id),
    ]);
    await grant.destroy();
    grantIds.delete(id);
    count += 1;
  }
  return count;
}

// ---------------------------------------------------------------- custom grants

function issueForResource(ctx, { accountId, indicator, requestedScopes, gty }) {
  const info = resourceInfo(indicator);
  if (!info) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
  const available = new Set(info.scope.split(' ').filter(Boolean));
  let scopes = requestedScopes.length
    ? requestedScopes.filter((s) => available.has(s))
    : [...available];
  scopes = scopes.filter((s) => !runtime.narrow_scopes.includes(s));
  if (requestedScopes.length && !scopes.length) {
    throw new errors.InvalidScope('none of the requested scopes is available for this resource');
  }
  const at = new provider.AccessToken({
    accountId,
    client: ctx.oidc.client,
    gty,
    scope: scopes.join(' ') || undefined,
  });
  at.resourceServer = new provider.ResourceServer(indicator, info);
  return at;
}

function indicatorForAudience(value) {
  if (!value) return undefined;
  if (resources[value]) return value;
  for (const [indicator, rs] of Object.entries(resources)) {
    if (rs.audience === value) return indicator;
  }
  return undefined;
}

// RFC 8693 token exchange: subject_token is an access token this provider issued;
// returns an access token for the same account and the requested resource/audience.
async function tokenExchangeHandler(ctx) {
  const {
    subject_token: subjectToken, subject_token_type: subjectTokenType,
    resource, audience, scope, requested_token_type: requestedTokenType,
  } = ctx.oidc.params;
  if (!subjectToken) throw new errors.InvalidRequest('missing required parameter \'subject_token\'');
  if (!subjectTokenType) throw new errors.InvalidRequest('missing required parameter \'subject_token_type\'');
  if (![AT_TYPE, JWT_TYPE].includes(subjectTokenType)) {
    throw new errors.InvalidRequest('unsupported subject_token_type');
  }
  if (requestedTokenType && ![AT_TYPE, JWT_TYPE].includes(requestedTokenType)) {
    throw new errors.InvalidRequest('unsupported requested_token_type');
  }
  profile.checkTokenExchange(ctx.oidc.params);
  if (runtime.reject_subject_tokens) throw new errors.InvalidGrant('the subject token was revoked');
  const subject = verifyOwnJwt(subjectToken, 'subject_token');
  const requestedScopes = (scope || '').split(' ').filter(Boolean);
  let indicator = resource ? (resources[resource] ? resource : undefined) : indicatorForAudience(audience);
  if (!indicator && !resource && !audience) indicator = resourceForScopes(scope);
  if (!indicator) throw new errors.InvalidTarget('unknown resource or audience');
  const at = issueForResource(ctx, {
    accountId: subject.sub, indicator, requestedScopes, gty: 'token_exchange',
  });
  const value = await at.save();
  ctx.body = {
    access_token: value,
    issued_token_type: AT_TYPE,
    token_type: 'Bearer',
    expires_in: at.expiration,
    ...(at.scope ? { scope: at.scope } : {}),
  };
}

// Azure-style on-behalf-of: jwt-bearer grant with requested_token_use=on_behalf_of,
// assertion = an access token this provider issued, scope = "<resource>/.default"
// or "<resource>/<scope>" or plain resource scopes. Adds a refresh token if
// offline_access is requested (as Azure does).
function resolveAzureScopes(scope) {
  const requested = (scope || '').split(' ').filter(Boolean);
  let indicator;
  const wanted = [];
  let all = false;
  for (const s of requested) {
    if (OIDC_SCOPES.includes(s)) continue;
    let match;
    for (const [ind, rs] of Object.entries(resources)) {
      for (const prefix of new Set([ind, rs.audience].map((p) => p.replace(/\/+$/, '')))) {
        if (s === `${prefix}/.default`) { match = ind; all = true; }
        else if (s.startsWith(`${prefix}/`) && rs.scopes.includes(s.slice(prefix.length + 1))) {
          match = ind; wanted.push(s.slice(prefix.length + 1));
        }
      }
      if (!match && rs.scopes.includes(s) && ind !== defaultResource) { match = ind; wanted.push(s); }
      if (match) break;
    }
    if (!match && defaultResource && resources[defaultResource].scopes.includes(s)) {
      match = defaultResource; wanted.push(s);
    }
    if (!match) throw new errors.InvalidScope(`unsupported scope requested: ${s}`, s);
    if (indicator && indicator !== match) {
      throw new errors.InvalidScope('scopes for more than one resource requested');
    }
    indicator = match;
  }
  if (!indicator) throw new errors.InvalidScope('no resource scope requested');
  return { indicator, wanted: all ? [] : wanted, offline: requested.includes('offline_access') };
}

async function onBehalfOfHandler(ctx) {
  const { assertion, requested_token_use: use, scope } = ctx.oidc.params;
  if (use !== 'on_behalf_of') {
    throw new errors.InvalidRequest('only requested_token_use=on_behalf_of is supported');
  }
  if (!assertion) throw new errors.InvalidRequest('missing required parameter \'assertion\'');
  if (runtime.reject_subject_tokens) throw new errors.InvalidGrant('the assertion was revoked');
  const subject = verifyOwnJwt(assertion, 'assertion');
  profile.checkAssertion(ctx, subject);
  const { indicator, wanted, offline } = resolveAzureScopes(scope);
  const at = issueForResource(ctx, {
    accountId: subject.sub, indicator, requestedScopes: wanted, gty: 'on_behalf_of',
  });
  const value = await at.save();
  let refreshToken;
  if (offline) {
    const grant = new provider.Grant({ accountId: subject.sub, clientId: ctx.oidc.client.clientId });
    grant.addOIDCScope('offline_access');
    grant.addResourceScope(indicator, at.scope || '');
    const grantId = await grant.save();
    const rt = new provider.RefreshToken({
      accountId: subject.sub,
      client: ctx.oidc.client,
      grantId,
      gty: 'on_behalf_of',
      resource: indicator,
      rotations: 0,
      scope: ['offline_access', ...(at.scope ? at.scope.split(' ') : [])].join(' '),
      expiresWithSession: false,
    });
    refreshToken = await rt.save();
  }
  ctx.body = {
    token_type: 'Bearer',
    scope: at.scope || '',
    expires_in: at.expiration,
    ext_expires_in: at.expiration,
    access_token: value,
    ...(refreshToken ? { refresh_token: refreshToken } : {}),
  };
}

provider.registerGrantType(
  TOKEN_EXCHANGE,
  tokenExchangeHandler,
  ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type',
    'requested_token_type', 'resource', 'audience', 'scope'],
);
provider.registerGrantType(
  JWT_BEARER,
  onBehalfOfHandler,
  ['assertion', 'requested_token_use', 'scope'],
);

// ---------------------------------------------------------------- test hooks

// Paths as the provider sees them: the mount path (the issuer's path) is stripped by
// the HTTP server below.
const tokenPath = provider.pathFor('token', { mountPath: '' });
const revocationPath = provider.pathFor('revocation', { mountPath: '' });
const introspectionPath = provider.pathFor('introspection', { mountPath: '' });
const authorizationPath = provider.pathFor('authorization', { mountPath: '' });
const deviceAuthorizationPath = deviceFlow
  ? provider.pathFor('device_authorization', { mountPath: '' }) : null;

// RFC 8628 3.5: a client polling sooner than the interval gets slow_down, and its
// interval grows by 5 s for all later requests, as Google's and Entra's device flows
// answer (developers.google.com/identity/protocols/oauth2/limited-input-device
// "slow_down"; learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code).
// Keyed by a hash of the device code; a 250 ms tolerance for timer jitter.
const devicePolls = new Map();
function devicePacing(deviceCode) {
  const key = crypto.createHash('sha256').update(deviceCode).digest('hex');
  const now = Date.now();
  const seen = devicePolls.get(key);
  const interval = seen?.interval ?? Number(runtime.device_interval ?? 5);
  if (seen && now - seen.last < interval * 1000 - 250) {
    devicePolls.set(key, { last: now, interval: interval + 5 });
    stats.device_slow_down += 1;
    return { error: 'slow_down', error_description: 'polling faster than the interval' };
  }
  devicePolls.set(key, { last: now, interval });
  if (devicePolls.size > 1000) devicePolls.delete(devicePolls.keys().next().value);
  return null;
}
const discoveryPath = '/.well-known/openid-configuration';

function countToken(grantType, status, error, params = {}) {
  const gt = grantType || 'unknown';
  stats.token_requests[gt] = (stats.token_requests[gt] ?? 0) + 1;
  if (error) {
    stats.token_errors[gt] = (stats.token_errors[gt] ?? 0) + 1;
  }
  stats.token_log.push({
    grant_type: gt,
    status,
    at: Date.now(),
    error: error ?? null,
    client_id: params.client_id ?? null,
    scope: params.scope ?? null,
    resource: params.resource ?? null,
    has_code_verifier: Boolean(params.code_verifier),
  });
  if (stats.token_log.length > 500) stats.token_log.shift();
  console.log(`token grant_type=${gt} status=${status}${error ? ` error=${error}` : ''}`);
}

function json(ctx, status, body) {
  ctx.status = status;
  ctx.type = 'application/json';
  ctx.body = JSON.stringify(body);
}

async function testRoutes(ctx) {
  const route = ctx.path.slice('/__test__/'.length);
  if (ctx.method === 'GET' && route === 'stats') {
    return json(ctx, 200, stats);
  }
  if (ctx.method === 'GET' && route === 'config') {
    return json(ctx, 200, runtime);
  }
  if (ctx.method !== 'POST') return json(ctx, 405, { error: 'method not allowed' });
  const raw = await readRawBody(ctx.req);
  let body = {};
  if (raw.trim()) {
    try {
      body = JSON.parse(raw);
    } catch {
      return json(ctx, 400, { error: 'body must be JSON' });
    }
  }
  switch (route) {
    case 'reset':
      resetStats();
      return json(ctx, 200, stats);
    case 'config': {
      const unknown = Object.keys(body).filter((k) => !RUNTIME_KEYS.has(k));
      if (unknown.length) return json(ctx, 400, { error: `unknown runtime config keys: ${unknown.join(', ')}` });
      Object.assign(runtime, body);
      runtime.delay_ms = Number(runtime.delay_ms ?? 0);
      runtime.access_token_ttl = Number(runtime.access_token_ttl ?? 300);
      runtime.garbage = Boolean(runtime.garbage);
      runtime.narrow_scopes = [...(runtime.narrow_scopes ?? [])];
      runtime.reject_subject_tokens = Boolean(runtime.reject_subject_tokens);
      runtime.device_code_ttl = Number(runtime.device_code_ttl ?? 600);
      return json(ctx, 200, runtime);
    }
    case 'revoke_grants':
      return json(ctx, 200, { revoked: await revokeGrants(body.account) });
    default:
      return json(ctx, 404, { error: 'no such test hook' });
  }
}

provider.use(async (ctx, next) => {
  if (ctx.path.startsWith('/__test__/')) {
    return testRoutes(ctx);
  }
  if (ctx.path === authorizationPath) {
    stats.authorization_requests += 1;
    const answer = profile.beforeAuthorization(ctx, { resources });
    if (answer) {
      ctx.status = answer.status;
      ctx.type = 'html';
      ctx.body = answer.html;
      return undefined;
    }
  }
  if (ctx.path === discoveryPath) {
    await next();
    if (ctx.status === 200) {
      const meta = typeof ctx.body === 'string' ? JSON.parse(ctx.body) : ctx.body;
      ctx.body = profile.patchDiscovery(meta, ctx.req.connauthPrefix);
    }
    return undefined;
  }
  if (ctx.method === 'POST' && ctx.path === deviceAuthorizationPath) {
    stats.device_authorization_requests += 1;
    await next();
    if (ctx.status === 200 && ctx.body && runtime.device_interval != null) {
      ctx.body = { ...ctx.body, interval: Number(runtime.device_interval) };
    }
    return undefined;
  }
  if (ctx.method === 'POST' && ctx.path === revocationPath) stats.revocation_requests += 1;
  if (ctx.method === 'POST' && ctx.path === introspectionPath) stats.introspection_requests += 1;

  if (!(ctx.method === 'POST' && ctx.path === tokenPath)) {
    return next();
  }

  if (runtime.delay_ms > 0) await sleep(runtime.delay_ms);

  if (runtime.fail_token_endpoint || runtime.garbage || runtime.fail_error) {
    // Fault injection: answer before oidc-provider sees the request.
    const params = Object.fromEntries(new URLSearchParams(await readRawBody(ctx.req)));
    const basic = /^Basic (.+)$/i.exec(ctx.get('authorization'));
    if (basic && !params.client_id) {
      params.client_id = decodeURIComponent(Buffer.from(basic[1], 'base64').toString().split(':')[0]);
    }
    const failStatus = runtime.fail_token_endpoint;
    const failError = runtime.fail_error;
    if (runtime.fail_times != null) {
      runtime.fail_times -= 1;
      if (runtime.fail_times <= 0) {
        Object.assign(runtime, {
          fail_token_endpoint: null, garbage: false, fail_times: null, fail_error: null,
        });
      }
    }
    if (failError) {
      // An OAuth error answer (RFC 6749 5.2), e.g. temporarily_unavailable or slow_down.
      ctx.set('Retry-After', '2');
      json(ctx, Number(failStatus ?? 400), {
        error: failError, error_description: 'Injected fault: try again later.',
      });
      countToken(params.grant_type, ctx.status, failError, params);
    } else if (failStatus) {
      ctx.status = Number(failStatus);
      ctx.type = 'html';
      if (ctx.status === 429 || ctx.status === 503) ctx.set('Retry-After', '1');
      ctx.body = `<!DOCTYPE html><html><head><title>${ctx.status} Service Unavailable</title></head>`
        + '<body><h1>The service is temporarily unavailable</h1><p>Injected fault.</p></body></html>';
      countToken(params.grant_type, ctx.status, `http_${ctx.status}`, params);
    } else {
      ctx.status = 200;
      ctx.type = 'text/html';
      ctx.body = '<html><body>this is not JSON {"access_token": </body></html>';
      countToken(params.grant_type, 200, 'garbage', params);
    }
    return undefined;
  }

  let body;  // the token request's parameters, where read before oidc-provider
  if (deviceFlow) {
    body = Object.fromEntries(new URLSearchParams(await readRawBody(ctx.req)));
    const slow = body.grant_type === DEVICE_GRANT && body.device_code
      ? devicePacing(body.device_code) : null;
    if (slow) {
      json(ctx, 400, slow);
      countToken(body.grant_type, 400, slow.error, body);
      return undefined;
    }
    ctx.request.body = new URLSearchParams(body).toString();
  }

  if (profile.name !== 'generic') {
    // Profiles look at (and may answer or rewrite) the token request before
    // oidc-provider does; it then reads the body from ctx.request.body.
    const params = body ?? Object.fromEntries(new URLSearchParams(await readRawBody(ctx.req)));
    const hasBasic = /^Basic /i.test(ctx.get('authorization'));
    const answer = await profile.beforeToken(ctx, params, {
      provider, verifyOwnJwt, hasBasic, resources,
    });
    if (answer) {
      json(ctx, answer.status, answer.body);
      countToken(params.grant_type, ctx.status, answer.body.error, params);
      return undefined;
    }
    ctx.request.body = new URLSearchParams(params).toString();
  }

  try {
    await next();
    profile.patchTokenResponse(ctx.body);
  } finally {
    const params = ctx.oidc?.params ?? {};
    let error = null;
    if (ctx.status >= 400) {
      try {
        error = (typeof ctx.body === 'object' && ctx.body?.error) || `http_${ctx.status}`;
      } catch {
        error = `http_${ctx.status}`;
      }
    }
    countToken(params.grant_type, ctx.status, error, {
      ...params, client_id: ctx.oidc?.client?.clientId ?? params.client_id,
    });
  }
  return undefined;
});

// ---------------------------------------------------------------- listen ---

// The provider lives under the issuer's path (Entra's /{tenant}/v2.0, Keycloak's
// /realms/{realm}, Okta's /oauth2/default); aliases (Entra's /common/v2.0) too.
const callback = provider.callback();
const prefixes = [profile.mountPath, ...profile.aliasPaths].filter(Boolean);
const server = http.createServer((req, res) => {
  const prefix = prefixes.find((p) => req.url === p || req.url.startsWith(`${p}/`) || req.url.startsWith(`${p}?`));
  if (prefix) {
    req.originalUrl = req.url;
    req.url = req.url.slice(prefix.length) || '/';
    req.connauthPrefix = prefix;
  }
  callback(req, res);
});
server.listen(port, host, () => {
  const { port: actual } = server.address();
  if (port === 0 && !cfg.issuer) {
    console.error(`note: issuer ${issuer} does not contain the real port ${actual}; pass a port`);
  }
  console.log(`READY ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
