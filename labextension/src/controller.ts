/**
 * What the buttons and tree do, with the browser's popups and JupyterLab's
 * notifications around the model: Authorize, Test, Revoke, consent while browsing.
 */

import { Notification } from '@jupyterlab/apputils';

import { ConsentChain } from './chain';
import { errorText } from './format';
import { closePopup, navigatePopup, openPopup } from './popup';
import { ConnectionsModel } from './state';
import { TreeNode } from './tree';
import { IConsentRequired, TestAnswer } from './types';

const PASS_THROUGH = new Set(['on-behalf-of', 'token-exchange']);

export class Controller {
  /** The open "needs consent" notification per connection. */
  private consentNotes = new Map<string, string>();
  readonly chain: ConsentChain;

  constructor(readonly model: ConnectionsModel) {
    this.chain = new ConsentChain(model, (name, url) =>
      this.notifyConsent(name, url, '"Authorize all" stopped when its sign-in window closed.')
    );
    model.flowFinished.connect(() => this.dismissFinished());
    model.onTreeConsent = (name, answer, node) => this.consentWhileBrowsing(name, answer, node);
  }

  /** Whether this connection's next use will need the popup, as far as we know. */
  needsPopup(name: string): boolean {
    const c = this.model.get(name);
    return !!c && c.status === 'consent_required' && !PASS_THROUGH.has(c.auth ?? 'oauth');
  }

  /** Authorize button: popup first (user gesture), URL second. Switch account: the
   * broker then accepts a sign-in with another account than the authorized one. */
  async authorize(name: string, switchAccount = false): Promise<void> {
    const popup = openPopup();
    const url = await this.model.authorize(name, switchAccount);
    if (!url) {
      closePopup(popup);
      return;
    }
    if (!navigatePopup(popup, url)) {
      this.notifyConsent(name, url, 'The browser blocked the sign-in window.');
    }
  }

  /** The connections "Authorize all" asks consent for. */
  needingConsent(): string[] {
    return this.model.connections.filter(c => this.needsPopup(c.name)).map(c => c.name);
  }

  /** Authorize all: one popup (opened within the click) for every sign-in in turn. */
  async authorizeAll(): Promise<void> {
    const names = this.needingConsent();
    if (this.chain.running || !names.length) {
      return;
    }
    const popup = openPopup();
    await this.chain.run(names, {
      navigate: url => navigatePopup(popup, url),
      get closed() {
        return !popup || popup.closed;
      },
      close: () => closePopup(popup)
    });
  }

  /** Test button: the popup opens at once when consent is already known to be needed. */
  async test(name: string, popupWindow?: Window | null): Promise<TestAnswer | undefined> {
    const popup =
      popupWindow !== undefined ? popupWindow : this.needsPopup(name) ? openPopup() : null;
    const answer = await this.model.test(name);
    if (answer?.status === 'consent_required') {
      if (!navigatePopup(popup, answer.authorize_url)) {
        this.notifyConsent(name, answer.authorize_url, this.reason(answer));
      }
    } else {
      closePopup(popup);
    }
    return answer;
  }

  async revoke(name: string): Promise<void> {
    await this.model.revoke(name);
  }

  /** A browse level needs consent: a notification with an Authorize button. */
  consentWhileBrowsing(name: string, answer: IConsentRequired, node: TreeNode): void {
    this.model.watchFlow(answer.flow_id, name);
    const what = node.path.length ? `to open ${node.path.join('.')}` : 'to browse it';
    this.notifyConsent(name, answer.authorize_url, `${this.reason(answer)} (${what})`);
  }

  notifyConsent(name: string, url: string, why: string): void {
    const old = this.consentNotes.get(name);
    if (old) {
      Notification.dismiss(old);
    }
    const id = Notification.warning(`Connection "${name}" needs your consent: ${why}`, {
      autoClose: false,
      actions: [
        {
          label: 'Authorize',
          caption: 'Sign in at the identity provider in a popup',
          displayType: 'accent',
          callback: () => {
            if (!openPopup(url)) {
              // Blocked even on a click: open it as a tab instead.
              window.open(url, '_blank');
            }
          }
        }
      ]
    });
    this.consentNotes.set(name, id);
  }

  private reason(answer: IConsentRequired): string {
    return answer.reason_text || answer.reason || 'sign in once';
  }

  private dismissFinished(): void {
    for (const [name, id] of [...this.consentNotes]) {
      const flow = this.model.lastFlow.get(name);
      if (!this.model.watching(name) && flow) {
        Notification.dismiss(id);
        this.consentNotes.delete(name);
        if (flow.status === 'failed') {
          Notification.error(
            `Authorizing "${name}" failed: ${errorText({
              message: flow.message || 'unknown error',
              fix: flow.fix
            })}`,
            { autoClose: false }
          );
        } else {
          Notification.success(`"${name}" is authorized${flow.identity ? ` as ${flow.identity}` : ''}.`, {
            autoClose: 4000
          });
        }
      }
    }
  }
}
