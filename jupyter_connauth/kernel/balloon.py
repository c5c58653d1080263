"""The Authorize balloon, and the wait for consent while the cell runs.

The Authorize button is a link that opens the IdP's consent page in a popup (from the
user's click, so no popup blocker stops it); the kernel polls the broker for the flow's
status, updating the balloon (kernel → frontend messages flow during execution). Where
the kernel has ipywidgets the balloon is a widget with a Cancel button
(:mod:`.balloon_widget`), its output carrying this module's HTML and text for frontends
without widgets; terminals get the text: the link, then the wait.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import sys
import threading
import time
from typing import Any

from ..core.errors import ConnAuthError, FlowError
from .client import BrokerAPI, ConsentNeeded, DeviceCode

CONSENT_CANCELLED = "cancelled while waiting for consent; nothing ran"
QUERY_CANCELLED = "query cancelled at the warehouse"
NOTHING_RAN = "cancelled; nothing ran"


class Cancelled(ConnAuthError):
    """Ctrl-C (an interrupt): one line in the notebook, never a traceback."""

    code = "cancelled"

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[33mCancelled\x1b[0m: {self.message}"]


def again_fix(fix: str | None, name: str) -> str:
    """The balloon is gone once a flow fails: say what brings a new Authorize link."""
    what = f"run the cell again (or %sql_connector authorize {name}) for a new Authorize link"
    if not fix:
        return what
    return re.sub(r"(?i)click authorize again", what, fix) if "uthorize again" in fix else fix


_STYLE = (
    "border:1px solid #d0a000;background:#fff8e1;border-radius:6px;padding:8px 12px;"
    "max-width:46em;font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;"
)
_BUTTON = (
    "display:inline-block;background:#1a73e8;color:#fff;padding:4px 14px;border-radius:4px;"
    "text-decoration:none;font-weight:600;margin:6px 0;"
)


def _popup_js(url: str) -> str:
    js_url = json.dumps(url).replace("<", "\\u003c")
    return html.escape(
        f"window.open({js_url}, 'connauth', 'popup=yes,width=520,height=720'); return false;",
        quote=True,
    )


def balloon_head(consent: ConsentNeeded, idp: str) -> str:
    return (
        f"<b>Authorize {html.escape(consent.connection)}</b> at {html.escape(idp)}<br>"
        f"Consent is needed because {html.escape(consent.reason_text)}.<br>"
    )


def authorize_link(consent: ConsentNeeded) -> str:
    """The Authorize button: a link opening the IdP in a popup from the user's click."""
    url = html.escape(consent.authorize_url, quote=True)
    flow = html.escape(consent.flow_id, quote=True)
    return (
        f'<a class="connauth-authorize" data-flow="{flow}" href="{url}" target="_blank" '
        'rel="noopener" '
        f'style="{_BUTTON}" onclick="{_popup_js(consent.authorize_url)}">Authorize</a>'
    )


def balloon_html(consent: ConsentNeeded, idp: str, status: str) -> str:
    flow = html.escape(consent.flow_id)
    return (
        f'<div style="{_STYLE}" class="connauth-balloon" data-flow="{flow}">'
        f"{balloon_head(consent, idp)}{authorize_link(consent)} "
        f'<span class="connauth-status">{html.escape(status)}</span></div>'
    )


def balloon_text(consent: ConsentNeeded, idp: str) -> str:
    return (
        f"Authorize {consent.connection} at {idp}: consent is needed because "
        f"{consent.reason_text}.\nOpen this link to sign in:\n{consent.authorize_url}\n"
    )


class LiveOutput:
    """One output of the running cell, replaced in place (a display handle: works with
    or without widgets, and kernel → frontend messages flow while the cell runs)."""

    _handle: Any = None
    _printed = False

    def publish(self, bundle: dict[str, str], *, final: bool = False) -> None:
        """Show or replace the output. Outside IPython (a script, the terminal) the
        text goes to stderr: the first one (the link) and the final one only."""
        if not in_ipython():
            if final or not self._printed:
                print(bundle["text/plain"], file=sys.stderr, flush=True)
                self._printed = True
            return
        from IPython.display import display

        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)


def in_ipython() -> bool:
    if "IPython" not in sys.modules:
        return False
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.initialized()


class Balloon(LiveOutput):
    """Shows the balloon."""

    #: Whether the countdown is redrawn every second (a widget's is cheap to update).
    ticks_every_second = False

    def __init__(self, consent: ConsentNeeded, idp: str, *, rich: bool) -> None:
        self.consent = consent
        self.idp = idp
        self.rich = rich
        #: Set by the widget's Cancel button (never set where there is no button).
        self.cancel_requested = threading.Event()

    def _bundle(self, status: str) -> dict[str, str]:
        if isinstance(self.consent, DeviceCode):  # RFC 8628: a code to enter elsewhere
            from .device_prompt import device_html, device_text

            text = device_text(self.consent, self.idp)
            page = device_html(self.consent, self.idp, status) if self.rich else ""
        else:
            text = balloon_text(self.consent, self.idp)
            page = balloon_html(self.consent, self.idp, status) if self.rich else ""
        bundle = {"text/plain": text + status}
        if page:
            bundle["text/html"] = page
        return bundle

    def show(self, status: str) -> None:
        self.publish(self._bundle(status))

    def closed(self, status: str) -> None:
        """The flow is over without success: keep the status, drop the link."""
        text = f"{self.consent.connection}: {status}"
        if self._handle is not None or self._printed:
            self.publish({"text/plain": text, "text/html": html.escape(text)}, final=True)

    def gone(self) -> None:
        """Cancelled: the balloon empties (the error's one line says it)."""
        if self._handle is not None:
            self.publish({"text/plain": ""}, final=True)

    def done(self, identity: str | None) -> None:
        who = f" as {identity}" if identity else ""
        line = f"Authorized{who} for {self.consent.connection}"
        if self._handle is not None or self._printed:
            self.publish({"text/plain": line, "text/html": html.escape(line)}, final=True)


def _balloon(consent: ConsentNeeded, idp: str, rich: bool) -> Balloon:
    """The widget balloon where the kernel has ipywidgets (its output carries this
    balloon's HTML and text too, for frontends without widgets), else this one."""
    if rich:
        from .balloon_widget import WidgetBalloon, widgets_available

        if widgets_available():
            try:
                return WidgetBalloon(consent, idp)
            except ImportError:  # installed but broken: the HTML balloon
                pass
    return Balloon(consent, idp, rich=rich)


def _cancel_at_broker(client: BrokerAPI, consent: ConsentNeeded) -> None:
    """The link stores nothing any more (best effort: the flow expires anyway)."""
    with contextlib.suppress(ConnAuthError):
        client.cancel_flow(consent.flow_id)


def wait_for_consent(
    client: BrokerAPI,
    consent: ConsentNeeded,
    *,
    idp: str,
    timeout: float,
    interval: float = 0.5,
    rich: bool = True,
) -> dict[str, Any]:
    """Show the balloon and poll the flow until it completes, fails or times out.

    The balloon's Cancel button (:class:`Cancelled`: "cancelled; nothing ran") and
    Ctrl-C (an interrupt) stop waiting and cancel the flow at the broker.
    """
    balloon = _balloon(consent, idp, rich)
    deadline = time.monotonic() + min(timeout, max(1.0, consent.expires_at - time.time()))
    shown_at = -1
    try:
        while True:
            left = int(deadline - time.monotonic())
            tick = balloon.ticks_every_second or left % 5 == 0 or left < 10
            if left != shown_at and (tick or shown_at < 0):
                balloon.show(f"Waiting for you to sign in… {left // 60}:{left % 60:02d} left")
                shown_at = left
            flow = client.flow(consent.flow_id)
            if flow["status"] == "complete":
                balloon.done(flow.get("identity"))
                return flow
            if flow["status"] == "failed":
                balloon.closed(f"authorization failed: {flow.get('message')}")
                raise FlowError(
                    flow.get("message") or "Authorization failed.",
                    again_fix(flow.get("fix"), consent.connection),
                    code=flow.get("error") or "flow_error",
                )
            if left <= 0:
                balloon.closed("timed out waiting for authorization")
                raise FlowError(
                    f"Timed out waiting for authorization of {consent.connection!r}.",
                    "run the cell again and finish signing in within the time limit "
                    "(%config ConnAuthMagics.wait_timeout = seconds)",
                    code="flow_timeout",
                )
            if balloon.cancel_requested.wait(interval):
                _cancel_at_broker(client, consent)
                balloon.gone()
                raise Cancelled(NOTHING_RAN)
    except KeyboardInterrupt:
        _cancel_at_broker(client, consent)
        balloon.closed("authorization cancelled")
        raise Cancelled(CONSENT_CANCELLED) from None
