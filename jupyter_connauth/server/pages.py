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
