"""The small HTML page the OAuth callback answers with.

It never contains a code or token; everything is escaped for its context, and the
opener window (JupyterLab, the balloon) is told the flow's outcome by postMessage.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 3em auto; max-width: 36em;
       padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.3em; }} .ok {{ color: #1a7f37; }} .err {{ color: #b42318; }}
.fix {{ background: #f6f8fa; border-left: 3px solid #888; padding: .5em 1em; }}
</style></head>
<body>
<h1 class="{cls}">{title}</h1>
<p>{message}</p>
{fix}
<p>You can close this tab and return to Jupyter.</p>
<script>
(function () {{
  var msg = {payload};
  try {{
    if (window.opener && !window.opener.closed) {{
      window.opener.postMessage(msg, window.location.origin);
      if (msg.status === "complete") {{ setTimeout(function () {{ window.close(); }}, 1500); }}
    }}
  }} catch (e) {{}}
}})();
</script>
</body></html>
"""


def _script_json(data: dict[str, Any]) -> str:
    """JSON that is safe inside a <script> element."""
    text = json.dumps(data)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def callback_page(
    *,
    ok: bool,
    title: str,
    message: str,
    fix: str | None = None,
    flow_id: str | None = None,
    connection: str | None = None,
    error: str | None = None,
) -> str:
    payload = {
        "type": "connauth:flow",
        "status": "complete" if ok else "failed",
        "flow_id": flow_id,
        "connection": connection,
        "error": error,
    }
    return _PAGE.format(
        title=escape(title),
        cls="ok" if ok else "err",
        message=escape(message),
        fix=f'<p class="fix"><b>How to fix:</b> {escape(fix)}</p>' if fix else "",
        payload=_script_json(payload),
    )


class BadCallback(ValueError):
    """A callback request that is not even well-formed."""


def callback_params(query_arguments: dict[str, list[bytes]]) -> dict[str, str]:
    """One value per parameter, valid UTF-8; raises :class:`BadCallback` otherwise."""
    params: dict[str, str] = {}
    for key, values in query_arguments.items():
        if len(values) != 1:
            raise BadCallback(f"The parameter {key!r} is repeated.")
        try:
            params[key] = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise BadCallback(f"The parameter {key!r} is not UTF-8.") from None
    return params


CALLBACK_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "frame-ancestors 'none'"
    ),
    "Content-Type": "text/html; charset=utf-8",
}


async def render_callback(
    broker: Any, query_arguments: dict[str, list[bytes]], caller: str | None
) -> tuple[int, str]:
    """Handle a callback request for any host: (status, page)."""
    from ..core.errors import ConnAuthError

    try:
        params = callback_params(query_arguments)
    except BadCallback as e:
        return 400, callback_page(ok=False, title="Bad sign-in response", message=str(e))
    try:
        flow = await broker.callback(params, caller)
    except ConnAuthError as e:
        return 400, callback_page(
            ok=False, title="Authorization failed", message=e.message, fix=e.fix, error=e.code
        )
    who = f" as {flow.identity}" if flow.identity else ""
    return 200, callback_page(
        ok=True,
        title="Authorized",
        message=f"Authorized{who} for {flow.connection}.",
        flow_id=flow.flow_id,
        connection=flow.connection,
    )
