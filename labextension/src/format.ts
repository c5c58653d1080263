/** Text shown in the panel: status lines, times, field errors. Pure functions. */

import { ApiError, IConnectionStatus } from './types';

/** `14:05` for an epoch-seconds time (local clock), or the date too when not today. */
export function formatTime(epochSeconds: number, now: Date = new Date()): string {
  const d = new Date(epochSeconds * 1000);
  const hhmm = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
  if (d.toDateString() === now.toDateString()) {
    return hhmm;
  }
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(
    d.getDate()
  ).padStart(2, '0')} ${hhmm}`;
}

export type Tone = 'ok' | 'warn' | 'error';

export interface IStatusLine {
  tone: Tone;
  text: string;
  fix?: string | null;
}

/** The one-line status of a connection for this user. */
export function statusLine(c: IConnectionStatus, now: Date = new Date()): IStatusLine {
  if (c.status === 'authorized') {
    const who = c.authorized_as ? ` as ${c.authorized_as}` : '';
    let until = '';
    if (c.expires_at) {
      until = c.refreshable
        ? ` (token until ${formatTime(c.expires_at, now)}, refreshed silently)`
        : ` until ${formatTime(c.expires_at, now)}`;
    }
    return { tone: 'ok', text: `Authorized${who}${until}` };
  }
  if (c.status === 'consent_required') {
    // The broker words it for the admin-defined case; a connection this user may edit
    // (their own, or theirs to administer) was changed in its settings, maybe by them.
    const own = c.reason === 'scopes_changed' && c.editable;
    const why = own ? "the connection's scopes or auth were changed in its settings" : c.reason_text || c.reason;
    return { tone: 'warn', text: why ? `Consent needed: ${why}` : 'Consent needed' };
  }
  return { tone: 'error', text: c.message || c.error || 'error', fix: c.fix };
}

const FIELD_RE = /^c\.ConnAuth\.connections\[(['"])(.*?)\1\](?:\.([A-Za-z_][A-Za-z0-9_]*))?:\s*([\s\S]*)$/;

/**
 * A config_error names its field as `c.ConnAuth.connections['x'].FIELD: message`:
 * split it so the form can show the message beside the field. `field` is `name`
 * when the connection (its name) itself is at fault.
 */
export function fieldError(err: ApiError): { field: string; message: string } | null {
  if (err.code !== 'config_error') {
    return null;
  }
  const m = FIELD_RE.exec(err.message);
  if (!m) {
    return null;
  }
  return { field: m[3] || 'name', message: m[4] };
}

/** "message — fix" for notifications (which show one line of text). */
export function errorText(err: { message: string; fix?: string | null }): string {
  return err.fix ? `${err.message} Fix: ${err.fix}` : err.message;
}
