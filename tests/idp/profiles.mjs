// Vendor profiles for the test OpenID provider (provider.mjs): `IDP_CONFIG.profile`
// = "entra" | "google" | "okta" | "keycloak" makes the provider behave like that
// vendor where the vendor's documentation says it differs from the generic provider.
// Every rule below names the document it follows; README.md lists them in one table.
// The default ("generic") profile changes nothing.

import * as crypto from 'node:crypto';

export const PROFILES = ['generic', 'entra', 'google', 'okta', 'keycloak'];

// Microsoft Graph, the resource of an Entra token for `openid email offline_access`.
const GRAPH = 'https://graph.microsoft.com';
const GRAPH_APP_ID = '00000003-0000-0000-c000-000000000000';
const DEFAULT_TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function traceSuffix() {
  // Entra appends these to every error_description
  // (learn.microsoft.com/entra/identity-platform/reference-error-codes#handling-error-codes-in-your-application).
  return `\r\nTrace ID: ${crypto.randomUUID()}\r\nCorrelation ID: ${crypto.randomUUID()}`
    + `\r\nTimestamp: ${new Date().toISOString().replace('T', ' ').slice(0, 19)}Z`;
}

/**
 * Builds the profile for `cfg`. The returned object is read by provider.mjs:
 * - mountPath: path part of the issuer (requests under it are routed to the provider)
 * - aliasPaths: more path prefixes routed to the provider (Entra's common/organizations)
 * - routes: oidc-provider `routes` (endpoint paths as the vendor names them)
 * - knownScopesExclude, refreshTokenPolicy, clientAuthMethods, defaultResource(...)
 * - hooks called by provider.mjs (see there): beforeAuthorization, checkAuthorization,
 *   beforeToken, issueRefreshToken, accessTokenClaims, idTokenClaims, checkAssertion,
 *   checkTokenExchange, patchDiscovery, patchTokenResponse
 */
export function makeProfile(cfg, { errors, runtime }) {
  const name = cfg.profile ?? 'generic';
  if (!PROFILES.includes(name)) {
    throw new Error(`profile must be one of ${PROFILES.join(', ')}, got ${JSON.stringify(name)}`);
  }
  // authorization code value -> what the authorization request asked for (access_type,
  // prompt, a claims request, offline_access), read when the code is exchanged.
  const codeMeta = new Map();
  const remember = (code, meta) => {
    codeMeta.set(code, meta);
    if (codeMeta.size > 1000) codeMeta.delete(codeMeta.keys().next().value);
  };

  const base = {
    name,
    mountPath: '',
    aliasPaths: [],
    routes: undefined,
    knownScopesExclude: [],
    refreshTokenPolicy: undefined,
    clientAuthMethods: undefined,
    defaultResource: undefined,
    extraResources: {},
    extraParams: [],
    codeMeta,
    remember,
    beforeAuthorization() { return undefined; },
    checkAuthorization() {},
    async beforeToken() { return undefined; },
    issueRefreshToken() { return undefined; },
    accessTokenClaims() { return {}; },
    idTokenClaims() { return {}; },
    checkAssertion() {},
    checkTokenExchange() {},
    patchDiscovery(meta) { return meta; },
    patchTokenResponse() {},
    onAuthorizationSuccess() {},
  };
  if (name === 'generic') return base;
  if (name === 'entra') return entra(cfg, base, { errors, runtime });
  if (name === 'google') return google(cfg, base, { errors });
  if (name === 'okta') return okta(cfg, base, { errors });
  return keycloak(cfg, base, { errors });
}

// offline_access without prompt=consent: oidc-provider (OIDC Core 11) drops the scope
// unless prompt=consent; Entra and Okta issue the refresh token anyway. The request is
// marked with connauth_offline=1 before oidc-provider sees it.
function markOffline(ctx) {
  const q = new URLSearchParams(ctx.querystring);
  const scopes = (q.get('scope') || '').split(' ');
  const prompts = (q.get('prompt') || '').split(' ');
  if (scopes.includes('offline_access') && !prompts.includes('consent')) {
    q.set('connauth_offline', '1');
    ctx.querystring = q.toString();
  }
}

// ------------------------------------------------------------------ Entra ID

function entra(cfg, base, { errors, runtime }) {
  const tenant = cfg.tenant_id ?? DEFAULT_TENANT;
  const clientIds = (cfg.clients ?? []).map((c) => c.client_id);
  // The app's own API (Expose an API → Application ID URI api://<client_id>), one scope
  // access_as_user: learn.microsoft.com/entra/identity-platform/quickstart-configure-app-expose-web-apis
  const extraResources = {};
  for (const id of clientIds) {
    extraResources[`api://${id}`] = { audience: `api://${id}`, scopes: [`api://${id}/access_as_user`] };
  }
  // "restricted": the tenant lets users consent to nothing (the admin consented for the
  // organization): learn.microsoft.com/entra/identity/enterprise-apps/configure-user-consent
  const userConsent = cfg.user_consent ?? 'restricted';
  Object.assign(runtime, {
    conditional_access: cfg.conditional_access ?? null,
    user_consent: userConsent,
  });
  const satisfiedGrants = new Set();
  const findResource = (resources, prefix) => Object.entries(resources).find(
    ([ind, rs]) => [ind, rs.audience].some((p) => p.replace(/\/+$/, '') === prefix),
  );

  // <resource>/.default means "every permission configured for the app on that
  // resource", and Entra answers with those concrete scopes in `scope`:
  // learn.microsoft.com/entra/identity-platform/scopes-oidc#the-default-scope
  function expandDefault(scopeString, resources) {
    const out = [];
    for (const s of (scopeString || '').split(' ').filter(Boolean)) {
      if (s.endsWith('/.default')) {
        const hit = findResource(resources, s.slice(0, -'/.default'.length));
        if (hit) { out.push(...hit[1].scopes); continue; }
      }
      out.push(s);
    }
    return [...new Set(out)].join(' ');
  }

  function caChallenge(resource) {
    const ca = runtime.conditional_access;
    const claims = JSON.stringify({ access_token: { acrs: { essential: true, value: ca.acrs ?? 'c1' } } });
    // Conditional Access on a silent request: interaction_required with a claims
    // challenge the client passes to the next authorization request (claims=...):
    // learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow#error-response-example
    // learn.microsoft.com/entra/identity-platform/claims-challenge
    return {
      error: 'interaction_required',
      error_description: 'AADSTS50076: Due to a configuration change made by your administrator, or '
        + 'because you moved to a new location, you must use multi-factor authentication to access '
        + `'${resource}'.${traceSuffix()}`,
      error_codes: [50076],
      suberror: 'basic_action',
      claims,
    };
  }
  const caApplies = (account) => {
    const ca = runtime.conditional_access;
    return Boolean(ca && (ca.accounts ?? []).includes(account));
  };
  const satisfies = (claimsParam) => {
    const ca = runtime.conditional_access;
    if (!ca || !claimsParam) return false;
    try {
      const acrs = JSON.parse(claimsParam)?.access_token?.acrs;
      return acrs?.value === (ca.acrs ?? 'c1') || (acrs?.values ?? []).includes(ca.acrs ?? 'c1');
    } catch { return false; }
  };

  return {
    ...base,
    // Tenant issuer https://login.microsoftonline.com/{tenantid}/v2.0:
    // learn.microsoft.com/entra/identity-platform/v2-protocols-oidc#find-your-apps-openid-configuration-document-uri
    mountPath: `/${tenant}/v2.0`,
    aliasPaths: ['/common/v2.0', '/organizations/v2.0'],
    routes: {
      authorization: '/oauth2/authorize',
      token: '/oauth2/token',
      jwks: '/discovery/keys',
      userinfo: '/oidc/userinfo',
      revocation: '/oauth2/revoke',
      introspection: '/oauth2/introspect',
      end_session: '/oauth2/logout',
    },
    defaultResource: { indicator: GRAPH, audience: GRAPH_APP_ID },
    extraResources,
    extraParams: ['connauth_offline', 'connauth_claims'],
    beforeAuthorization(ctx, { resources }) {
      markOffline(ctx);
      const q = new URLSearchParams(ctx.querystring);
      if (q.has('scope')) q.set('scope', expandDefault(q.get('scope'), resources));
      // oidc-provider's own `claims` parameter takes id_token/userinfo only; Entra's
      // claims request is {"access_token": {...}}: carried as connauth_claims.
      if (q.has('claims')) { q.set('connauth_claims', q.get('claims')); q.delete('claims'); }
      ctx.querystring = q.toString();
    },
    checkAuthorization(ctx) {
      const prompts = ctx.oidc.prompts ?? new Set();
      if (runtime.user_consent === 'restricted' && prompts.has('consent')) {
        // prompt=consent asks the user to consent again; a user who may not consent
        // gets "Need admin approval", AADSTS90094, even after an admin consented:
        // learn.microsoft.com/entra/identity/enterprise-apps/application-sign-in-unexpected-user-consent-error
        // learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#request-an-authorization-code (prompt)
        throw new errors.AccessDenied(
          'AADSTS90094: connauth-test-app needs permission to access resources in your '
          + 'organization that only an admin can grant. Ask an admin to grant permission to '
          + 'this app before you can use it.',
        );
      }
    },
    onAuthorizationSuccess(ctx, out) {
      if (!out?.code) return;
      const p = ctx.oidc.params;
      base.remember(out.code, { offline: p.connauth_offline === '1', claims: p.connauth_claims });
    },
    async beforeToken(ctx, params, { provider, verifyOwnJwt, resources }) {
      const { grant_type: gt } = params;
      // refresh and OBO take .default too; OBO resolves it itself (resolveAzureScopes)
      if (params.scope && gt === 'refresh_token') params.scope = expandDefault(params.scope, resources);
      if (!runtime.conditional_access) return undefined;
      if (gt === 'refresh_token' && params.refresh_token) {
        const rt = await provider.RefreshToken.find(params.refresh_token);
        if (rt && caApplies(rt.accountId) && !satisfiedGrants.has(rt.grantId)) {
          return { status: 400, body: caChallenge(rt.resource || GRAPH) };
        }
      }
      if (gt === 'urn:ietf:params:oauth:grant-type:jwt-bearer' && params.assertion) {
        let payload;
        try { payload = verifyOwnJwt(params.assertion, 'assertion'); } catch { return undefined; }
        const acr = runtime.conditional_access.acrs ?? 'c1';
        if (caApplies(payload.sub) && !(payload.acrs ?? []).includes(acr)) {
          return { status: 400, body: caChallenge(params.scope || GRAPH) };
        }
      }
      return undefined;
    },
    issueRefreshToken(ctx, code) {
      // offline_access alone yields a refresh token, no prompt needed:
      // learn.microsoft.com/entra/identity-platform/scopes-oidc#offline_access
      const meta = base.codeMeta.get(ctx.oidc.params.code);
      return meta?.offline ? true : undefined;
    },
    accessTokenClaims(ctx, token) {
      // tid (and oid) in every token: learn.microsoft.com/entra/identity-platform/access-token-claims-reference
      const claims = { tid: tenant };
      const meta = ctx.oidc.params?.code ? base.codeMeta.get(ctx.oidc.params.code) : undefined;
      if (meta && satisfies(meta.claims) && token.grantId) satisfiedGrants.add(token.grantId);
      if (token.grantId && satisfiedGrants.has(token.grantId)) {
        claims.acrs = [runtime.conditional_access?.acrs ?? 'c1'];
      }
      return claims;
    },
    idTokenClaims() {
      return { tid: tenant };
    },
    checkAssertion(ctx, payload) {
      // OBO: the assertion must be a token for this app (aud = its client id or
      // Application ID URI), not e.g. a Graph token:
      // learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow
      // login.microsoftonline.com/error?code=500131
      const id = ctx.oidc.client.clientId;
      const auds = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
      if (!auds.some((a) => a === id || a === `api://${id}`)) {
        const err = new errors.InvalidGrant();
        err.error_description = (
          `AADSTS500131: Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '${auds.join(' ')}' and the expected audience is '${id}' or one of the Application Uris of this application with App ID '${id}'(connauth-test-app). The downstream client must request a token for the expected audience (the application that made the OBO request) and this application should use that token as the assertion.${traceSuffix()}`
        );
        throw err;
      }
    },
    patchDiscovery(meta, prefix) {
      // common / organizations: one document for every tenant, issuer with the
      // {tenantid} template the client replaces with the token's tid:
      // learn.microsoft.com/entra/identity-platform/v2-protocols-oidc#find-your-apps-openid-configuration-document-uri
      if (prefix === '/common/v2.0' || prefix === '/organizations/v2.0') {
        return { ...meta, issuer: meta.issuer.replace(tenant, '{tenantid}') };
      }
      return meta;
    },
  };
}

// ------------------------------------------------------------------ Google

function google(cfg, base) {
  const issuedTo = new Set(); // account|client that already got a refresh token
  return {
    ...base,
    // developers.google.com/identity/openid-connect/openid-connect#discovery
    routes: {
      authorization: '/o/oauth2/v2/auth',
      token: '/token',
      jwks: '/oauth2/v3/certs',
      userinfo: '/v1/userinfo',
      revocation: '/revoke',
    },
    knownScopesExclude: ['offline_access'],
    extraParams: ['access_type', 'include_granted_scopes'],
    beforeAuthorization(ctx) {
      const q = new URLSearchParams(ctx.querystring);
      const scopes = (q.get('scope') || '').split(' ').filter(Boolean);
      if (scopes.includes('offline_access')) {
        // Google has no offline_access scope (refresh tokens come with
        // access_type=offline): "Error 400: invalid_scope", shown by Google, no redirect.
        // developers.google.com/identity/protocols/oauth2/web-server#creatingclient (access_type)
        // developers.google.com/identity/openid-connect/openid-connect#scope-param
        const valid = scopes.filter((s) => s !== 'offline_access');
        return {
          status: 400,
          html: '<!DOCTYPE html><html><head><title>Error 400 (invalid_scope)</title></head><body>'
            + '<h1>Access blocked: Authorization Error</h1><p>Error 400: invalid_scope</p>'
            + `<p>Some requested scopes were invalid. {valid=[${esc(valid.join(', '))}], `
            + 'invalid=[offline_access]}</p></body></html>',
        };
      }
      const accessType = q.get('access_type');
      if (accessType && !['online', 'offline'].includes(accessType)) {
        return {
          status: 400,
          html: '<!DOCTYPE html><html><body><p>Error 400: invalid_request</p>'
            + `<p>Invalid access_type: ${esc(accessType)}</p></body></html>`,
        };
      }
      return undefined;
    },
    onAuthorizationSuccess(ctx, out) {
      if (!out?.code) return;
      const p = ctx.oidc.params;
      base.remember(out.code, {
        offline: p.access_type === 'offline',
        consent: (p.prompt || '').split(' ').includes('consent'),
      });
    },
    issueRefreshToken(ctx, code, client) {
      // A refresh token only with access_type=offline, and only the first time the user
      // authorizes the app; later ones (e.g. after a scope change) get a new one only
      // with prompt=consent.
      // developers.google.com/identity/protocols/oauth2/web-server#offline
      // developers.google.com/identity/protocols/oauth2#expiration
      const meta = base.codeMeta.get(ctx.oidc.params.code);
      if (!meta?.offline) return false;
      const key = `${code.accountId}|${client.clientId}`;
      if (issuedTo.has(key) && !meta.consent) return false;
      issuedTo.add(key);
      return true;
    },
  };
}

// ------------------------------------------------------------------ Okta

function okta(cfg, base, { errors }) {
  return {
    ...base,
    // Custom authorization server "default": issuer https://{yourOktaDomain}/oauth2/default,
    // endpoints /v1/...: developer.okta.com/docs/concepts/auth-servers/
    mountPath: '/oauth2/default',
    routes: {
      authorization: '/v1/authorize',
      token: '/v1/token',
      jwks: '/v1/keys',
      userinfo: '/v1/userinfo',
      revocation: '/v1/revoke',
      introspection: '/v1/introspect',
      end_session: '/v1/logout',
    },
    // App integrations authenticate with client_secret_basic unless set otherwise:
    // developer.okta.com/docs/api/openapi/okta-oauth/guides/client-auth/
    clientAuthMethods: ['client_secret_basic', 'none'],
    extraParams: ['connauth_offline'],
    beforeAuthorization(ctx) { markOffline(ctx); },
    onAuthorizationSuccess(ctx, out) {
      if (out?.code) base.remember(out.code, { offline: ctx.oidc.params.connauth_offline === '1' });
    },
    issueRefreshToken(ctx) {
      // offline_access (with the refresh token grant enabled) yields a refresh token:
      // developer.okta.com/docs/guides/refresh-tokens/main/#get-a-refresh-token-with-the-code-flow
      return base.codeMeta.get(ctx.oidc.params.code)?.offline ? true : undefined;
    },
    async beforeToken(ctx, params, { hasBasic }) {
      if (params.client_secret && !hasBasic) {
        // client_secret_post to a client_secret_basic app: invalid_client
        // (developer.okta.com/docs/api/openapi/okta-oauth/guides/client-auth/).
        return {
          status: 401,
          body: {
            error: 'invalid_client',
            error_description: 'Client authentication failed. Either the client or the client '
              + 'credentials are invalid.',
          },
        };
      }
      return undefined;
    },
    checkTokenExchange(params) {
      // Token exchange names the target authorization server by `audience` (required):
      // developer.okta.com/docs/guides/set-up-token-exchange/main/#request-an-access-token-from-the-authorization-server
      if (!params.audience) {
        throw new errors.InvalidRequest("The 'audience' parameter is required for token exchange.");
      }
    },
  };
}

// ------------------------------------------------------------------ Keycloak

function keycloak(cfg, base, { errors }) {
  const realm = cfg.realm ?? 'connauth';
  return {
    ...base,
    // Realm issuer {base}/realms/{realm}, endpoints under /protocol/openid-connect:
    // keycloak.org/docs/latest/server_admin/#_oidc (Endpoints)
    mountPath: `/realms/${realm}`,
    routes: {
      authorization: '/protocol/openid-connect/auth',
      token: '/protocol/openid-connect/token',
      jwks: '/protocol/openid-connect/certs',
      userinfo: '/protocol/openid-connect/userinfo',
      revocation: '/protocol/openid-connect/revoke',
      introspection: '/protocol/openid-connect/token/introspect',
      end_session: '/protocol/openid-connect/logout',
    },
    // Keycloak returns a refresh token on every code exchange (offline_access makes it
    // an offline token): keycloak.org/docs/latest/server_admin/#_offline-access
    refreshTokenPolicy: 'always',
    checkAuthorization(ctx) {
      // Client setting "Proof Key for Code Exchange Code Challenge Method" = S256:
      // keycloak.org/docs/latest/server_admin/#_oidc_clients (Advanced settings)
      if (ctx.oidc.params.code_challenge_method !== 'S256') {
        throw new errors.InvalidRequest('Missing parameter: code_challenge_method');
      }
    },
    patchTokenResponse(body) {
      // keycloak.org/docs/latest/securing_apps/#_token-exchange (response fields)
      if (body && typeof body === 'object' && body.access_token) {
        body['not-before-policy'] = 0;
        if (body.refresh_token) body.refresh_expires_in = Number(cfg.refresh_token_ttl ?? 1800);
      }
    },
  };
}
