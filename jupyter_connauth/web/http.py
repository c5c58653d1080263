"""What the broker's HTTP hosts share: JSON answers and errors as ``{error, message, fix}``.

A tornado mixin (no jupyter_server, no JupyterHub imports), used by the server
extension's handlers and by the JupyterHub service's.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tornado import web

from ..core.errors import ConnAuthError
from ..core.redact import redact

log = logging.getLogger(__name__)


class JSONAPIMixin(web.RequestHandler):
    """Put before the host's own handler base: ``class H(JSONAPIMixin, APIHandler)``."""

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data))

    def body_json(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPError(400, "the request body is not valid JSON") from None
        except RecursionError:  # json's parser recurses per nesting level
            raise web.HTTPError(400, "the request body is nested too deeply") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return data

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], ConnAuthError):
            status_code = exc_info[1].status
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, ConnAuthError):
            self.set_status(exc.status)
            body = exc.to_json()
            if "retry_after" in body:
                self.set_header("Retry-After", str(body["retry_after"]))
        else:
            message = self._reason
            if isinstance(exc, web.HTTPError) and exc.log_message:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            body = {"error": "http_error", "message": message, "fix": None}
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(redact(json.dumps(body)))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ConnAuthError):
            log.info(
                "jupyter-connauth: %s %s → %s", self.request.method, self.request.path, value.code
            )
            return
        super().log_exception(typ, value, tb)
