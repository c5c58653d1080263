"""Databricks' errors → what to do about them; the HTTP status is in the driver's
``context["http-code"]``, never in its text. No token in any message."""

from __future__ import annotations

import errno
import importlib
import re
import socket
import ssl
from collections.abc import Mapping
from typing import Any

from ..core.errors import AccessDenied, ConfigError, ConnAuthError, ConsentRequired, QueryError
from ..core.redact import redact
from .base import ConnectionInfo

#: What the warehouse answers for a session it does not know (restarted, expired).
SESSION_GONE = "Invalid SessionHandle"

#: The Azure Databricks resource (first-party application) id.
AZURE_DATABRICKS_RESOURCE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"

FEDERATION_FIX = (
    "configure a federation policy for the IdP's issuer and audience in the Databricks "
    "account (Account console → Security → Token federation), or for Azure check the "
    f"token's audience is {AZURE_DATABRICKS_RESOURCE}"
)


def scrub(text: str) -> str:
    """A driver message without any token value or token-shaped string (core/redact.py)."""
    return redact(text)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (args, ``reason``, __cause__, __context__)."""
    out: list[BaseException] = []
    todo: list[Any] = [exc]
    while todo and len(out) < 12:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or any(e is seen for seen in out):
            continue
        out.append(e)
        todo.extend([getattr(e, "reason", None), e.__cause__, e.__context__])
        todo.extend(a for a in e.args if isinstance(a, BaseException))
    return out


def _context(exc: BaseException) -> Mapping[str, Any]:
    ctx = getattr(exc, "context", None)
    return ctx if isinstance(ctx, Mapping) else {}


def _http_code(exc: BaseException) -> int | None:
    code = _context(exc).get("http-code")
    try:
        return None if code is None else int(code)
    except (TypeError, ValueError):
        return None


def _server_reason(exc: BaseException) -> str:
    """The warehouse's own words (X-Databricks-Reason-Phrase / error headers), scrubbed."""
    ctx = _context(exc)
    text = str(ctx.get("error-message") or "").strip()
    if not text:
        text = str(exc)
        text = text.removeprefix("Error during request to server").lstrip(": .")
    return scrub(text).strip().lstrip(":").strip().rstrip(".").strip()


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    modules = {cls.__module__.split(".")[0] for cls in type(exc).__mro__}
    return "urllib3" in modules or "MaxRetryDurationError" in names


def _network_reason(chain: list[BaseException]) -> str:
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({e.verify_message})"
    for e in chain:
        if isinstance(e, socket.gaierror):
            return "host name not found"
        if isinstance(e, ConnectionRefusedError) or (
            isinstance(e, OSError) and e.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(e, ssl.SSLError):
            return f"TLS error ({e.reason or e})"
    for e in chain:
        name = type(e).__name__
        if isinstance(e, TimeoutError) or "Timeout" in name or "MaxRetryDuration" in name:
            return "timed out"
    for e in chain:
        if "Failed to establish a new connection" in str(e) or "Connection refused" in str(e):
            return "connection refused"
    return scrub(str(chain[-1] if chain else "network error"))[:300]


def token_rejected(info: ConnectionInfo, reason: str) -> ConsentRequired:
    detail = f": {reason}" if reason else ""
    return ConsentRequired(
        f"Databricks rejected the access token for connection {info.name!r} (HTTP 401{detail}).",
        f"{FEDERATION_FIX}; once that is in place, re-authorize "
        f"(%sql_connector authorize {info.name})",
        code="token_rejected",
    )


def is_auth_error(exc: BaseException) -> bool:
    """Reconnect once: the token was rejected (401), or the warehouse no longer knows
    the session (it restarted, or the session expired)."""
    if isinstance(exc, ConsentRequired):
        return True
    chain = _chain(exc)
    if any(_http_code(e) == 401 for e in chain):
        return True
    return any(SESSION_GONE in str(e) for e in chain)


def translate(exc: BaseException, info: ConnectionInfo) -> ConnAuthError | None:
    if isinstance(exc, ConnAuthError):
        return exc
    chain = _chain(exc)
    host = str(info.driver_options.get("server_hostname") or info.params.get("server_hostname"))
    port = info.driver_options.get("_port")
    if port and not re.search(r":\d+$", host):
        host = f"{host}:{port}"
    http_path = info.driver_options.get("http_path") or info.params.get("http_path")
    for e in chain:
        code = _http_code(e)
        if code is None:
            continue
        reason = _server_reason(e)
        if code == 401:
            return token_rejected(info, reason)
        if code == 403:
            return AccessDenied(
                f"Databricks refused connection {info.name!r} (HTTP 403: {reason}).",
                "ask a workspace admin to add the user to the workspace and grant CAN USE "
                "on the SQL warehouse",
                code="permission_denied",
            )
        if code == 404:
            return ConfigError(
                "http_path",
                f"Databricks at {host} has no SQL endpoint at {http_path!r} (HTTP 404: {reason}).",
                "check http_path: copy it from the SQL warehouse's Connection details tab "
                "(/sql/1.0/warehouses/<id>)",
            )
        if code in (429, 503):
            return ConnAuthError(
                f"Databricks at {host} is busy or starting (HTTP {code}: {reason}).",
                "wait until the SQL warehouse is running, then run the query again",
                code="warehouse_unavailable",
            )
        return ConnAuthError(
            f"Databricks at {host} answered HTTP {code}: {reason}.",
            "check the connection's server_hostname and http_path and the warehouse's "
            "state, then run the query again",
            code="warehouse_error",
        )
    try:
        dbx_exc = importlib.import_module("databricks.sql.exc")
    except ImportError:
        dbx_exc = None
    if dbx_exc is not None and isinstance(exc, dbx_exc.ServerOperationError):
        return QueryError(f"Databricks: {_query_message(exc)}", _query_fix(exc))
    if dbx_exc is not None and isinstance(exc, dbx_exc.DatabaseError):
        text = _query_message(exc)
        if "OPERATION_CANCELED" in text:
            return QueryError("Databricks: the query was cancelled.", code="query_cancelled")
    if any(_is_network_error(e) for e in chain):
        reason = _network_reason(chain)
        if reason.startswith("TLS"):
            fix = (
                "if a proxy inspects TLS, give its CA bundle as driver_options "
                "_tls_trusted_ca_file; otherwise check "
                "server_hostname is the workspace host"
            )
        else:
            fix = (
                "check server_hostname (the workspace host, e.g. "
                "adb-1234567890123456.7.azuredatabricks.net), the network, VPN and proxy "
                "settings, then run the query again"
            )
        return ConnAuthError(
            f"Cannot reach Databricks at {host}: {reason}.",
            fix,
            code="warehouse_unreachable",
        )
    return None


def _query_message(exc: BaseException) -> str:
    ctx = _context(exc)
    text = str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else str(exc)
    if not text:
        text = str(ctx.get("diagnostic-info") or type(exc).__name__)
    return scrub(text).strip()


def _query_fix(exc: BaseException) -> str | None:
    text = str(exc)
    if "TABLE_OR_VIEW_NOT_FOUND" in text:
        return "check the catalog.schema.table name, and that you were granted SELECT on it"
    if "UNBOUND_SQL_PARAMETER" in text:
        return "pass every :name the SQL uses in --params (a dict), and only those"
    if "PARSE_SYNTAX_ERROR" in text:
        return "fix the SQL syntax (Databricks SQL dialect)"
    return None
