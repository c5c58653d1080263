"""The Databricks connector against the local Thrift warehouse, with real tokens from
the test OpenID provider (no broker involved)."""

from __future__ import annotations

import _thread
import decimal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from jupyter_connauth.connectors import get_connector
from jupyter_connauth.connectors.base import ConnectionInfo, Credential
from jupyter_connauth.connectors.databricks import (
    CONNECTOR,
    DatabricksConnector,
)
from jupyter_connauth.core.errors import (
    AccessDenied,
    ConfigError,
    ConnAuthError,
    ConsentRequired,
    DriverMissing,
    QueryError,
    TooManyRows,
)
from tests.idp_fixture import TestIdP
from tests.servers.databricks.fixture import DatabricksServer
from tests.tokens import user_token
from tests.warehouses import databricks_connection, trusting

pytest.importorskip("databricks.sql")

RESOURCE = "https://databricks.local"
OTHER_RESOURCE = "https://other-api.local"
USERS = {"alice@example.com": {"name": "Alice"}, "bob@example.com": {"name": "Bob"}}
SALES = [
    ["EU", "120.50", "alice@example.com"],
    ["US", "75.00", "alice@example.com"],
    ["EU", "10.00", "alice@example.com"],
    ["EU", "300.00", "bob@example.com"],
    ["APAC", "18.75", "bob@example.com"],
    ["EU", "999.99", "carol@example.com"],
]
BIG_ROWS = 50_000
PAGE_ROWS = 12_000
FEDERATION_FIX = (
    "configure a federation policy for the IdP's issuer and audience in the Databricks "
    "account (Account console → Security → Token federation), or for Azure check the "
    "token's audience is 2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"
)

# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dbx_idp() -> Iterator[TestIdP]:
    with TestIdP(
        resources={
            RESOURCE: {"audience": RESOURCE, "scopes": ["sql"]},
            OTHER_RESOURCE: {"audience": OTHER_RESOURCE, "scopes": ["other"]},
        },
        extra_scopes=["sql"],
    ) as idp:
        yield idp


@pytest.fixture(scope="module")
def server(dbx_idp: TestIdP) -> Iterator[DatabricksServer]:
    config = trusting(
        dbx_idp,
        RESOURCE,
        users=USERS,
        sales_rows=SALES,
        seed_big_rows=BIG_ROWS,
        max_page_rows=PAGE_ROWS,
        cloudfetch=False,  # inline paging is tested here; CloudFetch in test_result_delivery
    )
    with DatabricksServer(config) as srv:
        yield srv


@pytest.fixture(scope="module")
def tokens(dbx_idp: TestIdP) -> dict[str, str]:
    return {
        login: user_token(dbx_idp, login, scopes="openid email sql", resource=RESOURCE)
        for login in ("alice", "bob", "carol")
    }


def _info(srv: DatabricksServer, name: str = "sales", **overrides: Any) -> ConnectionInfo:
    connection = databricks_connection(srv)
    params = {k: connection[k] for k in ("server_hostname", "http_path")}
    options = connection["driver_options"]
    params.update(overrides.pop("params", {}))
    options.update(overrides.pop("driver_options", {}))
    return ConnectionInfo(name, "databricks", "oauth", params, options)


def _cred(token: str) -> Credential:
    return Credential(token, time.time() + 300, identity="test")


@pytest.fixture(scope="module")
def info(server: DatabricksServer) -> ConnectionInfo:
    return _info(server)


@pytest.fixture(scope="module")
def alice(info: ConnectionInfo, tokens: dict[str, str]) -> Iterator[Any]:
    conn = CONNECTOR.connect(info, _cred(tokens["alice"]))
    yield conn
    CONNECTOR.close(conn)


@pytest.fixture(scope="module")
def bob(info: ConnectionInfo, tokens: dict[str, str]) -> Iterator[Any]:
    conn = CONNECTOR.connect(info, _cred(tokens["bob"]))
    yield conn
    CONNECTOR.close(conn)


def _no_token(err: BaseException, tokens: dict[str, str]) -> None:
    texts = [str(err), repr(err)]
    if isinstance(err, ConnAuthError):
        texts += [str(err.to_json()), *err._render_traceback_()]
    for text in texts:
        for tok in tokens.values():
            assert tok not in text
            assert tok.split(".")[2] not in text  # not even the signature


def _connect_error(info: ConnectionInfo, token: str) -> BaseException:
    try:
        conn = CONNECTOR.connect(info, _cred(token))
    except Exception as e:
        return e
    CONNECTOR.close(conn)
    raise AssertionError("connect() succeeded")


# -- registration, driver -----------------------------------------------------------------


def test_registered_and_lazy_import() -> None:
    assert get_connector("databricks") is CONNECTOR
    assert isinstance(CONNECTOR, DatabricksConnector)
    assert (CONNECTOR.name, CONNECTOR.extra, CONNECTOR.driver_module) == (
        "databricks",
        "databricks",
        "databricks.sql",
    )
    code = (
        "import sys, jupyter_connauth.connectors.databricks as m\n"
        "assert m.CONNECTOR.name == 'databricks'\n"
        "bad = [k for k in sys.modules if k.startswith(('databricks', 'pyarrow', 'pandas'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_driver_missing(
    monkeypatch: pytest.MonkeyPatch, info: ConnectionInfo, tokens: dict[str, str]
) -> None:
    monkeypatch.setitem(sys.modules, "databricks.sql", None)
    with pytest.raises(DriverMissing) as caught:
        CONNECTOR.connect(info, _cred(tokens["alice"]))
    assert "databricks.sql" in caught.value.message
    assert "pip install 'jupyter-connauth[databricks]'" in str(caught.value.fix)
    _no_token(caught.value, tokens)


def test_missing_params_is_config_error(tokens: dict[str, str]) -> None:
    info = ConnectionInfo("sales", "databricks", "oauth", {"server_hostname": "x"})
    with pytest.raises(ConfigError) as caught:
        CONNECTOR.connect(info, _cred(tokens["alice"]))
    assert "http_path" in str(caught.value)


# -- identity and rows ---------------------------------------------------------------------


def test_each_user_sees_own_identity_and_rows(alice: Any, bob: Any) -> None:
    assert CONNECTOR.whoami(alice) == {"user": "alice@example.com", "role": None}
    assert CONNECTOR.whoami(bob) == {"user": "bob@example.com", "role": None}
    sql = "SELECT region, amount, owner FROM main.demo.sales ORDER BY amount"
    a = CONNECTOR.query_arrow(alice, sql)
    b = CONNECTOR.query_arrow(bob, sql)
    assert set(a.column("owner").to_pylist()) == {"alice@example.com"}
    assert set(b.column("owner").to_pylist()) == {"bob@example.com"}
    assert a.num_rows == 3 and b.num_rows == 2
    assert a.column("amount").to_pylist()[0] == decimal.Decimal("10.00")


def test_driver_gets_the_token_unchanged(
    server: DatabricksServer, alice: Any, tokens: dict[str, str]
) -> None:
    # The IdP (127.0.0.1) and the workspace share a host here, so the driver's
    # token-federation wrapper sends our token as it is, without an exchange.
    before = server.stats()
    conn = CONNECTOR.connect(_info(server), _cred(tokens["bob"]))
    try:
        CONNECTOR.query_arrow(conn, "SELECT 1 AS one")
    finally:
        CONNECTOR.close(conn)
    after = server.stats()
    assert after["token_exchanges"] == before["token_exchanges"]
    assert after["sessions_opened"] == before["sessions_opened"] + 1


def test_catalog_and_schema_from_params(server: DatabricksServer, tokens: dict[str, str]) -> None:
    info = _info(server, params={"catalog": "main", "schema": "demo"})
    conn = CONNECTOR.connect(info, _cred(tokens["alice"]))
    try:
        table = CONNECTOR.query_arrow(conn, "SELECT count(*) AS n FROM sales")
        assert table.column("n").to_pylist() == [3]
    finally:
        CONNECTOR.close(conn)


# -- parameters -------------------------------------------------------------------------


def test_named_parameters(alice: Any, bob: Any) -> None:
    sql = "SELECT region, amount FROM main.demo.sales WHERE region = :region ORDER BY amount"
    table = CONNECTOR.query_arrow(alice, sql, {"region": "EU"})
    assert table.column("amount").to_pylist() == [
        decimal.Decimal("10.00"),
        decimal.Decimal("120.50"),
    ]
    assert CONNECTOR.query_arrow(bob, sql, {"region": "EU"}).num_rows == 1
    # a value that would break string formatting stays a value
    sneaky = {"region": "EU' OR '1'='1"}
    assert CONNECTOR.query_arrow(alice, sql, sneaky).num_rows == 0


def test_positional_parameters(alice: Any) -> None:
    sql = "SELECT region FROM main.demo.sales WHERE amount > ? AND region = ? ORDER BY region"
    assert CONNECTOR.query_arrow(alice, sql, [50, "EU"]).column(0).to_pylist() == ["EU"]
    assert CONNECTOR.query_arrow(alice, sql, (50, "US")).column(0).to_pylist() == ["US"]


def test_unbound_parameter_is_query_error(
    alice: Any, info: ConnectionInfo, tokens: dict[str, str]
) -> None:
    with pytest.raises(Exception) as caught:
        CONNECTOR.query_arrow(alice, "SELECT :missing AS x", {"other": 1})
    err = CONNECTOR.translate_error(caught.value, info)
    assert isinstance(err, QueryError)
    assert "UNBOUND_SQL_PARAMETER" in err.message
    assert err.fix and ":name" in err.fix


# -- results ----------------------------------------------------------------------------


def test_query_arrow_pages_big_result(server: DatabricksServer, bob: Any) -> None:
    before = server.stats()["fetch_results"]
    statuses: list[str] = []
    table = CONNECTOR.query_arrow(
        bob, "SELECT * FROM main.bench.big ORDER BY id", progress=statuses.append
    )
    assert isinstance(table, pa.Table)
    assert table.num_rows == BIG_ROWS and table.num_columns == 10
    assert table.column("id").to_pylist()[:3] == [0, 1, 2]
    assert table.column("id").to_pylist()[-1] == BIG_ROWS - 1
    # the first page comes with ExecuteStatement, the others by FetchResults
    assert server.stats()["fetch_results"] - before >= BIG_ROWS // PAGE_ROWS
    assert statuses[0] == "running query" and statuses[-1] == f"{BIG_ROWS} rows"


def test_query_pandas_big_result(alice: Any) -> None:
    df = CONNECTOR.query_pandas(alice, "SELECT * FROM main.bench.big ORDER BY id")
    assert isinstance(df, pd.DataFrame)
    assert len(df) == BIG_ROWS and len(df.columns) == 10
    assert df["id"].iloc[-1] == BIG_ROWS - 1


def test_query_never_uses_fetchall(alice: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cursor_cls = type(alice.cursor())

    def forbidden(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("fetchall() used")

    monkeypatch.setattr(cursor_cls, "fetchall", forbidden)
    monkeypatch.setattr(cursor_cls, "fetchone", forbidden)
    assert CONNECTOR.query_arrow(alice, "SELECT 1 AS one").num_rows == 1
    assert CONNECTOR.query_arrow(alice, "SELECT 1 AS one", max_rows=5).num_rows == 1


def test_empty_result_keeps_columns(alice: Any) -> None:
    sql = "SELECT region, amount, owner FROM main.demo.sales WHERE region = :r"
    table = CONNECTOR.query_arrow(alice, sql, {"r": "nowhere"})
    assert table.num_rows == 0
    assert table.column_names == ["region", "amount", "owner"]
    df = CONNECTOR.query_pandas(alice, sql, {"r": "nowhere"})
    assert list(df.columns) == ["region", "amount", "owner"] and len(df) == 0


def test_max_rows(alice: Any, server: DatabricksServer) -> None:
    sql = "SELECT id FROM main.bench.big ORDER BY id"
    open_before = server.stats()["operations_open"]
    with pytest.raises(TooManyRows) as caught:
        CONNECTOR.query_arrow(alice, sql, max_rows=100)
    assert "100" in caught.value.message and "LIMIT" in str(caught.value.fix)
    # the limit is checked across pages, and exactly max_rows rows are fine
    with pytest.raises(TooManyRows):
        CONNECTOR.query_pandas(alice, sql, max_rows=PAGE_ROWS + 5)
    assert CONNECTOR.query_arrow(alice, sql, max_rows=BIG_ROWS).num_rows == BIG_ROWS
    assert CONNECTOR.query_arrow(alice, "SELECT 1 AS x", max_rows=1).num_rows == 1
    # the operation is closed on the server either way
    assert server.stats()["operations_open"] == open_before


# -- errors -----------------------------------------------------------------------------


def test_sql_error_is_query_error(alice: Any, info: ConnectionInfo, tokens: dict[str, str]) -> None:
    with pytest.raises(Exception) as caught:
        CONNECTOR.query_arrow(alice, "SELECT * FROM main.demo.nope")
    assert not CONNECTOR.is_auth_error(caught.value)
    err = CONNECTOR.translate_error(caught.value, info)
    assert isinstance(err, QueryError)
    assert err.message.startswith("Databricks: [TABLE_OR_VIEW_NOT_FOUND]")
    assert "nope" in err.message
    assert err.fix and "catalog.schema.table" in err.fix
    with pytest.raises(Exception) as syntax:
        CONNECTOR.query_arrow(alice, "SELEC 1")
    err2 = CONNECTOR.translate_error(syntax.value, info)
    assert isinstance(err2, QueryError) and "PARSE_SYNTAX_ERROR" in err2.message
    # the session is still usable
    assert CONNECTOR.query_arrow(alice, "SELECT 1 AS one").num_rows == 1
    _no_token(err, tokens)
    _no_token(caught.value, tokens)


def _expired_token(idp: TestIdP) -> str:
    idp.set_runtime(access_token_ttl=1)
    try:
        token = user_token(idp, "alice", scopes="openid email sql", resource=RESOURCE)
    finally:
        idp.set_runtime(access_token_ttl=300)
    time.sleep(2.1)
    return token


@pytest.mark.parametrize("case", ["tampered", "expired", "wrong_audience", "garbage"])
def test_rejected_token_is_translated_401(
    case: str, dbx_idp: TestIdP, info: ConnectionInfo, tokens: dict[str, str]
) -> None:
    alice_tok = tokens["alice"]
    header, payload, sig = alice_tok.split(".")
    bad = {
        "tampered": lambda: f"{header}.{payload}.{sig[::-1]}",
        "expired": lambda: _expired_token(dbx_idp),
        # a token for another API of the same IdP: wrong audience
        "wrong_audience": lambda: user_token(
            dbx_idp, "alice", scopes="openid email other", resource=OTHER_RESOURCE
        ),
        "garbage": lambda: "not-a-jwt",
    }[case]()
    raw = _connect_error(info, bad)
    assert CONNECTOR.is_auth_error(raw)
    err = CONNECTOR.translate_error(raw, info)
    assert isinstance(err, ConsentRequired) and err.code == "token_rejected"
    assert "HTTP 401" in err.message and "Invalid access token" in err.message
    assert err.fix is not None and FEDERATION_FIX in err.fix
    assert CONNECTOR.is_auth_error(err)
    for e in (raw, err):
        _no_token(e, {**tokens, "bad": bad} if case != "garbage" else tokens)


def test_token_expiring_mid_session_is_an_auth_error(
    dbx_idp: TestIdP, info: ConnectionInfo, tokens: dict[str, str]
) -> None:
    """The warehouse checks the bearer on every request: the runner's reconnect cue."""
    dbx_idp.set_runtime(access_token_ttl=2)
    try:
        short = user_token(dbx_idp, "alice", scopes="openid email sql", resource=RESOURCE)
    finally:
        dbx_idp.set_runtime(access_token_ttl=300)
    conn = CONNECTOR.connect(info, _cred(short))
    try:
        time.sleep(2.5)
        with pytest.raises(Exception) as caught:
            CONNECTOR.query_arrow(conn, "SELECT 1 AS one")
    finally:
        CONNECTOR.close(conn)
    assert CONNECTOR.is_auth_error(caught.value)
    err = CONNECTOR.translate_error(caught.value, info)
    assert isinstance(err, ConsentRequired) and err.code == "token_rejected"
    _no_token(caught.value, {**tokens, "short": short})
    _no_token(err, {**tokens, "short": short})


def test_unknown_user_is_403(
    server: DatabricksServer, info: ConnectionInfo, tokens: dict[str, str]
) -> None:
    before = server.stats()["auth_403"]
    raw = _connect_error(info, tokens["carol"])
    assert server.stats()["auth_403"] == before + 1
    assert not CONNECTOR.is_auth_error(raw)
    err = CONNECTOR.translate_error(raw, info)
    assert isinstance(err, AccessDenied)
    assert "HTTP 403" in err.message and "carol@example.com" in err.message
    assert err.fix and "add the user to the workspace" in err.fix
    assert "CAN USE on the SQL warehouse" in err.fix
    _no_token(raw, tokens)
    _no_token(err, tokens)


def test_wrong_http_path_is_404(server: DatabricksServer, tokens: dict[str, str]) -> None:
    wrong = "/sql/1.0/warehouses/nope"
    info = _info(
        server,
        params={"http_path": wrong},
        driver_options={"_connection_uri": f"https://{server.host}:{server.port}{wrong}"},
    )
    raw = _connect_error(info, tokens["alice"])
    err = CONNECTOR.translate_error(raw, info)
    assert isinstance(err, ConfigError) and err.field == "http_path"
    assert "404" in err.message and wrong in err.message
    assert err.fix and "check http_path" in err.fix
    _no_token(err, tokens)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_unreachable_host_fails_fast_with_the_host(tokens: dict[str, str]) -> None:
    port = _free_port()
    info = ConnectionInfo(
        "sales",
        "databricks",
        "oauth",
        {"server_hostname": "127.0.0.1", "http_path": "/sql/1.0/warehouses/abc"},
        {"_port": port, "enable_telemetry": False},
    )
    started = time.monotonic()
    raw = _connect_error(info, tokens["alice"])
    elapsed = time.monotonic() - started
    assert elapsed < 20, elapsed  # the driver's defaults retry for minutes
    err = CONNECTOR.translate_error(raw, info)
    assert err is not None and err.code == "warehouse_unreachable"
    assert "Databricks at 127.0.0.1" in err.message and "connection refused" in err.message
    assert err.fix and "server_hostname" in err.fix
    assert not CONNECTOR.is_auth_error(raw)
    _no_token(raw, tokens)
    _no_token(err, tokens)


def test_untrusted_certificate_is_named(server: DatabricksServer, tokens: dict[str, str]) -> None:
    info = _info(
        server,
        driver_options={"_tls_trusted_ca_file": None, "_retry_stop_after_attempts_count": 1},
    )
    raw = _connect_error(info, tokens["alice"])
    err = CONNECTOR.translate_error(raw, info)
    assert err is not None and err.code == "warehouse_unreachable"
    assert "TLS" in err.message
    _no_token(err, tokens)


def test_unknown_errors_are_left_alone(info: ConnectionInfo) -> None:
    assert CONNECTOR.translate_error(ValueError("something else"), info) is None
    already = QueryError("x")
    assert CONNECTOR.translate_error(already, info) is already


# -- metadata ---------------------------------------------------------------------------


def test_metadata(alice: Any) -> None:
    assert "main" in CONNECTOR.list_catalogs(alice)
    schemas = CONNECTOR.list_schemas(alice, "main")
    assert {"demo", "bench"} <= set(schemas)
    tables = CONNECTOR.list_tables(alice, "main", "demo")
    assert {"name": "sales", "type": "TABLE"} in tables
    assert all(t["type"] in ("TABLE", "VIEW") for t in tables)
    assert all(t["name"] != "big" for t in tables)
    columns = CONNECTOR.list_columns(alice, "main", "demo", "sales")
    assert [c["name"] for c in columns] == ["region", "amount", "owner"]
    assert columns[1]["type"].upper().startswith("DECIMAL")
    assert all(isinstance(c["nullable"], bool) for c in columns)
    big = CONNECTOR.list_columns(alice, "main", "bench", "big")
    assert len(big) == 10 and big[0]["name"] == "id"


# -- cancel -----------------------------------------------------------------------------


def test_keyboard_interrupt_cancels_at_the_warehouse(
    server: DatabricksServer, info: ConnectionInfo, tokens: dict[str, str]
) -> None:
    conn = CONNECTOR.connect(info, _cred(tokens["alice"]))
    try:
        before = server.stats()["cancels"]
        statuses: list[str] = []
        timer = threading.Timer(1.5, _thread.interrupt_main)
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                CONNECTOR.query_arrow(
                    conn,
                    "SELECT sum(a.range * b.range) AS s FROM range(100000) a, range(1000000) b",
                    progress=statuses.append,
                )
        finally:
            timer.cancel()
        assert time.monotonic() - started < 20
        assert "cancelling" in statuses
        assert server.stats()["cancels"] == before + 1
        # the session survives the cancel
        assert CONNECTOR.whoami(conn)["user"] == "alice@example.com"
    finally:
        CONNECTOR.close(conn)
