"""Snowflake through snowflake-connector-python with the user's OAuth token.

Both credential kinds log in with ``authenticator="oauth"``: an IdP access token
(External OAuth with the IdP's JWKS) or a JWT the broker minted and signed
(External OAuth with ``EXTERNAL_OAUTH_RSA_PUBLIC_KEY``). Queries are bound at the
server (``paramstyle="qmark"``); named ``:name`` parameters are rewritten to ``?``
by a small tokenizer that leaves strings, quoted identifiers, comments, ``$$``
bodies, ``::`` casts and ``col:path`` semi-structured access alone. Results come
through the driver's Arrow path (``fetch_arrow_all`` / ``fetch_pandas_all``), which
downloads large results as chunks from presigned URLs in parallel.

The driver is imported only inside methods.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..core.errors import (
    ConfigError,
    ConnAuthError,
    SnowflakeAuthError,
    TooManyRows,
    WarehouseUnreachable,
)
from .base import (
    CANCEL_GRACE_SECONDS,
    PANDAS_OPTIONS,
    ConnectionInfo,
    Connector,
    Credential,
    Progress,
    Renew,
    interruptible,
    note_query_id,
    with_token,
)
from .snowflake_errors import (
    AUTH_RETRY_ERRNOS,
    SESSION_GONE,
    clean_message,
    errno_of,
    is_snowflake_error,
    translate,
)
from .snowflake_sql import SnowflakeParams, bind, named_to_qmark
from .streaming import SMALL_ROWS, batches_to_pandas

__all__ = [
    "CONNECTOR",
    "SnowflakeAuthError",
    "SnowflakeConnector",
    "SnowflakeParams",
    "WarehouseUnreachable",
    "named_to_qmark",
]

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

T = TypeVar("T")


#: Connection parameters passed to ``snowflake.connector.connect`` when present
#: (``host``: a PrivateLink or other non-default host name for the account).
SESSION_PARAMS = ("warehouse", "database", "schema", "role", "host")


def _quote_ident(name: str) -> str:
    """A quoted Snowflake identifier (exact case; embedded quotes doubled)."""
    return '"' + str(name).replace('"', '""') + '"'


class SnowflakeConnector(Connector):
    name: ClassVar[str] = "snowflake"
    extra: ClassVar[str] = "snowflake"
    driver_module: ClassVar[str] = "snowflake.connector"

    # -- connections --------------------------------------------------------------
    def connect(self, info: ConnectionInfo, cred: Credential, renew: Renew | None = None) -> Any:
        """Log in with ``cred``. The session then lives on Snowflake's own session token
        (renewed by the driver with the master token when Snowflake answers 390112) and
        outlives the OAuth token: ``renew`` is not needed after login. The session ends
        when the master token expires (390114: :meth:`session_gone`, the caller logs in
        again with what the broker has then)."""
        sf = self.driver()
        params = info.params
        options = with_token(info.driver_options, cred.token)
        account = params.get("account") or options.get("account")
        if not account:
            raise ConfigError(
                "account",
                f"connection {info.name!r} has no Snowflake account",
                "set account (the account identifier, e.g. 'myorg-myaccount') in the connection",
            )
        # IdP access tokens and broker-minted JWTs both go through External OAuth
        kwargs: dict[str, Any] = {
            "account": account,
            "authenticator": "oauth",
            "token": cred.token,
            "paramstyle": "qmark",
        }
        for key in SESSION_PARAMS:
            value = params.get(key)
            if value:
                kwargs[key] = value
        kwargs.update(options)
        return sf.connect(**kwargs)

    # -- queries ----------------------------------------------------------------
    def query_arrow(
        self,
        conn: Any,
        sql: str,
        params: SnowflakeParams = None,
        *,
        max_rows: int | None = None,
        progress: Progress | None = None,
    ) -> pa.Table:
        table: pa.Table = self._query(
            conn,
            sql,
            params,
            max_rows,
            progress,
            lambda cur, stop: cur.fetch_arrow_all(force_return_table=True),
            lambda t: int(t.num_rows),
        )
        return table

    def query_pandas(
        self,
        conn: Any,
        sql: str,
        params: SnowflakeParams = None,
        *,
        max_rows: int | None = None,
        progress: Progress | None = None,
    ) -> pd.DataFrame:
        df: pd.DataFrame = self._query(
            conn,
            sql,
            params,
            max_rows,
            progress,
            _fetch_pandas,
            len,
        )
        return df

    def _query(
        self,
        conn: Any,
        sql: str,
        params: SnowflakeParams,
        max_rows: int | None,
        progress: Progress | None,
        fetch: Callable[[Any, threading.Event], T],
        count: Callable[[T], int],
    ) -> T:
        operation, bound = bind(sql, params)
        cur = conn.cursor()
        stop = threading.Event()  # set on Ctrl-C: the fetch stops between batches
        try:
            if progress is not None:
                progress("running")
            if bound is None:
                self._interruptible(lambda: cur.execute(operation), conn, cur, progress, stop)
            else:
                self._interruptible(
                    lambda: cur.execute(operation, bound), conn, cur, progress, stop
                )
            note_query_id(progress, getattr(cur, "sfqid", None))
            rows = cur.rowcount
            known = isinstance(rows, int) and rows >= 0
            if max_rows is not None and known and rows > max_rows:
                raise self._too_many(rows, max_rows)
            if progress is not None:
                progress(f"fetching {rows:,} rows" if known else "fetching")
            result = self._interruptible(lambda: fetch(cur, stop), conn, cur, progress, stop)
            if max_rows is not None and not known and count(result) > max_rows:
                raise self._too_many(count(result), max_rows)
            return result
        finally:
            self.close(cur)

    @staticmethod
    def _too_many(rows: int, max_rows: int) -> TooManyRows:
        return TooManyRows(
            f"The query returned {rows:,} rows, more than the limit of {max_rows:,}.",
            "add LIMIT to the query, or raise --max-rows",
        )

    def _interruptible(
        self,
        fn: Callable[[], T],
        conn: Any,
        cur: Any,
        progress: Progress | None,
        stop: threading.Event,
    ) -> T:
        """:func:`~.base.interruptible`; on Ctrl-C ``stop`` is set (a fetch stops before
        its next batch) and the query is cancelled at Snowflake."""

        def on_interrupt() -> None:
            stop.set()
            if progress is not None:
                progress("cancelling")
            self.cancel(conn, cur)

        return interruptible(fn, on_interrupt)

    def cancel(self, conn: Any, cur: Any) -> str | None:
        """Best effort: abort the cursor's query by id (when the driver knows it), else
        every running query of this session (the id is not known until execute returns).
        Returns what was sent, for logs and tests."""
        outcome: list[str] = []

        def attempt() -> None:
            qid = getattr(cur, "sfqid", None)
            if qid:
                try:
                    aborted = cur.abort_query(qid)
                    outcome.append(f"abort_query {qid}: {aborted}")
                    log.info("Snowflake query %s: abort requested (aborted=%s)", qid, aborted)
                    return
                except Exception as exc:
                    log.info("Snowflake abort_query(%s) failed: %s", qid, clean_message(exc))
                    outcome.append(f"abort_query {qid}: failed")
            session_id = getattr(conn, "session_id", None)
            if session_id is None:
                return
            try:
                with conn.cursor() as c:
                    c.execute("SELECT SYSTEM$CANCEL_ALL_QUERIES(?)", (session_id,))
                outcome.append(f"cancel_all_queries {session_id}: sent")
                log.info("Snowflake session %s: running queries cancelled", session_id)
            except Exception as exc:
                outcome.append(f"cancel_all_queries {session_id}: failed")
                log.info(
                    "Snowflake SYSTEM$CANCEL_ALL_QUERIES(%s) failed: %s",
                    session_id,
                    clean_message(exc),
                )

        t = threading.Thread(target=attempt, name="connauth-snowflake-cancel", daemon=True)
        t.start()
        t.join(CANCEL_GRACE_SECONDS)
        return "; ".join(outcome) or None

    def whoami(self, conn: Any) -> dict[str, Any]:
        row = self._rows(conn, "SELECT CURRENT_USER(), CURRENT_ROLE()")[0]
        return {"user": row[0], "role": row[1]}

    # -- metadata -------------------------------------------------------------------
    def _rows(self, conn: Any, sql: str, params: Sequence[Any] | None = None) -> list[Any]:
        cur = conn.cursor()
        try:
            if params is None:
                cur.execute(sql)
            else:
                cur.execute(sql, list(params))
            rows: list[Any] = cur.fetchall()  # a handful of metadata rows
            return rows
        finally:
            self.close(cur)

    def _named_rows(self, conn: Any, sql: str) -> list[dict[str, Any]]:
        """SHOW output as dicts keyed by lower-case column name."""
        cur = conn.cursor()
        try:
            cur.execute(sql)
            names = [str(d[0]).lower() for d in cur.description or ()]
            return [dict(zip(names, row, strict=False)) for row in cur.fetchall()]
        finally:
            self.close(cur)

    def list_catalogs(self, conn: Any) -> list[str]:
        # SHOW works without a current database and lists what the role can see
        return [str(r["name"]) for r in self._named_rows(conn, "SHOW TERSE DATABASES")]

    def list_schemas(self, conn: Any, catalog: str) -> list[str]:
        view = f"{_quote_ident(catalog)}.information_schema.schemata"  # quoted identifier
        sql = f"SELECT schema_name FROM {view} ORDER BY schema_name"  # noqa: S608
        return [str(r[0]) for r in self._rows(conn, sql)]

    def list_tables(self, conn: Any, catalog: str, schema: str) -> list[dict[str, Any]]:
        # SHOW OBJECTS lists tables and views alike (information_schema.tables has views
        # in Snowflake but not in every emulator)
        sql = f"SHOW TERSE OBJECTS IN SCHEMA {_quote_ident(catalog)}.{_quote_ident(schema)}"
        out = []
        for r in self._named_rows(conn, sql):
            kind = str(r.get("kind") or "TABLE").upper()
            out.append({"name": str(r["name"]), "type": "VIEW" if "VIEW" in kind else "TABLE"})
        return sorted(out, key=lambda t: t["name"])

    def list_columns(
        self, conn: Any, catalog: str, schema: str, table: str
    ) -> list[dict[str, Any]]:
        view = f"{_quote_ident(catalog)}.information_schema.columns"  # quoted identifier
        sql = (
            f"SELECT column_name, data_type, is_nullable FROM {view} "  # noqa: S608
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position"
        )
        return [
            {"name": str(r[0]), "type": str(r[1]), "nullable": str(r[2]).upper() == "YES"}
            for r in self._rows(conn, sql, [schema, table])
        ]

    # -- errors -------------------------------------------------------------------
    def is_auth_error(self, exc: BaseException) -> bool:
        return is_snowflake_error(exc) and errno_of(exc) in AUTH_RETRY_ERRNOS

    def session_gone(self, exc: BaseException) -> bool:
        # the driver renews an expired session token itself; what reaches us is a
        # session it cannot renew (ReauthenticationRequest: master token expired)
        if type(exc).__name__ == "ReauthenticationRequest":
            return True
        return is_snowflake_error(exc) and errno_of(exc) in SESSION_GONE

    def translate_error(self, exc: BaseException, info: ConnectionInfo) -> ConnAuthError | None:
        return translate(exc, info)


def _fetch_pandas(cur: Any, stop: threading.Event) -> pd.DataFrame:
    """The result as pandas, one Arrow batch (one downloaded chunk) at a time into
    columns of ``rowcount`` rows (:mod:`.streaming`), so the whole result never exists
    as Arrow and pandas at once; small and empty results through ``fetch_pandas_all``
    (an empty one's dtypes come from the result's column metadata)."""
    rows = cur.rowcount
    if isinstance(rows, int) and 0 <= rows <= SMALL_ROWS:
        return cur.fetch_pandas_all(**PANDAS_OPTIONS)
    return batches_to_pandas(
        cur.fetch_arrow_batches(),
        rows=rows if isinstance(rows, int) and rows > 0 else None,
        empty=lambda: cur.fetch_pandas_all(**PANDAS_OPTIONS),
        stop=stop,
    )


CONNECTOR = SnowflakeConnector()
