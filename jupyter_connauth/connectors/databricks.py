"""Databricks SQL through the official ``databricks-sql-connector`` (4.x, Thrift).

Auth: the driver gets a ``credentials_provider`` backed by the broker
(:func:`credentials_provider`): the driver's ``ExternalAuthProvider`` calls its header
factory for the ``Authorization`` header, and the factory answers the session's current
token, renewed through the broker shortly before it expires, so a statement and its
session outlive any one token (without a renewer, a static ``access_token`` as before).
The 4.x driver wraps every credential in its ``TokenFederationProvider``
(``databricks/sql/auth/auth.py`` ``get_auth_provider``; from databricks-sql-connector
4.1.4; our floor is 4.2.5, the first that does not retry a 404):
when the token's issuer host differs from the workspace host it first exchanges the
token at ``https://<server_hostname>/oidc/v1/token`` (RFC 8693,
``return_original_token_if_authenticated=true``) and sends what comes back; when the
issuer is the workspace itself it sends the token unchanged. Databricks OAuth token
federation *requires* the exchange for tokens from an external OIDC IdP (Okta,
Keycloak, ...), and for Entra ID tokens the workspace hands the original token back
(docs.databricks.com, "Authenticate with an identity provider token" / "Configure a
federation policy"). The driver caches the exchanged token until one minute before its
``exp`` and then calls the provider again, so a renewed token reaches it before the
exchanged one expires; a token with less than a minute left is looked up per request.
A token that is not a JWT (no readable ``exp``) is cached by the driver for an hour.

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

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError, ConnAuthError, TooManyRows
from .base import (
    CANCEL_GRACE_SECONDS,
    ConnectionInfo,
    Connector,
    Credential,
    Params,
    Progress,
    Renew,
    interruptible,
    note_query_id,
    with_token,
)
from .databricks_errors import SESSION_GONE, _chain, is_auth_error, scrub, translate

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

#: Connect defaults that keep an unreachable host from retrying for minutes;
#: the connection's ``driver_options`` override them.
DEFAULT_DRIVER_OPTIONS: dict[str, Any] = {
    "_retry_stop_after_attempts_count": 4,
    "_retry_delay_min": 0.25,
    "user_agent_entry": "jupyter-connauth",
    # large results as CloudFetch links, downloaded in parallel (the driver's default,
    # stated so an admin's driver_options can see and override it)
    "use_cloud_fetch": True,
}


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
        log.debug("Databricks cursor close failed: %s", scrub(str(exc)))


def _cancel(cursor: Any) -> None:
    """Cancel the cursor's statement. Interrupted during ``execute``, the driver learns
    the statement's id only when ExecuteStatement answers (the warehouse may hold that
    answer for its direct results, seconds on a busy warehouse): wait for it, since a
    cancel without it is a no-op and the statement would run on."""
    deadline = time.monotonic() + CANCEL_GRACE_SECONDS
    while getattr(cursor, "active_command_id", True) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        cursor.cancel()
    except Exception as exc:  # the interrupt matters more than the cancel's outcome
        log.warning("Databricks: cancelling the statement failed: %s", scrub(str(exc)))


def _column(table: pa.Table, *names: str) -> list[Any]:
    for name in names:
        if name in table.column_names:
            return list(table.column(name).to_pylist())
    return [None] * table.num_rows


def _same(a: Any, b: str) -> bool:
    """Metadata names compare case-insensitively (Unity Catalog lower-cases them)."""
    return isinstance(a, str) and a.lower() == b.lower()


def credentials_provider(renew: Renew) -> Any:
    """A ``databricks.sql`` ``CredentialsProvider`` asking ``renew`` for the token on every
    header the driver builds (``ExternalAuthProvider.add_headers``)."""
    from databricks.sql.auth.authenticators import CredentialsProvider

    class BrokerCredentials(CredentialsProvider):
        def auth_type(self) -> str:
            return "jupyter-connauth"

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            def headers() -> dict[str, str]:
                return {"Authorization": f"Bearer {renew().token}"}

            return headers

        def __repr__(self) -> str:
            return "BrokerCredentials()"

    return BrokerCredentials()


# -- errors -------------------------------------------------------------------------


class DatabricksConnector(Connector):
    name = "databricks"
    extra = "databricks"
    driver_module = "databricks.sql"

    # -- connections --------------------------------------------------------------
    def connect(self, info: ConnectionInfo, cred: Credential, renew: Renew | None = None) -> Any:
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
        }
        if renew is None:
            kwargs["access_token"] = cred.token
        else:
            kwargs["credentials_provider"] = credentials_provider(renew)
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

            def on_interrupt() -> None:
                _report(progress, "cancelling")
                _cancel(cursor)

            _report(progress, "running query")
            # on a worker thread: an interrupt must not cut ExecuteStatement's answer
            interruptible(lambda: cursor.execute(sql, parameters), on_interrupt)
            note_query_id(progress, getattr(cursor, "query_id", None))
            _report(progress, "fetching results")
            try:  # the statement's id is known now: cancel from this thread
                if max_rows is None:
                    table = cursor.fetchall_arrow()
                else:
                    table = cursor.fetchmany_arrow(max_rows + 1)
            except KeyboardInterrupt:
                on_interrupt()
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
        return is_auth_error(exc)

    def session_gone(self, exc: BaseException) -> bool:
        return any(SESSION_GONE in str(e) for e in _chain(exc))

    def translate_error(self, exc: BaseException, info: ConnectionInfo) -> ConnAuthError | None:
        return translate(exc, info)


CONNECTOR = DatabricksConnector()
