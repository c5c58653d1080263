/**
 * The sidebar's state: every connection with this user's status, what each action
 * is doing, the consent flows being watched and one browse tree per connection.
 *
 * No DOM and no JupyterLab imports: the view and the plugin do popups and
 * notifications; the unit tests drive this with a fake API and fake timers.
 */

import { Emitter } from './emitter';
import { Tone } from './format';
import { BrowseTree, TreeNode } from './tree';
import {
  ApiError,
  IBrokerApi,
  IConnectionStatus,
  IConsentRequired,
  IFlow,
  IFlowMessage,
  IInfo,
  TestAnswer
} from './types';

export interface INote {
  tone: Tone;
  text: string;
  fix?: string | null;
  /** What the connection was (status, identity, definition) when the note was shown:
   * set by the first refresh after it, and the note goes once that changes. */
  basis?: string;
}

/** What a note about a connection depends on: not the token's expiry, which refreshes. */
export function noteBasis(c: IConnectionStatus | undefined): string {
  if (!c) {
    return '';
  }
  const { expires_at, refreshable, ...rest } = c;
  void expires_at;
  void refreshable;
  const fields = rest as Record<string, unknown>;
  return JSON.stringify(Object.keys(fields).sort().map(k => [k, fields[k]]));
}

export interface IWatchedFlow {
  flowId: string;
  connection: string;
  started: number;
}

export interface ITimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

export const realTimers: ITimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: h => clearTimeout(h as ReturnType<typeof setTimeout>),
  now: () => Date.now()
};

export class ConnectionsModel {
  readonly changed = new Emitter();
  /** Fired once per finished consent flow (complete or failed). */
  readonly flowFinished = new Emitter();
  info: IInfo | null = null;
  connections: IConnectionStatus[] = [];
  loading = false;
  loaded = false;
  /** Why the list could not be loaded (the panel shows it with the fix). */
  error: ApiError | null = null;
  /** The action running per connection ('authorize', 'test', 'revoke', ...). */
  readonly busy = new Map<string, string>();
  /** The last action's outcome per connection (a test result, an error). */
  readonly notes = new Map<string, INote>();
  readonly flows = new Map<string, IWatchedFlow>();
  readonly lastFlow = new Map<string, IFlow>();
  /** Set by the controller: a browse level needs consent (show the notification). */
  onTreeConsent: ((name: string, answer: IConsentRequired, node: TreeNode) => void) | null = null;
  private readonly trees = new Map<string, BrowseTree>();
  private readonly pollHandles = new Map<string, unknown>();
  private refreshing: Promise<void> | null = null;
  private statusPoll: unknown = undefined;

  constructor(
    readonly api: IBrokerApi,
    readonly opts: { pollMs?: number; flowTimeoutMs?: number; pageSize?: number; timers?: ITimers } = {}
  ) {}

  private get timers(): ITimers {
    return this.opts.timers ?? realTimers;
  }

  get(name: string): IConnectionStatus | undefined {
    return this.connections.find(c => c.name === name);
  }

  /** Reload info and statuses; concurrent calls share one request. */
  refresh(): Promise<void> {
    if (!this.refreshing) {
      this.refreshing = this._refresh().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  private async _refresh(): Promise<void> {
    this.loading = true;
    this.changed.emit();
    try {
      const [info, connections] = await Promise.all([this.api.info(), this.api.connections()]);
      this.info = info;
      this.connections = connections;
      this.error = null;
      this.loaded = true;
      this.dropStaleNotes();
    } catch (err) {
      this.error = ApiError.from(err);
    } finally {
      this.loading = false;
      this.changed.emit();
    }
  }

  /**
   * A note stays while its connection is what it was when the note was shown: an edit,
   * another identity, a revoke or consent elsewhere (another tab, a notebook) drops it.
   */
  private dropStaleNotes(): void {
    for (const [name, note] of [...this.notes]) {
      const basis = noteBasis(this.get(name));
      if (!basis) {
        this.notes.delete(name);
      } else if (note.basis === undefined) {
        note.basis = basis;
      } else if (note.basis !== basis) {
        this.notes.delete(name);
      }
    }
  }

  /**
   * Refresh every ``everyMs`` while ``active()`` (the panel shown, the page visible):
   * what another tab or a kernel changed shows without a click. One small GET each.
   */
  pollStatuses(everyMs: number, active: () => boolean): void {
    const tick = () => {
      this.statusPoll = this.timers.setTimeout(() => {
        const run = active() && !this.refreshing ? this.refresh() : Promise.resolve();
        void run.finally(tick);
      }, everyMs);
    };
    this.stopStatusPoll();
    tick();
  }

  private stopStatusPoll(): void {
    if (this.statusPoll !== undefined) {
      this.timers.clearTimeout(this.statusPoll);
      this.statusPoll = undefined;
    }
  }

  tree(name: string): BrowseTree {
    let tree = this.trees.get(name);
    if (!tree) {
      tree = new BrowseTree(name, path => this.api.browse(name, path), this.opts.pageSize);
      tree.onConsent = (answer, node) => {
        if (this.onTreeConsent) {
          this.onTreeConsent(name, answer, node);
        } else {
          this.watchFlow(answer.flow_id, name);
        }
      };
      this.trees.set(name, tree);
    }
    return tree;
  }

  hasTree(name: string): boolean {
    return this.trees.has(name);
  }

  /** ``afterRefresh``: the note is about a change the next refresh shows (a finished
   * consent), so it is tied to what that refresh sees, not to the current status. */
  setNote(name: string, note: INote | null, afterRefresh = false): void {
    if (note) {
      const basis = afterRefresh ? undefined : noteBasis(this.get(name));
      this.notes.set(name, { ...note, basis });
    } else {
      this.notes.delete(name);
    }
    this.changed.emit();
  }

  /** Run an action with the connection marked busy; errors become a note. */
  async run<T>(name: string, action: string, fn: () => Promise<T>): Promise<T | undefined> {
    this.busy.set(name, action);
    this.notes.delete(name);
    this.changed.emit();
    try {
      return await fn();
    } catch (err) {
      const e = ApiError.from(err);
      this.notes.set(name, {
        tone: 'error',
        text: e.message,
        fix: e.fix,
        basis: noteBasis(this.get(name))
      });
      return undefined;
    } finally {
      this.busy.delete(name);
      this.changed.emit();
    }
  }

  /** Start a consent flow: the URL for the popup, and the flow is watched. */
  async authorize(name: string, switchAccount = false): Promise<string | undefined> {
    const started = await this.run(name, 'authorize', () => this.api.authorize(name, switchAccount));
    if (!started) {
      return undefined;
    }
    this.watchFlow(started.flow_id, name);
    return started.authorize_url;
  }

  async revoke(name: string): Promise<void> {
    await this.run(name, 'revoke', () => this.api.revoke(name));
    this.trees.get(name)?.reset();
    await this.refresh();
  }

  /** Test; a consent answer starts watching its flow and is returned to the caller. */
  async test(name: string): Promise<TestAnswer | undefined> {
    const answer = await this.run(name, 'test', () => this.api.test(name));
    if (!answer) {
      return undefined;
    }
    if (answer.status === 'ok') {
      const who = answer.whoami && (answer.whoami.user ?? answer.whoami.email);
      this.setNote(
        name,
        { tone: 'ok', text: `Test OK in ${answer.elapsed.toFixed(2)} s${who ? ` as ${String(who)}` : ''}` },
        true
      );
      await this.refresh();
    } else {
      this.watchFlow(answer.flow_id, name); // the status line already says why
    }
    return answer;
  }

  // -- consent flows ---------------------------------------------------------------

  watchFlow(flowId: string, connection: string): void {
    if (this.flows.has(flowId)) {
      return;
    }
    // One consent at a time per connection: the newest flow supersedes older ones
    // (whichever the user finishes, the callback's message names the connection).
    for (const f of [...this.flows.values()]) {
      if (f.connection === connection) {
        this.stopWatching(f.flowId);
      }
    }
    this.flows.set(flowId, { flowId, connection, started: this.timers.now() });
    this.changed.emit();
    this.schedulePoll(flowId);
  }

  private schedulePoll(flowId: string): void {
    const handle = this.timers.setTimeout(() => {
      void this.poll(flowId);
    }, this.opts.pollMs ?? 1500);
    this.pollHandles.set(flowId, handle);
  }

  private async poll(flowId: string): Promise<void> {
    const watched = this.flows.get(flowId);
    if (!watched) {
      return;
    }
    if (this.timers.now() - watched.started > (this.opts.flowTimeoutMs ?? 10 * 60_000)) {
      this.stopWatching(flowId);
      return;
    }
    let flow: IFlow;
    try {
      flow = await this.api.flow(flowId);
    } catch (err) {
      const e = ApiError.from(err);
      if (e.httpStatus >= 400 && e.httpStatus < 500) {
        this.stopWatching(flowId); // expired or unknown: nothing more to wait for
        return;
      }
      if (this.flows.has(flowId)) {
        this.schedulePoll(flowId); // transient: try again
      }
      return;
    }
    if (!this.flows.has(flowId)) {
      return; // finished by the popup's message meanwhile
    }
    if (flow.status === 'pending') {
      this.schedulePoll(flowId);
      return;
    }
    await this.finishFlow(watched, flow);
  }

  private stopWatching(flowId: string): void {
    const handle = this.pollHandles.get(flowId);
    if (handle !== undefined) {
      this.timers.clearTimeout(handle);
    }
    this.pollHandles.delete(flowId);
    this.flows.delete(flowId);
    this.changed.emit();
  }

  private async finishFlow(watched: IWatchedFlow, flow: IFlow): Promise<void> {
    this.stopWatching(watched.flowId);
    this.lastFlow.set(watched.connection, flow);
    if (flow.status === 'complete') {
      this.setNote(
        watched.connection,
        { tone: 'ok', text: `Authorized${flow.identity ? ` as ${flow.identity}` : ''}` },
        true
      );
    } else {
      this.setNote(watched.connection, {
        tone: 'error',
        text: flow.message || 'Authorization failed',
        fix: flow.fix
      });
    }
    this.flowFinished.emit();
    await this.refresh();
    if (flow.status === 'complete') {
      await this.trees.get(watched.connection)?.retryPending();
    }
  }

  /**
   * The callback page's postMessage. Finishes the flow at once, without waiting for
   * the next poll; the flow's own status (message, fix) is fetched once.
   */
  async handleMessage(data: unknown): Promise<boolean> {
    const msg = data as IFlowMessage;
    if (!msg || typeof msg !== 'object' || msg.type !== 'connauth:flow') {
      return false;
    }
    const watched =
      (msg.flow_id && this.flows.get(msg.flow_id)) ||
      [...this.flows.values()].find(f => f.connection === msg.connection);
    if (!watched) {
      // A flow started elsewhere (a notebook's balloon): statuses changed anyway.
      await this.refresh();
      if (msg.status === 'complete' && msg.connection) {
        await this.trees.get(msg.connection)?.retryPending();
      }
      return true;
    }
    let flow: IFlow;
    try {
      flow = await this.api.flow(watched.flowId);
    } catch {
      flow = {
        flow_id: watched.flowId,
        connection: watched.connection,
        status: msg.status,
        message: msg.status === 'failed' ? msg.error || 'Authorization failed' : null
      };
    }
    if (flow.status === 'pending') {
      flow = { ...flow, status: msg.status };
    }
    if (this.flows.has(watched.flowId)) {
      await this.finishFlow(watched, flow);
    }
    return true;
  }

  /** Flows still being watched for a connection. */
  watching(name: string): boolean {
    return [...this.flows.values()].some(f => f.connection === name);
  }

  dispose(): void {
    this.stopStatusPoll();
    for (const id of [...this.flows.keys()]) {
      this.stopWatching(id);
    }
  }
}
