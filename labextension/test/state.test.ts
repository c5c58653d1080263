import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ConnectionsModel } from '../src/state';
import { ApiError } from '../src/types';
import { complete, FakeTimers, fakeApi } from './fakes';

test('refresh failure keeps the message and fix (never a blank panel)', async () => {
  const api = fakeApi();
  api.failConnections = new ApiError('http_error', 'The broker answered HTTP 404', 'enable it', 404);
  const model = new ConnectionsModel(api);
  await model.refresh();
  assert.equal(model.error?.fix, 'enable it');
  assert.equal(model.loaded, false);
  api.failConnections = null;
  await model.refresh();
  assert.equal(model.error, null);
  assert.equal(model.connections.length, 1);
});

test('concurrent refreshes share one request', async () => {
  const api = fakeApi();
  const model = new ConnectionsModel(api);
  await Promise.all([model.refresh(), model.refresh(), model.refresh()]);
  assert.equal(api.calls.filter(c => c === 'connections').length, 1);
});

test('authorize: the flow is polled until complete, then statuses refresh', async () => {
  const api = fakeApi();
  const timers = new FakeTimers();
  const model = new ConnectionsModel(api, { timers, pollMs: 1000 });
  await model.refresh();
  const url = await model.authorize('sales');
  assert.equal(url, 'https://idp/auth?flow=flow1');
  assert.ok(model.watching('sales'));
  await timers.advance(1000);
  assert.ok(model.watching('sales'), 'still pending');
  complete(api, 'flow1');
  let finished = 0;
  model.flowFinished.connect(() => finished++);
  await timers.advance(1000);
  assert.equal(model.watching('sales'), false);
  assert.equal(finished, 1);
  assert.equal(model.get('sales')?.status, 'authorized');
  assert.equal(model.notes.get('sales')?.text, 'Authorized as alice@example.com');
  assert.equal(timers.queue.length, 0, 'no more polling');
});

test('switch account: the flow is started with switch_account, and watched', async () => {
  const api = fakeApi();
  const model = new ConnectionsModel(api, { timers: new FakeTimers(), pollMs: 1000 });
  await model.refresh();
  await model.authorize('sales');
  const url = await model.authorize('sales', true);
  assert.deepEqual(
    api.calls.filter(c => c.startsWith('authorize')),
    ['authorize:sales', 'authorize:sales:switch_account']
  );
  assert.equal(url, 'https://idp/auth?flow=flow2');
  assert.ok(model.watching('sales'));
});

test("the popup's postMessage finishes the flow at once and the tree expands by itself", async () => {
  const api = fakeApi();
  const timers = new FakeTimers();
  const model = new ConnectionsModel(api, { timers, pollMs: 5000 });
  await model.refresh();
  const tree = model.tree('sales');
  await tree.expand(tree.root);
  assert.equal(tree.root.state, 'consent');
  assert.ok(model.watching('sales'), 'the browse consent flow is watched');
  complete(api, 'flow1');
  const handled = await model.handleMessage({
    type: 'connauth:flow',
    status: 'complete',
    flow_id: 'flow1',
    connection: 'sales'
  });
  assert.ok(handled);
  assert.equal(model.watching('sales'), false);
  assert.equal(tree.root.state, 'loaded');
  assert.deepEqual(
    tree.rows().map(r => (r.kind === 'node' ? r.node.name : r.kind)),
    ['main']
  );
  assert.equal(timers.queue.length, 0);
  assert.equal(await model.handleMessage({ type: 'other' }), false);
});

test('a failed flow leaves a note with the fix', async () => {
  const api = fakeApi();
  const timers = new FakeTimers();
  const model = new ConnectionsModel(api, { timers, pollMs: 1000 });
  await model.refresh();
  await model.authorize('sales');
  Object.assign(api.flows.get('flow1')!, {
    status: 'failed',
    message: 'The IdP refused: invalid_scope',
    fix: 'align the Scopes field with the IdP policy'
  });
  await timers.advance(1000);
  const note = model.notes.get('sales');
  assert.equal(note?.tone, 'error');
  assert.equal(note?.fix, 'align the Scopes field with the IdP policy');
});

test('a newer flow for the same connection supersedes the older one', async () => {
  const api = fakeApi();
  const timers = new FakeTimers();
  const model = new ConnectionsModel(api, { timers, pollMs: 1000 });
  await model.refresh();
  await model.authorize('sales');
  await model.authorize('sales');
  assert.deepEqual([...model.flows.keys()], ['flow2']);
  assert.equal(timers.queue.length, 1);
});

test('an unknown or expired flow stops polling; the watch times out', async () => {
  const api = fakeApi();
  const timers = new FakeTimers();
  const model = new ConnectionsModel(api, { timers, pollMs: 1000, flowTimeoutMs: 3000 });
  model.watchFlow('nope', 'sales');
  await timers.advance(1000);
  assert.equal(model.watching('sales'), false);
  await model.authorize('sales');
  await timers.advance(5000);
  assert.equal(model.watching('sales'), false);
  assert.equal(timers.queue.length, 0);
});

test('test: ok gives a note; consent_required watches the flow', async () => {
  const api = fakeApi();
  const timers = new FakeTimers();
  const model = new ConnectionsModel(api, { timers });
  await model.refresh();
  const first = await model.test('sales');
  assert.equal(first?.status, 'consent_required');
  assert.ok(model.watching('sales'));
  complete(api, 'flow1');
  await timers.advance(1500);
  const second = await model.test('sales');
  assert.equal(second?.status, 'ok');
  assert.match(model.notes.get('sales')!.text, /Test OK in 0.25 s as alice@example.com/);
});

test('errors of actions become notes with the fix and clear the busy flag', async () => {
  const api = fakeApi();
  api.revoke = async () => {
    throw new ApiError('idp_error', 'The IdP is down', 'try again later', 502);
  };
  const model = new ConnectionsModel(api);
  await model.refresh();
  await model.revoke('sales');
  assert.equal(model.busy.size, 0);
  const { tone, text, fix } = model.notes.get('sales')!;
  assert.deepEqual({ tone, text, fix }, {
    tone: 'error',
    text: 'The IdP is down',
    fix: 'try again later'
  });
});

test("a note goes once its connection changes: an edit, another identity, a revoke elsewhere", async () => {
  const api = fakeApi();
  api.test = async () => {
    throw new ApiError('unreachable', 'Cannot reach the warehouse at h:443', 'check server_hostname', 502);
  };
  api.statuses[0] = { ...api.statuses[0], params: { server_hostname: 'h:443' } };
  const model = new ConnectionsModel(api);
  await model.refresh();
  await model.test('sales');
  assert.match(model.notes.get('sales')!.text, /Cannot reach/);
  await model.refresh(); // nothing changed: the note stays
  assert.ok(model.notes.get('sales'));
  api.statuses[0] = { ...api.statuses[0], params: { server_hostname: 'fixed:443' } }; // the edit
  await model.refresh();
  assert.equal(model.notes.get('sales'), undefined);
});

test('"Test OK as alice" goes when the status names bob; the token\'s expiry alone keeps it', async () => {
  const api = fakeApi();
  const timers = new FakeTimers();
  const model = new ConnectionsModel(api, { timers });
  await model.refresh();
  await model.test('sales');
  complete(api, 'flow1');
  await timers.advance(1500);
  assert.match(model.notes.get('sales')!.text, /Authorized as alice/); // kept by its refresh
  await model.test('sales');
  assert.match(model.notes.get('sales')!.text, /Test OK .* as alice@example.com/);
  api.statuses[0] = { ...api.statuses[0], expires_at: 2_000_000_000 };
  await model.refresh();
  assert.ok(model.notes.get('sales'));
  api.statuses[0] = { ...api.statuses[0], authorized_as: 'bob@example.com' };
  await model.refresh();
  assert.equal(model.notes.get('sales'), undefined);
});

test('statuses are polled while active, so a change elsewhere shows by itself', async () => {
  const api = fakeApi();
  const timers = new FakeTimers();
  const model = new ConnectionsModel(api, { timers });
  let active = false;
  await model.refresh();
  model.pollStatuses(5000, () => active);
  const before = api.calls.filter(c => c === 'connections').length;
  await timers.advance(5000);
  assert.equal(api.calls.filter(c => c === 'connections').length, before); // hidden: no GET
  active = true;
  api.statuses[0] = { ...api.statuses[0], status: 'authorized', authorized_as: 'alice@example.com' };
  await timers.advance(5000);
  assert.equal(model.get('sales')?.status, 'authorized');
  model.dispose();
  const after = api.calls.length;
  await timers.advance(20000);
  assert.equal(api.calls.length, after);
});
