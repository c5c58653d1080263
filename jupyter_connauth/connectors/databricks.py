"""Databricks SQL through the official ``databricks-sql-connector`` (4.x, Thrift).

Auth: the user's access token goes to the driver as ``access_token``. The 4.x driver
wraps every credential (``access_token`` *and* ``credentials_provider``) in its
``TokenFederationProvider``: when the token's issuer host differs from the workspace
host it first exchanges the token at ``https://<server_hostname>/oidc/v1/token``
(RFC 8693, ``return_original_token_if_authenticated=true``) and sends what comes back;
when the issuer is the workspace itself it sends the token unchanged. We keep that:
Databricks OAuth token federation *requires* the exchange for tokens from an external
OIDC IdP (Okta, Keycloak, ...), and for Entra ID tokens the workspace hands the
original token back. A ``credentials_provider`` would not avoid the exchange (it is
wrapped the same way), so there is no clean bypass in 4.9.0. The exchanged token is
cached by the driver per connection, and the kernel reuses connections while the
credential is valid, so this costs one request per connection.

Retries: the driver's defaults retry unreachable hosts for minutes (30 attempts with
exponential backoff on the Thrift endpoint, about 34 s on ``/oidc/v1/token``). We pass
``_retry_stop_after_attempts_count=4`` and ``_retry_delay_min=0.25``: a refused
connection fails in about 8 s, while 429/503 answers (a warehouse that is starting)
are still retried 4 times at ``max(Retry-After, _retry_delay_max)`` = 60 s by default,
about 4 minutes. A connection's ``driver_options`` override both.

Results come through ``fetchall_arrow`` / ``fetchmany_arrow`` (never ``fetchall``).
databricks-sql-connector 4.9.0 formats every Thrift response into a string for its
``databricks.sql.unsafe`` debug logger before calling ``debug`` (``str.format`` runs
whatever the log level), which costs ~3/4 of the fetch time for inline Arrow results
(0.38 s vs 0.095 s for 200k rows of 10 columns, 0.18 s vs 0.08 s with LZ4, which the
driver requests by default). Only patching the driver's private code avoids it, so
we do not; real warehouses send large results through CloudFetch links instead.
"""

from __future__ import annotations

import errno
import importlib
import logging
import re
import socket
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.errors import AccessDenied, ConfigError, ConnAuthError, ConsentRequired
from .base import (
    ConnectionInfo,
    Connector,
    Credential,
    Params,
    Progress,
    QueryError,
    TooManyRows,
    with_token,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

#: Connect defaults that keep an unreachable host from retrying for minutes;
#: the connection's ``driver_options`` override them.
DEFAULT_DRIVER_OPTIONS: dict[str, Any] = {
    "_retry_stop_after_attempts_count": 4,
    "_retry_delay_min": 0.25,
    "user_agent_entry": "jupyter-connauth",
}

#: What the warehouse answers for a session it does not know (restarted, expired).
SESSION_GONE = "Invalid SessionHandle"

#: The Azure Databricks resource (first-party application) id.
AZURE_DATABRICKS_RESOURCE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"

FEDERATION_FIX = (
    "configure a federation policy for the IdP's issuer and audience in the Databricks "
    "account (Account console → Security → Token federation), or for Azure check the "
    f"token's audience is {AZURE_DATABRICKS_RESOURCE}"
)

_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)\S+")


def _scrub(text: str) -> str:
    """Remove anything shaped like a bearer token from a driver message."""
    return _BEARER_RE.sub(r"\1[token]", _JWT_RE.sub("[token]", text))


def _report(progress: Progress | None, status: str) -> None:
    if progress is not None:
        progress(status)


def _parameters(params: Params) -> dict[str, Any] | list[Any] | None:
    """Native server-side parameters: a mapping → named (``:name``), a list or tuple →
    positional (``?``)."""
    if params is None:
        return None
    if isinstance(params, Mapping):
        return dict(params)
    if isinstance(params, list | tuple):
        return list(params)
    raise TypeError(
        "query parameters must be a dict (for :name) or a list (for ?), "
        f"not {type(params).__name__}"
    )


def _close_cursor(cursor: Any) -> None:
    try:
        cursor.close()
    except Exception as exc:  # closing after a failure is best effort
        log.debug("Databricks cursor close failed: %s", _scrub(str(exc)))


def _cancel(cursor: Any) -> None:
    try:
        cursor.cancel()
    except Exception as exc:  # the interrupt matters more than the cancel's outcome
        log.warning("Databricks: cancelling the statement failed: %s", _scrub(str(exc)))


def _column(table: pa.Table, *names: str) -> list[Any]:
    for name in names:
        if name in table.column_names:
            return list(table.column(name).to_pylist())
    return [None] * table.num_rows


def _same(a: Any, b: str) -> bool:
    """Metadata names compare case-insensitively (Unity Catalog lower-cases them)."""
    return isinstance(a, str) and a.lower() == b.lower()


# -- errors -------------------------------------------------------------------------


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
    return _scrub(text).strip().lstrip(":").strip().rstrip(".").strip()


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
    return _scrub(str(chain[-1] if chain else "network error"))[:300]


def token_rejected(info: ConnectionInfo, reason: str) -> ConsentRequired:
    detail = f": {reason}" if reason else ""
    return ConsentRequired(
        f"Databricks rejected the access token for connection {info.name!r} (HTTP 401{detail}).",
        f"{FEDERATION_FIX}; once that is in place, re-authorize "
        f"(%sql_connector authorize {info.name})",
        code="token_rejected",
    )


class DatabricksConnector(Connector):
    name = "databricks"
    extra = "databricks"
    driver_module = "databricks.sql"

    # -- connections --------------------------------------------------------------
    def connect(self, info: ConnectionInfo, cred: Credential) -> Any:
        sql = self.driver()
        params = info.params
        options = with_token(info.driver_options, cred.token)
        missing = [
            key
            for key in ("server_hostname", "http_path")
            if not (options.get(key) or params.get(key))
        ]
        if missing:
            raise ConfigError(
                f"connections.{info.name}",
                f"a Databricks connection needs {' and '.join(missing)}",
                "copy Server hostname and HTTP path from the SQL warehouse's Connection "
                "details tab into the connection's config",
            )
        kwargs: dict[str, Any] = {
            "server_hostname": params.get("server_hostname"),
            "http_path": params.get("http_path"),
            "access_token": cred.token,
        }
        for key in ("catalog", "schema"):
            if params.get(key):
                kwargs[key] = params[key]
        kwargs.update(DEFAULT_DRIVER_OPTIONS)
        kwargs.update(options)
        return sql.connect(**kwargs)

    # -- queries ------------------------------------------------------------------
    def query_arrow(
        self,
        conn: Any,
        sql: str,
        params: Params = None,
        *,
        max_rows: int | None = None,
        progress: Progress | None = None,
    ) -> pa.Table:
        parameters = _parameters(params)
        cursor = conn.cursor()
        try:
            try:
                _report(progress, "running query")
                cursor.execute(sql, parameters)
                _report(progress, "fetching results")
                if max_rows is None:
                    table = cursor.fetchall_arrow()
                else:
                    table = cursor.fetchmany_arrow(max_rows + 1)
            except KeyboardInterrupt:
                _report(progress, "cancelling")
                _cancel(cursor)
                raise
        finally:
            _close_cursor(cursor)
        if max_rows is not None and table.num_rows > max_rows:
            raise TooManyRows(
                f"The query returned more than {max_rows} rows.",
                "add a LIMIT or a narrower WHERE to the query, or raise --max-rows",
            )
        _report(progress, f"{table.num_rows} rows")
        return table

    def whoami(self, conn: Any) -> dict[str, Any]:
        table = self.query_arrow(conn, "SELECT current_user() AS user_name")
        users = table.column(0).to_pylist() if table.num_columns else []
        return {"user": users[0] if users else None, "role": None}

    # -- metadata -------------------------------------------------------------------
    def _metadata(self, conn: Any, call: str, **kwargs: Any) -> pa.Table:
        cursor = conn.cursor()
        try:
            getattr(cursor, call)(**kwargs)
            return cursor.fetchall_arrow()
        finally:
            _close_cursor(cursor)

    def list_catalogs(self, conn: Any) -> list[str]:
        table = self._metadata(conn, "catalogs")
        return sorted({str(c) for c in _column(table, "TABLE_CAT", "catalog") if c})

    def list_schemas(self, conn: Any, catalog: str) -> list[str]:
        table = self._metadata(conn, "schemas", catalog_name=catalog)
        rows = zip(
            _column(table, "TABLE_CATALOG", "TABLE_CAT"),
            _column(table, "TABLE_SCHEM"),
            strict=True,
        )
        return sorted({str(s) for c, s in rows if s and (c is None or _same(c, catalog))})

    def list_tables(self, conn: Any, catalog: str, schema: str) -> list[dict[str, Any]]:
        table = self._metadata(
            conn,
            "tables",
            catalog_name=catalog,
            schema_name=schema,
        )
        out: dict[str, str] = {}
        for cat, sch, name, kind in zip(
            _column(table, "TABLE_CAT"),
            _column(table, "TABLE_SCHEM"),
            _column(table, "TABLE_NAME"),
            _column(table, "TABLE_TYPE"),
            strict=True,
        ):
            if not name or not _same(sch, schema) or (cat is not None and not _same(cat, catalog)):
                continue
            out[str(name)] = "VIEW" if "VIEW" in str(kind or "").upper() else "TABLE"
        return [{"name": n, "type": t} for n, t in sorted(out.items())]

    def list_columns(
        self, conn: Any, catalog: str, schema: str, table: str
    ) -> list[dict[str, Any]]:
        result = self._metadata(
            conn,
            "columns",
            catalog_name=catalog,
            schema_name=schema,
            table_name=table,
        )
        rows: list[tuple[Any, str, str, bool]] = []
        for cat, sch, tab, name, type_name, nullable, is_nullable, pos in zip(
            _column(result, "TABLE_CAT"),
            _column(result, "TABLE_SCHEM"),
            _column(result, "TABLE_NAME"),
            _column(result, "COLUMN_NAME"),
            _column(result, "TYPE_NAME"),
            _column(result, "NULLABLE"),
            _column(result, "IS_NULLABLE"),
            _column(result, "ORDINAL_POSITION"),
            strict=True,
        ):
            if not name or not _same(tab, table) or not _same(sch, schema):
                continue
            if cat is not None and not _same(cat, catalog):
                continue
            if nullable is not None:
                is_null = int(nullable) != 0  # java.sql.DatabaseMetaData.columnNoNulls == 0
            else:
                is_null = str(is_nullable or "YES").upper() != "NO"
            rows.append((pos if pos is not None else len(rows), str(name), str(type_name), is_null))
        rows.sort(key=lambda r: r[0])
        return [{"name": n, "type": t, "nullable": nl} for _p, n, t, nl in rows]

    # -- errors -------------------------------------------------------------------
    def is_auth_error(self, exc: BaseException) -> bool:
        """Reconnect once: the token was rejected (401), or the warehouse no longer knows
        the session (it restarted, or the session expired)."""
        if isinstance(exc, ConsentRequired):
            return True
        chain = _chain(exc)
        if any(_http_code(e) == 401 for e in chain):
            return True
        return any(SESSION_GONE in str(e) for e in chain)

    def translate_error(self, exc: BaseException, info: ConnectionInfo) -> ConnAuthError | None:
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
                    f"Databricks at {host} has no SQL endpoint at {http_path!r} "
                    f"(HTTP 404: {reason}).",
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
    return _scrub(text).strip()


def _query_fix(exc: BaseException) -> str | None:
    text = str(exc)
    if "TABLE_OR_VIEW_NOT_FOUND" in text:
        return "check the catalog.schema.table name, and that you were granted SELECT on it"
    if "UNBOUND_SQL_PARAMETER" in text:
        return "pass every :name the SQL uses in --params (a dict), and only those"
    if "PARSE_SYNTAX_ERROR" in text:
        return "fix the SQL syntax (Databricks SQL dialect)"
    return None


CONNECTOR = DatabricksConnector()
