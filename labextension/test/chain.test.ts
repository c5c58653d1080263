import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ConsentChain, IChainPopup } from '../src/chain';
import { ConnectionsModel } from '../src/state';
import { complete, FakeTimers, fakeApi, settle } from './fakes';

const NAMES = ['sales', 'bq', 'lake'];

/** The popup window as the chain sees it; ``closed`` as the user or browser leaves it. */
class FakePopup implements IChainPopup {
  urls: string[] = [];
  closed = false;
  navigate(url: string): boolean {
    if (this.closed) {
      return false;
    }
    this.urls.push(url);
    return true;
  }
  close(): void {
    this.closed = true;
  }
}

async function setup() {
  const api = fakeApi();
  api.statuses = NAMES.map(name => ({ name, status: 'consent_required', reason: 'first_use' }));
  const timers = new FakeTimers();
  const model = new ConnectionsModel(api, { timers, pollMs: 1000 });
  await model.refresh();
  const left: string[] = [];
  const chain = new ConsentChain(model, (name, url) => left.push(`${name} ${url}`), {
    timers,
    checkMs: 500
  });
  return { api, timers, model, chain, left, popup: new FakePopup() };
}

/** What the callback page posts to its opener. */
function message(flow_id: string, connection: string, status: 'complete' | 'failed') {
  return { type: 'connauth:flow', status, flow_id, connection };
}

test('Authorize all: one popup goes to the next sign-in as each ends; a failed one does not stop it', async () => {
  const { api, timers, model, chain, left, popup } = await setup();
  await chain.run(NAMES, popup);
  assert.deepEqual(popup.urls, ['https://idp/auth?flow=flow1'], 'the first sign-in only');
  assert.ok(NAMES.every(n => model.watching(n)), 'every card waits for its sign-in');
  assert.ok(chain.running);

  complete(api, 'flow1');
  await model.handleMessage(message('flow1', 'sales', 'complete'));
  assert.deepEqual(popup.urls.slice(1), ['https://idp/auth?flow=flow2'], 'at once, same popup');

  Object.assign(api.flows.get('flow2')!, { status: 'failed', message: 'The IdP refused: access_denied' });
  await model.handleMessage(message('flow2', 'bq', 'failed'));
  assert.deepEqual(popup.urls.slice(2), ['https://idp/auth?flow=flow3']);
  assert.equal(model.notes.get('bq')?.tone, 'error', 'the failure shows on its card');
  assert.ok(chain.running);

  complete(api, 'flow3'); // this one ends by the model's poll (no message)
  await timers.advance(1000);
  assert.equal(chain.running, false);
  assert.equal(popup.urls.length, 3);
  assert.equal(popup.closed, false, 'the callback page closes itself, not the chain');
  assert.deepEqual(left, []);
  assert.deepEqual(
    NAMES.map(n => model.get(n)?.status),
    ['authorized', 'consent_required', 'authorized']
  );
  assert.equal(timers.queue.length, 0, 'no more polls or popup checks');
});

test('a closed popup stops the chain: the rest become per-connection notifications', async () => {
  const { api, model, timers, chain, left, popup } = await setup();
  await chain.run(NAMES, popup);
  complete(api, 'flow1');
  await model.handleMessage(message('flow1', 'sales', 'complete'));
  popup.closed = true; // the user closes it during the second sign-in
  await timers.advance(500);
  assert.equal(chain.running, false);
  assert.deepEqual(left, ['bq https://idp/auth?flow=flow2', 'lake https://idp/auth?flow=flow3']);
  assert.ok(model.watching('bq') && model.watching('lake'), 'their flows still count');
  // the next flow ending does not bring the chain back
  complete(api, 'flow2');
  await model.handleMessage(message('flow2', 'bq', 'complete'));
  assert.equal(popup.urls.length, 2);
});

test('a popup the browser blocked: every connection gets its notification', async () => {
  const { chain, left, popup } = await setup();
  popup.closed = true;
  await chain.run(NAMES, popup);
  assert.equal(chain.running, false);
  assert.deepEqual(popup.urls, []);
  assert.equal(left.length, 3);
});

test('a flow that expired while waiting its turn is started again', async () => {
  const { api, model, timers, chain, popup } = await setup();
  await chain.run(NAMES, popup);
  api.flows.delete('flow2'); // the broker forgot it (flow_ttl): its watch ends at the next poll
  await timers.advance(1000);
  assert.equal(model.watching('bq'), false);
  complete(api, 'flow1');
  await model.handleMessage(message('flow1', 'sales', 'complete'));
  await settle();
  assert.deepEqual(popup.urls, ['https://idp/auth?flow=flow1', 'https://idp/auth?flow=flow4']);
  assert.ok(model.watching('bq'));
  assert.ok(chain.running);
  model.dispose();
});
