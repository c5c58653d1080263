/**
 * The consent popup. Browsers allow window.open only synchronously inside a user
 * gesture, so actions that first ask the broker for the URL open a blank popup at
 * the click and point it at the IdP when the URL arrives.
 */

const NAME = 'connauth';
const FEATURES = 'popup=yes,width=520,height=720';

/** Open (or reuse) the consent popup; null when the browser blocked it. */
export function openPopup(url = ''): Window | null {
  const win = window.open(url || 'about:blank', NAME, FEATURES);
  if (win && !url) {
    try {
      win.document.title = 'Connecting…';
      win.document.body.innerHTML =
        '<p style="font:15px system-ui,sans-serif;margin:3em;color:#555">' +
        'Contacting the identity provider…</p>';
    } catch {
      // a reused popup showing another origin: it is navigated next anyway
    }
  }
  return win;
}

export function navigatePopup(win: Window | null, url: string): boolean {
  if (!win || win.closed) {
    return false;
  }
  win.location.href = url;
  win.focus();
  return true;
}

export function closePopup(win: Window | null): void {
  if (win && !win.closed) {
    win.close();
  }
}
