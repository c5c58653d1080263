/**
 * "Authorize all": consent for several connections in ONE popup, one after the other.
 *
 * Browsers allow window.open only inside the click, so the controller opens the popup
 * at the click and hands it here. Every connection's flow starts at once (its card says
 * it waits), the popup goes to the first sign-in, and whenever that flow ends (complete,
 * failed: its card shows the error; or expired) the same popup goes straight on to the
 * next one. Going on at once also beats the callback page, which closes itself 1.5 s
 * after a complete sign-in. If the popup is gone (closed by the user or the browser),
 * the chain stops and hands every connection still waiting to ``leftOver`` (the
 * controller's "needs your consent" notification), so nothing is lost.
 *
 * No DOM: the popup comes behind IChainPopup; the unit tests drive it with fakes.
 */

import { ConnectionsModel, ITimers, realTimers } from './state';

export interface IChainPopup {
  /** Point the popup at ``url``; false when it is gone. */
  navigate(url: string): boolean;
  readonly closed: boolean;
  close(): void;
}

interface IStep {
  name: string;
  url: string;
}

export class ConsentChain {
  running = false;
  private popup: IChainPopup | null = null;
  private current: IStep | null = null;
  private queue: IStep[] = [];
  private disconnect: (() => void) | null = null;
  private closedCheck: unknown = undefined;
  /** Whether the popup was sent to a sign-in: if never, finish() closes the blank one. */
  private navigated = false;

  constructor(
    readonly model: ConnectionsModel,
    readonly leftOver: (name: string, url: string) => void,
    readonly opts: { checkMs?: number; timers?: ITimers } = {}
  ) {}

  private get timers(): ITimers {
    return this.opts.timers ?? realTimers;
  }

  /** Start a flow for each of ``names`` and walk ``popup`` through their sign-ins. */
  async run(names: string[], popup: IChainPopup): Promise<void> {
    if (this.running) {
      return;
    }
    this.running = true;
    this.popup = popup;
    this.navigated = false;
    this.model.changed.emit();
    const urls = await Promise.all(names.map(name => this.model.authorize(name)));
    // A flow that could not start shows its error on its card, as Authorize does.
    this.queue = names.flatMap((name, i) => (urls[i] ? [{ name, url: urls[i] as string }] : []));
    this.disconnect = this.model.changed.connect(() => this.onChanged());
    this.scheduleCheck();
    await this.next();
  }

  /** The current flow ended (the model stopped watching it): on to the next. */
  private onChanged(): void {
    if (this.current && !this.model.watching(this.current.name)) {
      void this.next();
    }
  }

  private async next(): Promise<void> {
    this.current = null;
    for (;;) {
      const step = this.queue.shift();
      if (!step) {
        this.finish();
        return;
      }
      if (!this.model.watching(step.name)) {
        // Its flow ended while waiting its turn: expired (start another one), or
        // consent was given elsewhere meanwhile (nothing to do).
        if (this.model.get(step.name)?.status !== 'consent_required') {
          continue;
        }
        const url = await this.model.authorize(step.name);
        if (!this.running) {
          if (url) {
            this.leftOver(step.name, url); // the popup went while this one started
          }
          return;
        }
        if (!url) {
          continue;
        }
        step.url = url;
      }
      this.current = step;
      if (this.popup?.navigate(step.url)) {
        this.navigated = true;
      } else {
        this.stop();
      }
      return;
    }
  }

  private scheduleCheck(): void {
    this.closedCheck = this.timers.setTimeout(() => {
      this.closedCheck = undefined;
      if (this.popup?.closed) {
        this.stop();
      } else if (this.running) {
        this.scheduleCheck();
      }
    }, this.opts.checkMs ?? 500);
  }

  /** The popup is gone: what is still waiting becomes per-connection notifications. */
  private stop(): void {
    const rest = [...(this.current ? [this.current] : []), ...this.queue];
    this.finish();
    for (const step of rest) {
      if (this.model.watching(step.name)) {
        this.leftOver(step.name, step.url);
      }
    }
  }

  private finish(): void {
    if (!this.running) {
      return;
    }
    if (!this.navigated) {
      this.popup?.close(); // no flow could start: the blank popup has no use
    }
    this.disconnect?.();
    this.disconnect = null;
    if (this.closedCheck !== undefined) {
      this.timers.clearTimeout(this.closedCheck);
      this.closedCheck = undefined;
    }
    this.current = null;
    this.queue = [];
    this.popup = null;
    this.running = false;
    this.model.changed.emit();
  }
}
