import assert from 'node:assert/strict';
import { test } from 'node:test';

import { defaultScopes, parseScopes, providerRules, sameScopes } from '../src/fields';
import { fieldError, formatTime, statusLine } from '../src/format';
import { qualifiedName, queryCell } from '../src/sql';
import { ApiError } from '../src/types';

test('status lines', () => {
  const now = new Date(2025, 0, 15, 9, 0);
  const at = new Date(2025, 0, 15, 14, 5).getTime() / 1000;
  assert.equal(formatTime(at, now), '14:05');
  assert.equal(
    statusLine({ name: 'x', status: 'authorized', authorized_as: 'a@b.c', expires_at: at }, now).text,
    'Authorized as a@b.c until 14:05'
  );
  assert.deepEqual(
    statusLine({ name: 'x', status: 'consent_required', reason_text: 'the admin changed the scopes' }),
    { tone: 'warn', text: 'Consent needed: the admin changed the scopes' }
  );
  assert.deepEqual(statusLine({ name: 'x', status: 'error', message: 'bad', fix: 'do y' }), {
    tone: 'error',
    text: 'bad',
    fix: 'do y'
  });
});

test("config_error messages name the field: c.ConnAuth.connections['x'].FIELD", () => {
  const e = new ApiError(
    'config_error',
    "c.ConnAuth.connections['sf'].jwt_audience: OAuth (JWT) needs the JWT Audience",
    'set it',
    400
  );
  assert.deepEqual(fieldError(e), {
    field: 'jwt_audience',
    message: 'OAuth (JWT) needs the JWT Audience'
  });
  assert.deepEqual(
    fieldError(new ApiError('config_error', "c.ConnAuth.connections['bad name']: a connection name must be")),
    { field: 'name', message: 'a connection name must be' }
  );
  assert.equal(fieldError(new ApiError('access_denied', 'nope')), null);
});

test('scope templates follow core/flavours.py', () => {
  assert.deepEqual(defaultScopes('bigquery', 'oidc'), ['https://www.googleapis.com/auth/bigquery']);
  assert.deepEqual(defaultScopes('databricks', 'azure'), [
    '2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/user_impersonation',
    'offline_access'
  ]);
  assert.deepEqual(defaultScopes('databricks', 'azure', 'on-behalf-of'), [
    '2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default'
  ]);
  assert.deepEqual(defaultScopes('bigquery', 'azure', 'token-exchange'), [
    'https://bigquery.googleapis.com/.default'
  ]);
  assert.equal(defaultScopes('snowflake', 'azure'), null);
  assert.deepEqual(defaultScopes('snowflake', 'azure', 'oauth-jwt'), ['openid', 'email', 'offline_access']);
  assert.deepEqual(defaultScopes('snowflake', 'oidc', 'oauth', { 'snowflake/oauth': ['x'] }), ['x']);
  assert.deepEqual(parseScopes(' a  b,c\n'), ['a', 'b', 'c']);
  assert.ok(sameScopes(['a', 'b'], ['b', 'a']));
  assert.ok(!sameScopes(['a'], ['a', 'b']));
});

test('qualified names per dialect', () => {
  assert.equal(qualifiedName('databricks', ['main', 'sales', 'orders']), 'main.sales.orders');
  assert.equal(qualifiedName('databricks', ['main', 'my-schema', 'o`x']), 'main.`my-schema`.`o``x`');
  assert.equal(qualifiedName('bigquery', ['acme-analytics', 'sales', 'orders']), '`acme-analytics.sales.orders`');
  assert.equal(qualifiedName('snowflake', ['SALES', 'PUBLIC', 'orders']), 'SALES.PUBLIC."orders"');
  assert.equal(
    queryCell('sales', 'databricks', ['main', 'sales', 'orders']),
    '%%sql_connector sales\nSELECT * FROM main.sales.orders LIMIT 100'
  );
});

test("a scope change of a connection the user may edit is not blamed on an admin", () => {
  const changed = {
    name: 'x',
    status: 'consent_required' as const,
    reason: 'scopes_changed',
    reason_text: "the admin changed the connection's scopes"
  };
  assert.equal(statusLine(changed).text, "Consent needed: the admin changed the connection's scopes");
  assert.equal(
    statusLine({ ...changed, editable: true }).text,
    "Consent needed: the connection's scopes or auth were changed in its settings"
  );
});

test('the templates of the identity provider a connection names', () => {
  const google = { 'bigquery/oauth': ['https://www.googleapis.com/auth/bigquery'] };
  const entra = { 'bigquery/oauth': ['https://bigquery.googleapis.com/.default', 'offline_access'] };
  const info = {
    flavour: 'azure' as const,
    scope_templates: entra,
    providers: [{ name: 'google', flavour: 'google' as const, scope_templates: google }]
  };
  assert.deepEqual(providerRules(info, ''), { flavour: 'azure', templates: entra });
  assert.deepEqual(providerRules(info, 'google'), { flavour: 'google', templates: google });
  // a name the server no longer knows: the top-level provider's rules, not a crash
  assert.deepEqual(providerRules(info, 'gone'), { flavour: 'azure', templates: entra });
  assert.deepEqual(providerRules(undefined, ''), { flavour: 'oidc', templates: undefined });
  assert.deepEqual(defaultScopes('bigquery', 'google', 'oauth', providerRules(info, 'google').templates), [
    'https://www.googleapis.com/auth/bigquery'
  ]);
});
