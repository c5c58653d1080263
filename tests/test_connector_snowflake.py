"""SnowflakeConnector against the local Snowflake (fakesnow + External OAuth checks) with
real access tokens from the test IdP (oidc-provider) and JWTs minted like the broker's."""

from __future__ import annotations

import _thread
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from jupyter_connauth.connectors import get_connector
from jupyter_connauth.connectors.base import ConnectionInfo, Credential
from jupyter_connauth.connectors.snowflake import (
    CONNECTOR,
    SnowflakeConnector,
    named_to_qmark,
)
from jupyter_connauth.core.errors import (
    ConnAuthError,
    DriverMissing,
    QueryError,
    SnowflakeAuthError,
    TooManyRows,
    WarehouseUnreachable,
)
from tests.idp_fixture import TestIdP, free_port
from tests.servers.keys import new_key, public_pem
from tests.servers.snowflake.fixture import USERS, SnowflakeServer, oauth_integrations
from tests.tokens import user_token

pytestmark = pytest.mark.timeout(180)

SF_RESOURCE = "https://snowflake.local"
JUPYTER_URL = "http://127.0.0.1:8888/"  # stand-in for the broker's public URL (JWT issuer)
BROKER_AUDIENCE = "snowflake:connauth"
BIG_ROWS = 3000
IDP_SCOPES = "openid email session:role-any"

SALES = {  # the server's default SALES rows per owner, by amount
    "ALICE": [("AMER", 75.0), ("EMEA", 120.5), ("APAC", 310.25)],
    "BOB": [("EMEA", 42.0), ("AMER", 999.99)],
}


def mint(
    key: rsa.RSAPrivateKey,
    email: str = "alice@example.com",
    *,
    iss: str = JUPYTER_URL,
    aud: str = BROKER_AUDIENCE,
    scp: str = "session:role:ANALYST",
    lifetime: int = 600,
) -> str:
    """A JWT as the broker mints it (behaviour 6): RS256, email, scp role, 10 min, jti."""
    now = int(time.time())
    claims = {
        "iss": iss,
        "aud": aud,
        "sub": email,
        "email": email,
        "scp": scp,
        "iat": now - (700 if lifetime < 0 else 0),
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm="RS256")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sf_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestIdP]:
    with TestIdP(
        workdir=tmp_path_factory.mktemp("sf-idp"),
        resources={SF_RESOURCE: {"audience": SF_RESOURCE, "scopes": ["session:role-any"]}},
        extra_scopes=["sql"],
        access_token_ttl=1800,
    ) as idp:
        yield idp


@pytest.fixture(scope="module")
def broker_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def sf(sf_idp: TestIdP, broker_key: rsa.RSAPrivateKey) -> Iterator[SnowflakeServer]:
    SnowflakeServer.ensure_env()
    config = {
        "integrations": oauth_integrations(
            idp_issuer=sf_idp.issuer,
            jwks_url=sf_idp.discovery()["jwks_uri"],
            idp_audience=SF_RESOURCE,
            broker_issuer=JUPYTER_URL,
            broker_public_pem=public_pem(broker_key),
            broker_audience=BROKER_AUDIENCE,
        ),
        "users": USERS,
        "seed_big_rows": BIG_ROWS,
    }
    with SnowflakeServer(config) as server:
        yield server


def info_for(sf: SnowflakeServer, auth: str = "oauth", role: str | None = None) -> ConnectionInfo:
    params: dict[str, Any] = {"account": "connauth", "database": "CONNAUTH", "schema": "PUBLIC"}
    if role:
        params["role"] = role
    return ConnectionInfo(
        name="sales",
        connector="snowflake",
        auth=auth,
        params=params,
        driver_options=sf.driver_options(),
    )


@pytest.fixture(scope="module")
def tokens(sf_idp: TestIdP) -> dict[str, str]:
    return {
        login: user_token(sf_idp, login, scopes=IDP_SCOPES, resource=SF_RESOURCE)
        for login in ("alice", "bob")
    }


@pytest.fixture(scope="module")
def conns(sf: SnowflakeServer, tokens: dict[str, str]) -> Iterator[dict[str, Any]]:
    opened = {
        login: CONNECTOR.connect(info_for(sf), Credential(token, None, kind="oauth"))
        for login, token in tokens.items()
    }
    try:
        yield opened
    finally:
        for c in opened.values():
            CONNECTOR.close(c)


def login_failure(sf: SnowflakeServer, token: str, info: ConnectionInfo, kind: str) -> Exception:
    with pytest.raises(Exception) as caught:
        CONNECTOR.connect(info, Credential(token, None, kind=kind))  # type: ignore[arg-type]
    return caught.value


def translated(exc: BaseException, info: ConnectionInfo, *secrets: str) -> ConnAuthError:
    err = CONNECTOR.translate_error(exc, info)
    assert err is not None, repr(exc)
    text = str(err) + repr(err) + str(err.to_json())
    for secret in secrets:
        assert secret not in text
        assert secret not in str(exc)
    assert "Traceback" not in text
    return err


# ------------------------------------------------------------------------ registry, driver


def test_registry_and_attributes() -> None:
    assert get_connector("snowflake") is CONNECTOR
    assert isinstance(CONNECTOR, SnowflakeConnector)
    assert (CONNECTOR.name, CONNECTOR.extra, CONNECTOR.driver_module) == (
        "snowflake",
        "snowflake",
        "snowflake.connector",
    )


def test_module_import_does_not_import_the_driver() -> None:
    code = (
        "import sys, jupyter_connauth.connectors.snowflake as m; "
        "assert m.CONNECTOR.name == 'snowflake'; "
        "assert not any(k.startswith('snowflake') for k in sys.modules), sorted(sys.modules)"
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_driver_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "snowflake.connector", None)
    info = ConnectionInfo("sales", "snowflake", "oauth", {"account": "acme"})
    with pytest.raises(DriverMissing) as caught:
        CONNECTOR.connect(info, Credential("tok-secret-value", None))
    assert "pip install 'jupyter-connauth[snowflake]'" in str(caught.value)
    assert "tok-secret-value" not in str(caught.value)


# --------------------------------------------------------------------- named parameters


@pytest.mark.parametrize(
    ("sql", "params", "expected_sql", "expected_values"),
    [
        (
            "SELECT * FROM t WHERE r = :region",
            {"region": "EU"},
            "SELECT * FROM t WHERE r = ?",
            ["EU"],
        ),
        ("SELECT :a, :b, :a", {"a": 1, "b": 2, "unused": 3}, "SELECT ?, ?, ?", [1, 2, 1]),
        (
            "SELECT ':a', 'it''s :a', 'x\\':a' , :a",
            {"a": 1},
            "SELECT ':a', 'it''s :a', 'x\\':a' , ?",
            [1],
        ),
        ('SELECT ":a" , "x"":a", :a', {"a": 1}, 'SELECT ":a" , "x"":a", ?', [1]),
        ("SELECT 1 -- :a\n, :a // :a\n", {"a": 1}, "SELECT 1 -- :a\n, ? // :a\n", [1]),
        ("SELECT /* :a\n :a */ :a", {"a": 1}, "SELECT /* :a\n :a */ ?", [1]),
        ("SELECT $$ :a ' $$, :a", {"a": 1}, "SELECT $$ :a ' $$, ?", [1]),
        ("SELECT x::int, :a::varchar", {"a": 1}, "SELECT x::int, ?::varchar", [1]),
        (
            'SELECT src:customer.name, v:"k", f(x):a FROM t WHERE id=:id',
            {"id": 7},
            'SELECT src:customer.name, v:"k", f(x):a FROM t WHERE id=?',
            [7],
        ),
        ("SELECT '\\:' , \\:lit, :a", {"a": 1}, "SELECT '\\:' , :lit, ?", [1]),
        ("SELECT ':a", {"a": 1}, "SELECT ':a", []),  # unterminated: the server reports it
    ],
)
def test_named_to_qmark(
    sql: str, params: dict[str, Any], expected_sql: str, expected_values: list[Any]
) -> None:
    assert named_to_qmark(sql, params) == (expected_sql, expected_values)


def test_missing_named_parameter_is_a_clear_error() -> None:
    with pytest.raises(QueryError) as caught:
        named_to_qmark("SELECT * FROM t WHERE r = :region AND y = :year AND z = :region", {"y": 1})
    msg = str(caught.value)
    assert ":region, :year" in msg
    assert "--params" in msg


def test_bad_params_type(conns: dict[str, Any]) -> None:
    with pytest.raises(QueryError, match="dict"):
        CONNECTOR.query_arrow(conns["alice"], "SELECT 1", "EU")  # type: ignore[arg-type]


# ------------------------------------------------------------------- identity and rows


@pytest.mark.parametrize("login", ["alice", "bob"])
def test_each_user_sees_own_identity_and_rows(conns: dict[str, Any], login: str) -> None:
    user = login.upper()
    assert CONNECTOR.whoami(conns[login]) == {"user": user, "role": "ANALYST"}
    df = CONNECTOR.query_pandas(
        conns[login], "SELECT region, amount, owner FROM sales ORDER BY amount"
    )
    assert list(df.columns) == ["REGION", "AMOUNT", "OWNER"]
    assert list(zip(df["REGION"], df["AMOUNT"], strict=True)) == SALES[user]
    assert set(df["OWNER"]) == {user}


def test_role_from_connection_params(sf: SnowflakeServer, tokens: dict[str, str]) -> None:
    conn = CONNECTOR.connect(info_for(sf, role="REPORTER"), Credential(tokens["alice"], None))
    try:
        assert CONNECTOR.whoami(conn) == {"user": "ALICE", "role": "REPORTER"}
    finally:
        CONNECTOR.close(conn)


class CursorSpy:
    """The connection, remembering the cursors the connector opened."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.cursors: list[Any] = []

    def cursor(self) -> Any:
        cur = self._conn.cursor()
        self.cursors.append(cur)
        return cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_named_params_are_bound_at_the_server(conns: dict[str, Any]) -> None:
    spy = CursorSpy(conns["alice"])
    tricky = "it's :region -- '); DROP TABLE sales; --"
    table = CONNECTOR.query_arrow(
        spy,
        "SELECT region, amount, :v AS v, 'lit :region' AS lit, amount::int AS whole\n"
        "FROM sales -- owner = :nobody\n"
        "WHERE region = :region AND amount > :min /* :min */ ORDER BY amount",
        {"region": "EMEA", "min": 100, "v": tricky},
    )
    assert table.to_pylist() == [
        {"REGION": "EMEA", "AMOUNT": 120.5, "V": tricky, "LIT": "lit :region", "WHOLE": 121}
    ]
    # the SQL text the driver sent has placeholders, not the values (server-side binding)
    sent = spy.cursors[-1].query
    assert sent.count("?") == 3 and "EMEA" not in sent and "DROP" not in sent
    # positional parameters go through as they are
    table = CONNECTOR.query_arrow(
        conns["bob"], "SELECT amount FROM sales WHERE region = ? AND amount < ?", ("EMEA", 50)
    )
    assert table.column("AMOUNT").to_pylist() == [42.0]
    assert CONNECTOR.query_arrow(conns["bob"], "SELECT COUNT(*) AS n FROM sales").to_pylist() == [
        {"N": 2}
    ]


def test_missing_parameter_raises_before_anything_runs(conns: dict[str, Any]) -> None:
    with pytest.raises(QueryError, match=":region"):
        CONNECTOR.query_pandas(conns["alice"], "SELECT * FROM sales WHERE region = :region", {})


# ------------------------------------------------------------------------------ results


def test_query_pandas_and_arrow_on_thousands_of_rows(conns: dict[str, Any]) -> None:
    seen: list[str] = []
    df = CONNECTOR.query_pandas(conns["bob"], "SELECT * FROM big ORDER BY id", progress=seen.append)
    assert df.shape == (BIG_ROWS, 10)
    assert df["ID"].tolist()[:3] == [0, 1, 2]
    assert df["NAME"].isna().sum() == len(range(0, BIG_ROWS, 11))
    assert df["AMOUNT"].dtype.kind == "f"
    assert seen == ["running", f"fetching {BIG_ROWS:,} rows"]

    table = CONNECTOR.query_arrow(
        conns["alice"], "SELECT id, name, created_at FROM big WHERE id < :n", {"n": 2500}
    )
    assert table.num_rows == 2500
    assert table.column_names == ["ID", "NAME", "CREATED_AT"]
    assert table.column("CREATED_AT").null_count == len(range(0, 2500, 13))


def test_empty_result_keeps_columns(conns: dict[str, Any]) -> None:
    sql = "SELECT id, name, amount FROM big WHERE id < 0"
    table = CONNECTOR.query_arrow(conns["alice"], sql)
    assert table.num_rows == 0
    assert table.column_names == ["ID", "NAME", "AMOUNT"]
    df = CONNECTOR.query_pandas(conns["alice"], sql)
    assert len(df) == 0
    assert list(df.columns) == ["ID", "NAME", "AMOUNT"]


def test_max_rows(conns: dict[str, Any]) -> None:
    seen: list[str] = []
    with pytest.raises(TooManyRows) as caught:
        CONNECTOR.query_pandas(
            conns["bob"], "SELECT * FROM big", max_rows=100, progress=seen.append
        )
    assert f"{BIG_ROWS:,} rows" in str(caught.value)
    assert caught.value.fix == "add LIMIT to the query, or raise --max-rows"
    assert seen == ["running"]  # nothing fetched
    assert (
        CONNECTOR.query_arrow(conns["bob"], "SELECT * FROM big", max_rows=BIG_ROWS).num_rows
        == BIG_ROWS
    )
    assert (
        CONNECTOR.query_arrow(conns["bob"], "SELECT * FROM big LIMIT 100", max_rows=100).num_rows
        == 100
    )


def test_sql_errors_become_query_errors(sf: SnowflakeServer, conns: dict[str, Any]) -> None:
    info = info_for(sf)
    with pytest.raises(Exception) as caught:
        CONNECTOR.query_arrow(conns["alice"], "SELEC 1")
    assert not CONNECTOR.is_auth_error(caught.value)
    err = translated(caught.value, info)
    assert type(err) is QueryError
    assert err.message.startswith("Snowflake error 001003 (42000): ")
    assert "Invalid expression" in err.message  # the driver's own words
    assert "request_id" not in err.message and "001003 (42000): 001003" not in err.message

    with pytest.raises(Exception) as caught:
        CONNECTOR.query_pandas(conns["alice"], "SELECT * FROM no_such_table")
    err = translated(caught.value, info)
    assert type(err) is QueryError
    assert "002003" in err.message and "NO_SUCH_TABLE" in err.message
    assert err.fix is not None and "role" in err.fix
    # the connection still works afterwards
    assert CONNECTOR.whoami(conns["alice"])["user"] == "ALICE"


def test_keyboard_interrupt_cancels_and_reraises(
    sf: SnowflakeServer, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jupyter_connauth.connectors.snowflake")
    conn = CONNECTOR.connect(info_for(sf), Credential(tokens["bob"], None))
    try:
        seen: list[tuple[str, float]] = []
        slow = (
            "SELECT COUNT(*) AS n FROM big a CROSS JOIN big b "
            "WHERE md5(a.id::varchar || '-' || b.id::varchar) = 'x'"
        )
        timer = threading.Timer(0.4, _thread.interrupt_main)
        t0 = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                CONNECTOR.query_arrow(
                    conn, slow, progress=lambda s: seen.append((s, time.monotonic() - t0))
                )
        finally:
            timer.cancel()
        assert [s for s, _ in seen] == ["running", "cancelling"]
        # Ctrl-C is handled while the driver still blocks in native code (the query alone
        # takes ~1.7 s here): the kernel does not wait for the query to finish to react
        assert seen[1][1] < 1.5
        # the query id is unknown while execute runs: the whole session's queries are
        # cancelled (the local server has no SYSTEM$CANCEL_ALL_QUERIES: logged, not raised)
        assert "SYSTEM$CANCEL_ALL_QUERIES" in caplog.text
        assert time.monotonic() - t0 < 30
        # the connection is usable afterwards
        assert CONNECTOR.whoami(conn) == {"user": "BOB", "role": "ANALYST"}
    finally:
        CONNECTOR.close(conn)


def test_cancel_by_query_id_when_known(
    conns: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jupyter_connauth.connectors.snowflake")
    cur = conns["alice"].cursor()
    try:
        cur.execute("SELECT 1")
        outcome = CONNECTOR.cancel(conns["alice"], cur)
    finally:
        cur.close()
    # connector 5.x posts /queries/<id>/abort-request, which the local server lacks (404):
    # the fallback then cancels the session's queries
    assert outcome is not None and outcome.startswith(f"abort_query {cur.sfqid}")


# ------------------------------------------------------------------------------ metadata


def test_metadata(conns: dict[str, Any]) -> None:
    conn = conns["alice"]
    assert "CONNAUTH" in CONNECTOR.list_catalogs(conn)
    assert "PUBLIC" in CONNECTOR.list_schemas(conn, "CONNAUTH")
    tables = CONNECTOR.list_tables(conn, "CONNAUTH", "PUBLIC")
    assert {"name": "SALES", "type": "VIEW"} in tables
    assert {"name": "BIG", "type": "TABLE"} in tables
    assert CONNECTOR.list_columns(conn, "CONNAUTH", "PUBLIC", "SALES") == [
        {"name": "REGION", "type": "TEXT", "nullable": True},
        {"name": "AMOUNT", "type": "NUMBER", "nullable": True},
        {"name": "OWNER", "type": "TEXT", "nullable": True},
    ]
    assert [c["name"] for c in CONNECTOR.list_columns(conn, "CONNAUTH", "PUBLIC", "BIG")][:3] == [
        "ID",
        "QTY",
        "PRICE",
    ]


def test_metadata_names_are_not_sql(conns: dict[str, Any]) -> None:
    conn = conns["alice"]
    evil = 'PUBLIC"; DROP VIEW sales; --'
    assert CONNECTOR.list_columns(conn, "CONNAUTH", evil, "SALES") == []
    assert CONNECTOR.list_columns(conn, "CONNAUTH", "PUBLIC", "SALES' OR '1'='1") == []
    for call in (
        lambda: CONNECTOR.list_tables(conn, "CONNAUTH", evil),
        lambda: CONNECTOR.list_schemas(conn, 'CONNAUTH"; DROP VIEW PUBLIC.SALES; --'),
    ):
        try:
            assert call() == []
        except Exception as exc:
            assert type(CONNECTOR.translate_error(exc, info_for_dummy())) is QueryError
    assert CONNECTOR.query_arrow(conn, "SELECT COUNT(*) AS n FROM sales").to_pylist() == [{"N": 3}]


def info_for_dummy() -> ConnectionInfo:
    return ConnectionInfo("sales", "snowflake", "oauth", {"account": "connauth"})


# ------------------------------------------------------------------------- login errors


def test_forged_idp_token(sf: SnowflakeServer, sf_idp: TestIdP) -> None:
    forged = mint(new_key(), iss=sf_idp.issuer, aud=SF_RESOURCE, scp="session:role-any")
    info = info_for(sf)
    exc = login_failure(sf, forged, info, "oauth")
    assert getattr(exc, "errno", None) == 390303
    assert CONNECTOR.is_auth_error(exc)
    err = translated(exc, info, forged)
    assert isinstance(err, SnowflakeAuthError) and err.code == "snowflake_invalid_token"
    assert "the IdP's token is not accepted" in str(err)
    for setting in (
        "EXTERNAL_OAUTH_ISSUER",
        "EXTERNAL_OAUTH_JWS_KEYS_URL",
        "EXTERNAL_OAUTH_AUDIENCE_LIST",
    ):
        assert setting in str(err)


def test_expired_token(sf: SnowflakeServer, broker_key: rsa.RSAPrivateKey) -> None:
    expired = mint(broker_key, lifetime=-100)
    for auth, kind in (("oauth-jwt", "jwt"), ("oauth", "oauth")):
        info = info_for(sf, auth=auth)
        exc = login_failure(sf, expired, info, kind)
        assert getattr(exc, "errno", None) == 390318
        assert CONNECTOR.is_auth_error(exc)
        err = translated(exc, info, expired)
        assert err.code == "snowflake_token_expired"
        assert "run the cell again" in str(err)
        assert ("fresh JWT" in str(err)) is (auth == "oauth-jwt")


def test_unknown_user(sf: SnowflakeServer, sf_idp: TestIdP) -> None:
    token = user_token(sf_idp, "mallory", scopes=IDP_SCOPES, resource=SF_RESOURCE)
    info = info_for(sf)
    exc = login_failure(sf, token, info, "oauth")
    assert getattr(exc, "errno", None) == 390100
    assert not CONNECTOR.is_auth_error(exc)
    err = translated(exc, info, token)
    assert err.code == "snowflake_unknown_user"
    assert "create a Snowflake user whose LOGIN_NAME is the user's email" in str(err)
    assert "EXTERNAL_OAUTH_SNOWFLAKE_USER_MAPPING_ATTRIBUTE" in str(err)


def test_role_not_granted(sf: SnowflakeServer, tokens: dict[str, str]) -> None:
    info = info_for(sf, role="REPORTER")  # bob has only ANALYST
    exc = login_failure(sf, tokens["bob"], info, "oauth")
    assert getattr(exc, "errno", None) == 390317
    assert not CONNECTOR.is_auth_error(exc)
    err = translated(exc, info, tokens["bob"])
    assert err.code == "snowflake_role_not_in_token"
    assert "'REPORTER'" in err.message
    assert "EXTERNAL_OAUTH_ANY_ROLE_MODE = 'ENABLE'" in str(err)
    assert "grant the role" in str(err)


def test_unreachable_server_names_the_host() -> None:
    port = free_port()
    info = ConnectionInfo(
        "sales",
        "snowflake",
        "oauth",
        {"account": "acme"},
        {
            "host": "127.0.0.1",
            "port": port,
            "protocol": "http",
            "login_timeout": 2,
            "enable_server_session_keep_alive_auto_detection": False,
        },
    )
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    with pytest.raises(Exception) as caught:
        CONNECTOR.connect(info, Credential(token, None))
    assert not CONNECTOR.is_auth_error(caught.value)
    err = translated(caught.value, info, token)
    assert isinstance(err, WarehouseUnreachable)
    assert f"127.0.0.1:{port}" in err.message and "'acme'" in err.message


def test_documented_params_reach_the_driver(sf: SnowflakeServer, tokens: dict[str, str]) -> None:
    """``host`` (PrivateLink), database, schema and role from the connection's params, not
    driver_options: without ``host`` the driver would go to connauth.snowflakecomputing.com."""
    info = info_for(sf, role="ANALYST")
    options = {k: v for k, v in info.driver_options.items() if k != "host"}
    info = ConnectionInfo(
        info.name, info.connector, info.auth, {**info.params, "host": sf.host}, options
    )
    conn = CONNECTOR.connect(info, Credential(tokens["alice"], None))
    try:
        sql = "SELECT CURRENT_DATABASE(), CURRENT_SCHEMA(), CURRENT_ROLE()"
        got = list(CONNECTOR.query_arrow(conn, sql).to_pydict().values())
        assert got == [["CONNAUTH"], ["PUBLIC"], ["ANALYST"]]
    finally:
        CONNECTOR.close(conn)


def test_non_driver_errors_are_not_translated(sf: SnowflakeServer) -> None:
    assert CONNECTOR.translate_error(ValueError("x"), info_for(sf)) is None
    assert not CONNECTOR.is_auth_error(ValueError("x"))
    mine = QueryError("m", "f")
    assert CONNECTOR.translate_error(mine, info_for(sf)) is mine


def test_missing_account_is_a_config_error() -> None:
    info = ConnectionInfo("sales", "snowflake", "oauth", {"database": "X"})
    with pytest.raises(ConnAuthError, match="account"):
        CONNECTOR.connect(info, Credential("t", None))


# ------------------------------------------------------------------------- JWT mode


def test_jwt_mode(sf: SnowflakeServer, broker_key: rsa.RSAPrivateKey) -> None:
    info = info_for(sf, auth="oauth-jwt")
    conn = CONNECTOR.connect(info, Credential(mint(broker_key), time.time() + 600, kind="jwt"))
    try:
        assert CONNECTOR.whoami(conn) == {"user": "ALICE", "role": "ANALYST"}
        df = CONNECTOR.query_pandas(conn, "SELECT owner, COUNT(*) AS n FROM sales GROUP BY owner")
        assert df.to_dict("records") == [{"OWNER": "ALICE", "N": 3}]
    finally:
        CONNECTOR.close(conn)


@pytest.mark.parametrize("what", ["wrong-key", "wrong-issuer"])
def test_jwt_mode_rejected(sf: SnowflakeServer, broker_key: rsa.RSAPrivateKey, what: str) -> None:
    token = (
        mint(new_key())
        if what == "wrong-key"
        else mint(broker_key, iss="http://127.0.0.1:8888/user/alice/")
    )
    info = info_for(sf, auth="oauth-jwt")
    exc = login_failure(sf, token, info, "jwt")
    assert getattr(exc, "errno", None) == 390303
    assert CONNECTOR.is_auth_error(exc)
    err = translated(exc, info, token)
    assert err.code == "snowflake_invalid_token"
    text = str(err)
    assert (
        "the public key in the security integration does not match the broker's private key: "
        "set EXTERNAL_OAUTH_RSA_PUBLIC_KEY to the broker's public key (see %sql_connector doctor"
    ) in text
    assert "set EXTERNAL_OAUTH_ISSUER to the exact Jupyter URL" in text


def test_jwt_role_not_granted(sf: SnowflakeServer, broker_key: rsa.RSAPrivateKey) -> None:
    token = mint(broker_key, "bob@example.com", scp="session:role:REPORTER")
    info = info_for(sf, auth="oauth-jwt", role="REPORTER")
    exc = login_failure(sf, token, info, "jwt")
    assert getattr(exc, "errno", None) == 390317
    err = translated(exc, info, token)
    assert "the JWT carries session:role:<role>" in str(err)
