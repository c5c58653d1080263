/** Fakes shared by the unit tests: timers run by hand and an in-memory broker API. */

import { ITimers } from '../src/state';
import { ApiError, IBrokerApi, IConnectionStatus, IFlow } from '../src/types';

export class FakeTimers implements ITimers {
  t = 0;
  queue: { at: number; fn: () => void; id: number }[] = [];
  private next = 1;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.queue.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.queue = this.queue.filter(q => q.id !== h);
  }
  now(): number {
    return this.t;
  }
  /** Advance time and run what is due, letting promises settle in between. */
  async advance(ms: number): Promise<void> {
    this.t += ms;
    for (;;) {
      const due = this.queue.filter(q => q.at <= this.t).sort((a, b) => a.at - b.at)[0];
      if (!due) {
        break;
      }
      this.queue = this.queue.filter(q => q !== due);
      due.fn();
      await settle();
    }
    await settle();
  }
}

export const settle = () => new Promise(r => setImmediate(r));

export function fakeApi(): IBrokerApi & {
  statuses: IConnectionStatus[];
  flows: Map<string, IFlow>;
  calls: string[];
  failConnections: ApiError | null;
} {
  /** A pending flow at the broker, numbered in order of start (flow1, flow2, ...). */
  let started = 0;
  const newFlow = (connection: string): string => {
    const id = `flow${++started}`;
    api.flows.set(id, { flow_id: id, connection, status: 'pending' });
    return id;
  };
  const api = {
    statuses: [
      { name: 'sales', status: 'consent_required', connector: 'databricks', reason: 'first_use' }
    ] as IConnectionStatus[],
    flows: new Map<string, IFlow>(),
    calls: [] as string[],
    failConnections: null as ApiError | null,
    async info() {
      return { flavour: 'oidc' as const };
    },
    async connections() {
      api.calls.push('connections');
      if (api.failConnections) {
        throw api.failConnections;
      }
      return api.statuses;
    },
    async connection(name: string) {
      return api.statuses.find(s => s.name === name)!;
    },
    async create() {
      return api.statuses[0];
    },
    async update() {
      return api.statuses[0];
    },
    async remove() {},
    async authorize(name: string, switchAccount?: boolean) {
      api.calls.push(`authorize:${name}${switchAccount ? ':switch_account' : ''}`);
      const id = newFlow(name);
      return { authorize_url: `https://idp/auth?flow=${id}`, flow_id: id };
    },
    async revoke(name: string) {
      api.calls.push(`revoke:${name}`);
      return {};
    },
    async uploadPrivateKey() {
      return {};
    },
    async test(name: string) {
      api.calls.push(`test:${name}`);
      if (api.statuses[0].status === 'authorized') {
        return { status: 'ok' as const, elapsed: 0.25, whoami: { user: 'alice@example.com' } };
      }
      const id = newFlow(name);
      return {
        status: 'consent_required' as const,
        authorize_url: `https://idp/auth?flow=${id}`,
        flow_id: id,
        reason_text: 'first use'
      };
    },
    async browse() {
      if (api.statuses[0].status !== 'authorized') {
        const id = newFlow('sales');
        return { status: 'consent_required' as const, authorize_url: 'u', flow_id: id };
      }
      return { status: 'ok' as const, items: ['main'] };
    },
    async flow(id: string) {
      api.calls.push(`flow:${id}`);
      const f = api.flows.get(id);
      if (!f) {
        throw new ApiError('unknown_flow', 'No such consent flow for you.', null, 403);
      }
      return f;
    }
  };
  return api;
}

export function complete(api: ReturnType<typeof fakeApi>, id: string) {
  const flow = api.flows.get(id)!;
  flow.status = 'complete';
  flow.identity = 'alice@example.com';
  const i = api.statuses.findIndex(s => s.name === flow.connection);
  api.statuses[i] = { ...api.statuses[i], status: 'authorized', authorized_as: 'alice@example.com' };
}
