"""Snowflake through snowflake-connector-python with the user's OAuth token.

Both credential kinds log in with ``authenticator="oauth"``: an IdP access token
(External OAuth with the IdP's JWKS) or a JWT the broker minted and signed
(External OAuth with ``EXTERNAL_OAUTH_RSA_PUBLIC_KEY``). Queries are bound at the
server (``paramstyle="qmark"``); named ``:name`` parameters are rewritten to ``?``
by a small tokenizer that leaves strings, quoted identifiers, comments, ``$$``
bodies, ``::`` casts and ``col:path`` semi-structured access alone. Results come
through the driver's Arrow path (``fetch_arrow_all`` / ``fetch_pandas_all``).

The driver is imported only inside methods.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..core.errors import ConfigError, ConnAuthError
from .base import (
    ConnectionInfo,
    Connector,
    Credential,
    Progress,
    QueryError,
    TooManyRows,
    with_token,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``--params``: a dict for ``:name`` placeholders, or a list/tuple for ``?``.
SnowflakeParams = Mapping[str, Any] | Sequence[Any] | None

#: Connection parameters passed to ``snowflake.connector.connect`` when present.
SESSION_PARAMS = ("warehouse", "database", "schema", "role")

#: How long an interrupted query waits for the cancel request and the driver call.
CANCEL_GRACE_SECONDS = 5.0

# -- Snowflake error numbers (errno on the driver's exceptions) -------------------
INVALID_TOKEN = 390303
TOKEN_EXPIRED = 390318
BAD_USER = 390100
ROLE_NOT_IN_TOKEN = 390317
USER_MISMATCH = 390309
AUTHENTICATOR_NOT_SUPPORTED = 390102
SESSION_GONE = (390104, 390112, 390114)  # login again / session expired / token expired
QUERY_CANCELLED = 604
OBJECT_NOT_FOUND = 2003
# connector 5.x error kinds (IO, timeout) and the 4.x "could not connect" numbers
NETWORK_ERRNOS = frozenset({4, 14, 250001, 250003, 251011, 251012})

AUTH_RETRY_ERRNOS = frozenset({INVALID_TOKEN, TOKEN_EXPIRED, *SESSION_GONE})

_ERR_PREFIX = re.compile(r"^(?:\s*\d{6} \([0-9A-Z]{5}\):\s*)+")
_REQUEST_ID = re.compile(r"\s*\(request_id=[^)]*\)\s*$")
_JWT_LIKE = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")

# One regex over the SQL: the alternatives that must be kept verbatim come first, so a
# ``:name`` inside a string, quoted identifier, comment or $$ body is never a parameter.
_SQL_TOKENS = re.compile(
    r"""
      (?P<keep>
          '(?:[^'\\]|\\.|'')*'?        # string literal ('' and \' escapes)
        | "(?:[^"]|"")*"?              # quoted identifier
        | --[^\n]*                     # line comments
        | //[^\n]*
        | /\*.*?(?:\*/|\Z)             # block comment
        | \$\$.*?(?:\$\$|\Z)           # dollar-quoted body
        | ::                           # cast
      )
    | (?P<escaped>\\:)                 # \: is a literal colon
    | (?<![\w$"\])]):(?P<name>[A-Za-z_][A-Za-z0-9_]*)   # :name, not col:path
    """,
    re.VERBOSE | re.DOTALL,
)


class SnowflakeAuthError(ConnAuthError):
    """Snowflake refused the credential at login (the code names the reason)."""

    code = "snowflake_auth_error"
    status = 401


class WarehouseUnreachable(ConnAuthError):
    code = "warehouse_unreachable"
    status = 502


def named_to_qmark(sql: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``WHERE region = :region`` + ``{"region": "EU"}`` → ``WHERE region = ?``, ``["EU"]``.

    Placeholders in strings, quoted identifiers, comments and ``$$`` bodies stay text;
    ``::`` casts and ``col:field`` paths are not placeholders; ``\\:name`` is a literal.
    Unused entries of ``params`` are ignored; a missing one raises :class:`QueryError`.
    """
    values: list[Any] = []
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group("keep") is not None:
            return m.group("keep")
        if m.group("escaped") is not None:
            return ":"
        name = m.group("name")
        if name not in params:
            missing.append(name)
            return m.group(0)
        values.append(params[name])
        return "?"

    out = _SQL_TOKENS.sub(sub, sql)
    if missing:
        names = ", ".join(f":{n}" for n in dict.fromkeys(missing))
        given = ", ".join(sorted(map(str, params))) or "none"
        raise QueryError(
            f"The query uses {names} but --params has no value for it (given: {given}).",
            "add the name to --params (a dict such as {'region': 'EU'}), "
            "or write \\: for a literal colon",
        )
    return out, values


def _bind(sql: str, params: SnowflakeParams) -> tuple[str, list[Any] | None]:
    if params is None:
        return sql, None
    if isinstance(params, Mapping):
        out, values = named_to_qmark(sql, params)
        return out, values if values else None
    if isinstance(params, list | tuple):
        return sql, list(params)
    raise QueryError(
        f"--params must be a dict (for :name) or a list (for ?), not {type(params).__name__}.",
        "pass e.g. {'region': 'EU'} with :region in the SQL",
    )


def _quote_ident(name: str) -> str:
    """A quoted Snowflake identifier (exact case; embedded quotes doubled)."""
    return '"' + str(name).replace('"', '""') + '"'


def _is_snowflake_error(exc: BaseException) -> bool:
    return any(c.__module__.startswith("snowflake.connector") for c in type(exc).__mro__)


def _clean_message(exc: BaseException) -> str:
    """The driver's message without the repeated ``000000 (XXXXX):`` prefixes, the request
    id or anything that looks like a token."""
    raw = getattr(exc, "msg", None) or str(exc)
    text = _ERR_PREFIX.sub("", str(raw)).strip()
    text = _REQUEST_ID.sub("", text).strip()
    return _JWT_LIKE.sub("[redacted]", text)


def _errno(exc: BaseException) -> int | None:
    errno = getattr(exc, "errno", None)
    return errno if isinstance(errno, int) else None


class SnowflakeConnector(Connector):
    name: ClassVar[str] = "snowflake"
    extra: ClassVar[str] = "snowflake"
    driver_module: ClassVar[str] = "snowflake.connector"

    # -- connections --------------------------------------------------------------
    def connect(self, info: ConnectionInfo, cred: Credential) -> Any:
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
            lambda cur: cur.fetch_arrow_all(force_return_table=True),
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
            lambda cur: cur.fetch_pandas_all(),
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
        fetch: Callable[[Any], T],
        count: Callable[[T], int],
    ) -> T:
        operation, bound = _bind(sql, params)
        cur = conn.cursor()
        try:
            if progress is not None:
                progress("running")
            if bound is None:
                self._interruptible(lambda: cur.execute(operation), conn, cur, progress)
            else:
                self._interruptible(lambda: cur.execute(operation, bound), conn, cur, progress)
            rows = cur.rowcount
            known = isinstance(rows, int) and rows >= 0
            if max_rows is not None and known and rows > max_rows:
                raise self._too_many(rows, max_rows)
            if progress is not None:
                progress(f"fetching {rows:,} rows" if known else "fetching")
            result = self._interruptible(lambda: fetch(cur), conn, cur, progress)
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
        self, fn: Callable[[], T], conn: Any, cur: Any, progress: Progress | None
    ) -> T:
        """Run a blocking driver call in a worker thread so Ctrl-C reaches the kernel at
        once (connector 5.x blocks in native code with the GIL released); on
        KeyboardInterrupt cancel the query at Snowflake, then re-raise."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed to the calling thread
                box["error"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=work, name="connauth-snowflake-query", daemon=True)
        worker.start()
        try:
            while not done.wait(0.1):
                pass
        except KeyboardInterrupt:
            if progress is not None:
                progress("cancelling")
            self.cancel(conn, cur)
            done.wait(CANCEL_GRACE_SECONDS)
            raise
        if "error" in box:
            error: BaseException = box.pop("error")
            try:
                raise error
            finally:
                del error
        value: T = box.pop("value")
        return value

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
                    log.info("Snowflake abort_query(%s) failed: %s", qid, _clean_message(exc))
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
                    _clean_message(exc),
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
        return _is_snowflake_error(exc) and _errno(exc) in AUTH_RETRY_ERRNOS

    def translate_error(self, exc: BaseException, info: ConnectionInfo) -> ConnAuthError | None:
        if isinstance(exc, ConnAuthError):
            return exc
        if not _is_snowflake_error(exc):
            return None
        errno = _errno(exc)
        detail = _clean_message(exc)
        jwt_mode = info.auth == "oauth-jwt"
        name = info.name
        role = info.params.get("role")

        if errno == INVALID_TOKEN:
            if jwt_mode:
                return SnowflakeAuthError(
                    f"Snowflake rejected the JWT that Jupyter minted for {name!r} "
                    "(390303 Invalid OAuth access token).",
                    "the public key in the security integration does not match the broker's "
                    "private key: set EXTERNAL_OAUTH_RSA_PUBLIC_KEY to the broker's public key "
                    f"(see %sql_connector doctor {name}). If the key matches, the issuer "
                    "differs: set EXTERNAL_OAUTH_ISSUER to the exact Jupyter URL (as the "
                    "broker's public_url, trailing slash included), and put the connection's "
                    "JWT audience in EXTERNAL_OAUTH_AUDIENCE_LIST.",
                    code="snowflake_invalid_token",
                )
            return SnowflakeAuthError(
                f"Snowflake rejected the identity provider's access token for {name!r} "
                "(390303 Invalid OAuth access token).",
                "the IdP's token is not accepted: check EXTERNAL_OAUTH_ISSUER (the token's "
                "iss, exactly), EXTERNAL_OAUTH_JWS_KEYS_URL (the IdP's JWKS URL) and "
                "EXTERNAL_OAUTH_AUDIENCE_LIST (the token's aud: the resource/scopes the "
                "connection requests) in the Snowflake security integration.",
                code="snowflake_invalid_token",
            )
        if errno == TOKEN_EXPIRED:
            expired_fix = (
                "run the cell again: a fresh JWT is minted on reconnect. If it keeps "
                "failing, check the Jupyter server's clock (the JWT is valid 10 minutes)."
                if jwt_mode
                else "run the cell again: the token is refreshed and the connection "
                "reopened automatically. If it keeps failing, re-authorize "
                f"(%sql_connector authorize {name}) and check the server clocks."
            )
            return SnowflakeAuthError(
                f"The access token for {name!r} has expired (390318 OAuth access token expired).",
                expired_fix,
                code="snowflake_token_expired",
            )
        if errno == BAD_USER:
            return SnowflakeAuthError(
                f"Snowflake has no enabled user for this token on {name!r} "
                "(390100 Incorrect username or password was specified).",
                "create a Snowflake user whose LOGIN_NAME is the user's email (or set "
                "EXTERNAL_OAUTH_SNOWFLAKE_USER_MAPPING_ATTRIBUTE = 'EMAIL_ADDRESS' to match "
                "users by EMAIL), make sure EXTERNAL_OAUTH_TOKEN_USER_MAPPING_CLAIM names "
                "a claim the token carries (email), and that the user is not disabled.",
                code="snowflake_unknown_user",
            )
        if errno == ROLE_NOT_IN_TOKEN:
            which = f"role {role!r}" if role else "the user's default role"
            carried = (
                "the JWT carries session:role:<role> for the connection's role"
                if jwt_mode
                else "the token's scopes carry session:role:<ROLE> or session:role-any"
            )
            return SnowflakeAuthError(
                f"Snowflake refused {which} for {name!r}: it is not listed in the access "
                "token, not granted to the user, or blocked (390317).",
                "set EXTERNAL_OAUTH_ANY_ROLE_MODE = 'ENABLE' in the security integration "
                "(with session:role-any in the connection's scopes), or grant the role to "
                f"the user (GRANT ROLE ... TO USER ...), or use the role the token carries "
                f"({carried}). ACCOUNTADMIN, ORGADMIN and SECURITYADMIN are blocked for "
                "OAuth by default.",
                code="snowflake_role_not_in_token",
            )
        if errno == USER_MISMATCH:
            return SnowflakeAuthError(
                f"The user set in connection {name!r} differs from the user of the token (390309).",
                "remove user from the connection's parameters: the token decides the user.",
                code="snowflake_user_mismatch",
            )
        if errno == AUTHENTICATOR_NOT_SUPPORTED:
            return SnowflakeAuthError(
                f"The Snowflake account of {name!r} does not accept OAuth logins (390102).",
                "create an EXTERNAL_OAUTH security integration for the account and ENABLE it "
                "(see notebooks/snowflake.ipynb).",
                code="snowflake_oauth_not_enabled",
            )
        if errno in SESSION_GONE:
            return SnowflakeAuthError(
                f"The Snowflake session of {name!r} has expired ({errno}).",
                "run the cell again: the connection is reopened with a fresh token.",
                code="snowflake_session_expired",
            )
        if errno == QUERY_CANCELLED:
            return QueryError(f"The query was cancelled: {detail}")
        network = errno in NETWORK_ERRNOS or (
            type(exc).__name__ == "OperationalError" and (errno is None or errno < 1000)
        )
        if network:
            account = info.params.get("account") or info.driver_options.get("account")
            host = info.driver_options.get("host") or f"{account}.snowflakecomputing.com"
            port = info.driver_options.get("port")
            where = f"{host}:{port}" if port else str(host)
            return WarehouseUnreachable(
                f"Could not reach Snowflake account {account!r} at {where} for {name!r}: {detail}",
                "check the account identifier (orgname-accountname, without "
                ".snowflakecomputing.com), the network, proxy and firewall between this "
                "kernel and Snowflake, and Snowflake's status page.",
            )
        if errno is not None and 390000 <= errno < 391000:
            return SnowflakeAuthError(
                f"Snowflake refused the login for {name!r}: {detail}",
                "check the Snowflake security integration for this connection "
                f"(%sql_connector doctor {name}).",
                code="snowflake_login_error",
            )
        sqlstate = getattr(exc, "sqlstate", None)
        code = f"{errno:06d}" if errno is not None else "error"
        head = f"Snowflake error {code} ({sqlstate})" if sqlstate else f"Snowflake error {code}"
        fix: str | None = None
        if errno == OBJECT_NOT_FOUND:
            fix = (
                "check the name (unquoted names are upper-cased) and the database/schema, "
                "and that your role may use it (SELECT CURRENT_ROLE(); USE ROLE ...)"
            )
        return QueryError(f"{head}: {detail}", fix)


CONNECTOR = SnowflakeConnector()
