import assert from 'node:assert/strict';
import { test } from 'node:test';

import { BrowseTree } from '../src/tree';
import { BrowseAnswer } from '../src/types';

const consent: BrowseAnswer = {
  status: 'consent_required',
  authorize_url: 'https://idp/authorize?x',
  flow_id: 'f1',
  reason_text: 'this is the first use of the connection'
};

function fakeLoader(tables = 3, needConsent = false) {
  const calls: string[] = [];
  let consentNeeded = needConsent;
  const load = async (path: string[]): Promise<BrowseAnswer> => {
    calls.push(path.join('/'));
    if (consentNeeded) {
      return consent;
    }
    switch (path.length) {
      case 0:
        return { status: 'ok', items: ['main', 'hr'] };
      case 1:
        return { status: 'ok', items: ['public', 'sales'] };
      case 2:
        return {
          status: 'ok',
          items: Array.from({ length: tables }, (_, i) => ({ name: `t${i}`, type: 'TABLE' }))
        };
      default:
        return {
          status: 'ok',
          items: [
            { name: 'id', type: 'INT', nullable: false },
            { name: 'amount', type: 'DECIMAL(10,2)', nullable: true }
          ]
        };
    }
  };
  return { load, calls, grant: () => (consentNeeded = false) };
}

test('expands lazily, one level per request, columns with types', async () => {
  const f = fakeLoader();
  const tree = new BrowseTree('sales', f.load);
  await tree.expand(tree.root);
  assert.deepEqual(f.calls, ['']);
  assert.deepEqual(
    tree.rows().map(r => (r.kind === 'node' ? r.node.name : r.kind)),
    ['main', 'hr']
  );
  const main = tree.find(['main'])!;
  await tree.expand(main);
  await tree.expand(tree.find(['main', 'sales'])!);
  const t0 = tree.find(['main', 'sales', 't0'])!;
  assert.equal(t0.kind, 'table');
  await tree.expand(t0);
  assert.deepEqual(f.calls, ['', 'main', 'main/sales', 'main/sales/t0']);
  const id = tree.find(['main', 'sales', 't0', 'id'])!;
  assert.equal(id.kind, 'column');
  assert.equal(id.type, 'INT');
  assert.equal(id.nullable, false);
  assert.equal(id.expandable, false);
  // collapse and expand again: no second request
  tree.collapse(main);
  await tree.expand(main);
  assert.equal(f.calls.length, 4);
});

test('10,000 tables: rows are capped per level with "show more"', async () => {
  const f = fakeLoader(10_000);
  const tree = new BrowseTree('big', f.load, 200);
  await tree.expand(tree.root);
  await tree.expand(tree.find(['main'])!);
  await tree.expand(tree.find(['main', 'sales'])!);
  let rows = tree.rows();
  const more = rows.find(r => r.kind === 'more');
  assert.ok(more && more.kind === 'more');
  assert.equal(more.remaining, 10_000 - 200);
  assert.ok(rows.length < 210, `${rows.length} rows`);
  tree.showMore(more.parent);
  rows = tree.rows();
  assert.ok(rows.length < 410);
  const started = Date.now();
  for (let i = 0; i < 20; i++) {
    tree.rows();
  }
  assert.ok(Date.now() - started < 500, 'rows() stays cheap on a 10,000-table level');
});

test('filter keeps matches and their ancestors; below a match everything shows', async () => {
  const f = fakeLoader(500);
  const tree = new BrowseTree('big', f.load, 200);
  await tree.expand(tree.root);
  await tree.expand(tree.find(['main'])!);
  await tree.expand(tree.find(['main', 'sales'])!);
  tree.setFilter('T49');
  const names = tree.rows().flatMap(r => (r.kind === 'node' ? [r.node.name] : []));
  // main > sales > t49, t490..t499 (the filter ignores case)
  assert.deepEqual(names, ['main', 'sales', 't49', ...Array.from({ length: 10 }, (_, i) => `t49${i}`)]);
  tree.setFilter('zzz');
  assert.deepEqual(
    tree.rows().map(r => r.kind),
    ['empty']
  );
  tree.setFilter('');
  assert.ok(tree.rows().length > 200);
});

test('a level that needs consent waits, then expands by itself after retryPending', async () => {
  const f = fakeLoader(3, true);
  const tree = new BrowseTree('sales', f.load);
  const seen: string[] = [];
  tree.onConsent = (answer, node) => seen.push(`${answer.flow_id}:${node.key}`);
  await tree.expand(tree.root);
  assert.deepEqual(seen, ['f1:']);
  assert.equal(tree.root.state, 'consent');
  assert.deepEqual(tree.rows().map(r => r.kind), ['consent']);
  assert.equal(tree.pending.size, 1);
  f.grant();
  await tree.retryPending();
  assert.equal(tree.root.state, 'loaded');
  assert.equal(tree.pending.size, 0);
  assert.deepEqual(
    tree.rows().map(r => (r.kind === 'node' ? r.node.name : r.kind)),
    ['main', 'hr']
  );
});

test('a collapsed pending node is not expanded after consent', async () => {
  const f = fakeLoader(3, true);
  const tree = new BrowseTree('sales', f.load);
  await tree.expand(tree.root);
  tree.collapse(tree.root);
  f.grant();
  await tree.retryPending();
  assert.equal(tree.root.state, 'consent');
  assert.equal(f.calls.length, 1);
});

test('errors stay on their node with the fix, and retry reloads', async () => {
  let fail = true;
  const tree = new BrowseTree('sales', async path => {
    if (fail) {
      throw Object.assign(new Error('BigQuery: permission denied'), { code: 'x' });
    }
    return { status: 'ok', items: path.length ? [] : ['main'] };
  });
  await tree.expand(tree.root);
  const rows = tree.rows();
  assert.equal(rows[0].kind, 'error');
  assert.match(rows[0].kind === 'error' ? rows[0].error.message : '', /permission denied/);
  fail = false;
  await tree.expand(tree.root, { reload: true });
  assert.deepEqual(tree.rows().map(r => r.kind), ['node']);
  await tree.expand(tree.find(['main'])!);
  assert.deepEqual(tree.rows().map(r => r.kind), ['node', 'empty']);
});

test('a second expand while loading makes no second request', async () => {
  const f = fakeLoader();
  const tree = new BrowseTree('sales', f.load);
  await Promise.all([tree.expand(tree.root), tree.expand(tree.root)]);
  assert.deepEqual(f.calls, ['']);
});
