"""The BigQuery connector against the local BigQuery server (bqemulator behind a
token-checking layer) with real user tokens from the test OpenID provider.

One IdP and one server per module; tokens come from a real authorization code flow.
"""

from __future__ import annotations

import datetime as dt
import decimal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_connauth.connectors import get_connector
from jupyter_connauth.connectors.base import ConnectionInfo, Credential
from jupyter_connauth.connectors.bigquery import CONNECTOR, BigQueryConnector
from jupyter_connauth.core.errors import (
    AccessDenied,
    ConfigError,
    ConnAuthError,
    ConsentRequired,
    DriverMissing,
    QueryError,
    TooManyRows,
)
from tests.idp_fixture import TestIdP, free_port
from tests.servers.bigquery.fixture import BIG_COLUMNS, BigQueryServer
from tests.tokens import user_token

RESOURCE = "https://bigquery.local"
BQ_SCOPE = "https://www.googleapis.com/auth/bigquery"
PROJECT = "test-project"
ALICE = "alice@example.com"
BOB = "bob@example.com"
BIG_ROWS = 3000

C = CONNECTOR


@pytest.fixture(scope="module")
def bq_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestIdP]:
    with TestIdP(
        workdir=tmp_path_factory.mktemp("idp"),
        resources={RESOURCE: {"audience": RESOURCE, "scopes": [BQ_SCOPE]}},
        access_token_ttl=3600,
    ) as idp:
        yield idp


@pytest.fixture(scope="module")
def bq_server(bq_idp: TestIdP) -> Iterator[BigQueryServer]:
    srv = BigQueryServer(
        {
            "project": PROJECT,
            "jwks_url": bq_idp.discovery()["jwks_uri"],
            "issuer": bq_idp.issuer,
            "audience": RESOURCE,
            # bob cannot read the bench dataset; carol has a valid token and no grants.
            "users": {ALICE: ["demo", "bench"], BOB: ["demo"], "admin@example.com": ["*"]},
            "seed_big_rows": BIG_ROWS,
        }
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def tokens(bq_idp: TestIdP) -> dict[str, str]:
    return {
        login: user_token(bq_idp, login, scopes=f"openid email {BQ_SCOPE}", resource=RESOURCE)
        for login in ("alice", "bob", "carol", "admin")
    }


def make_info(endpoint: str, **driver_options: Any) -> ConnectionInfo:
    options: dict[str, Any] = {
        "client_options": {"api_endpoint": endpoint},
        # bqemulator serves the Storage Read API for base tables only, not query results.
        "use_storage_api": False,
        # fail fast instead of the driver's 10 minutes of retries
        "retry_deadline": 20,
    }
    options.update(driver_options)
    return ConnectionInfo(
        name="warehouse",
        connector="bigquery",
        auth="oauth",
        params={"project": PROJECT},
        driver_options=options,
    )


@pytest.fixture(scope="module")
def info(bq_server: BigQueryServer) -> ConnectionInfo:
    return make_info(bq_server.endpoint)


@pytest.fixture(scope="module")
def clients(info: ConnectionInfo, tokens: dict[str, str]) -> Iterator[dict[str, Any]]:
    conns = {login: C.connect(info, Credential(tok, None)) for login, tok in tokens.items()}
    yield conns
    for conn in conns.values():
        C.close(conn)


def assert_no_token(err: BaseException, tokens: dict[str, str], *extra: str) -> None:
    text = f"{err!s} {err!r} {getattr(err, 'fix', '')}"
    for tok in [*tokens.values(), *extra]:
        assert tok not in text
        assert tok[-24:] not in text  # not even the signature part


def translated(exc: BaseException, info: ConnectionInfo) -> ConnAuthError:
    err = C.translate_error(exc, info)
    assert err is not None, repr(exc)
    return err


# -- the module itself -----------------------------------------------------------------


def test_module_imports_no_google_and_is_registered() -> None:
    code = (
        "import sys, jupyter_connauth.connectors.bigquery as m\n"
        "assert m.CONNECTOR.name == 'bigquery'\n"
        "bad = sorted(n for n in sys.modules if n.startswith(('google', 'pandas', 'pyarrow')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert get_connector("bigquery") is CONNECTOR
    assert isinstance(CONNECTOR, BigQueryConnector)
    assert (C.name, C.extra, C.driver_module) == ("bigquery", "bigquery", "google.cloud.bigquery")


def test_driver_missing_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, info: ConnectionInfo
) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.bigquery", None)
    with pytest.raises(DriverMissing) as exc_info:
        C.connect(info, Credential("t0k3n-value", None))
    assert "pip install 'jupyter-connauth[bigquery]'" in str(exc_info.value)
    assert "google.cloud.bigquery" in exc_info.value.message
    assert "t0k3n-value" not in str(exc_info.value)


def test_missing_project_is_a_config_error() -> None:
    info = ConnectionInfo(name="bq", connector="bigquery", auth="oauth", params={})
    with pytest.raises(ConfigError) as exc_info:
        C.connect(info, Credential("tok", None))
    assert exc_info.value.field == "project"


def test_connect_builds_a_client_with_our_options_removed(
    info: ConnectionInfo, tokens: dict[str, str]
) -> None:
    from google.cloud import bigquery

    options = {**info.driver_options, "use_storage_api": "false"}
    local = ConnectionInfo(
        name="bq",
        connector="bigquery",
        auth="oauth",
        params={"project": PROJECT, "location": "EU", "dataset": "demo"},
        driver_options=options,
    )
    client = C.connect(local, Credential(tokens["alice"], None))
    try:
        assert isinstance(client, bigquery.Client)
        assert (client.project, client.location) == (PROJECT, "EU")
        assert client.default_query_job_config.default_dataset.dataset_id == "demo"
        assert client._credentials.token == tokens["alice"]
        assert C._settings_for(client).use_storage_api is False
        assert C._settings_for(client).retry_deadline == 20
    finally:
        C.close(client)


# -- identity and row-level security ---------------------------------------------------------


def test_each_user_sees_own_identity_and_rows(clients: dict[str, Any]) -> None:
    expected = {
        "alice": [("AMER", decimal.Decimal("250.5")), ("EMEA", decimal.Decimal("100"))],
        "bob": [
            ("AMER", decimal.Decimal("42")),
            ("APAC", decimal.Decimal("75.25")),
            ("EMEA", decimal.Decimal("300")),
        ],
    }
    for login, rows in expected.items():
        email = f"{login}@example.com"
        assert C.whoami(clients[login]) == {"user": email, "role": None}
        table = C.query_arrow(
            clients[login], "SELECT region, amount, owner FROM demo.sales ORDER BY region"
        )
        data = table.to_pylist()
        assert {r["owner"] for r in data} == {email}
        assert [(r["region"], r["amount"]) for r in data] == rows


# -- parameters ------------------------------------------------------------------------------


def test_named_parameters_of_several_types(clients: dict[str, Any]) -> None:
    params = {
        "n": 41,
        "ratio": 0.25,
        "flag": True,
        "s": "it's -- not injected'; DROP TABLE demo.sales",
        "amount": decimal.Decimal("12.34"),
        "ts": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "local": dt.datetime(2024, 1, 2, 3, 4, 5),
        "day": dt.date(2024, 1, 2),
        "at": dt.time(1, 2, 3),
        "nothing": None,
        "ids": [1, 2, 3],
        "names": ["a", "b"],
    }
    sql = "SELECT @n + 1 AS n1, " + ", ".join(f"@{k} AS {k}" for k in params)
    table = C.query_arrow(clients["alice"], sql, params)
    row = table.to_pylist()[0]
    assert row["n1"] == 42
    for key, value in params.items():
        assert row[key] == value, key
    types = {f.name: str(f.type) for f in table.schema}
    assert types["n"] == "int64"
    assert types["ratio"] == "double"
    assert types["flag"] == "bool"
    assert types["amount"].startswith("decimal128")
    assert types["ts"] == "timestamp[us, tz=UTC]"
    assert types["local"] == "timestamp[us]"
    assert types["day"] == "date32[day]"
    assert types["ids"].startswith("list<item: int64>")

    # as filters, the way users write them
    rows = C.query_arrow(
        clients["bob"],
        "SELECT region FROM demo.sales WHERE region IN UNNEST(@regions) "
        "AND amount >= @min ORDER BY region",
        {"regions": ["EMEA", "APAC", "nowhere"], "min": decimal.Decimal("50")},
    ).to_pylist()
    assert rows == [{"region": "APAC"}, {"region": "EMEA"}]
    struct = C.query_arrow(clients["alice"], "SELECT @st AS st", {"st": {"x": 1, "y": "a"}})
    assert struct.to_pylist() == [{"st": {"x": 1, "y": "a"}}]


def test_parameter_types_are_inferred() -> None:
    from google.cloud import bigquery

    params = C.query_parameters(
        {
            "b": False,
            "i": 7,
            "f": 1.5,
            "d": decimal.Decimal("1.5"),
            "big": decimal.Decimal("1.0000000001"),
            "s": "x",
            "ts": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            "dtm": dt.datetime(2024, 1, 1),
            "day": dt.date(2024, 1, 1),
            "t": dt.time(1),
            "raw": b"\x00\x01",
            "none": None,
            "ints": [1, None, 2],
            "mixed": [1, 2.5],
            "empty": [],
        }
    )
    by_name = {p.name: p for p in params}
    scalar = {
        n: p.type_ for n, p in by_name.items() if isinstance(p, bigquery.ScalarQueryParameter)
    }
    assert scalar == {
        "b": "BOOL",
        "i": "INT64",
        "f": "FLOAT64",
        "d": "NUMERIC",
        "big": "BIGNUMERIC",
        "s": "STRING",
        "ts": "TIMESTAMP",
        "dtm": "DATETIME",
        "day": "DATE",
        "t": "TIME",
        "raw": "BYTES",
        "none": "STRING",
    }
    assert by_name["none"].value is None
    arrays = {
        n: p.array_type for n, p in by_name.items() if isinstance(p, bigquery.ArrayQueryParameter)
    }
    assert arrays == {"ints": "INT64", "mixed": "FLOAT64", "empty": "STRING"}
    # numpy/pandas values, as they come out of DataFrames
    import numpy as np
    import pandas as pd

    np_params = {
        p.name: p
        for p in C.query_parameters(
            {
                "i": np.int64(5),
                "f": np.float32(0.5),
                "b": np.bool_(True),
                "arr": np.array([1, 2]),
                "col": pd.Series(["a", "b"]),
                "when": pd.Timestamp("2024-01-01", tz="UTC"),
            }
        )
    }
    assert (np_params["i"].type_, np_params["i"].value) == ("INT64", 5)
    assert type(np_params["i"].value) is int
    assert (np_params["f"].type_, np_params["f"].value) == ("FLOAT64", 0.5)
    assert (np_params["b"].type_, np_params["b"].value) == ("BOOL", True)
    assert (np_params["arr"].array_type, np_params["arr"].values) == ("INT64", [1, 2])
    assert (np_params["col"].array_type, np_params["col"].values) == ("STRING", ["a", "b"])
    assert np_params["when"].type_ == "TIMESTAMP"
    # a hand-built parameter passes through
    own = bigquery.ScalarQueryParameter("x", "GEOGRAPHY", "POINT(1 2)")
    assert C.query_parameters({"x": own}) == [own]


def test_unsupported_parameter_is_a_query_error() -> None:
    with pytest.raises(QueryError, match=r"@s: cannot bind a value of type set"):
        C.query_parameters({"s": {1, 2}})
    with pytest.raises(QueryError, match=r"mixes types"):
        C.query_parameters({"m": [1, "a"]})


# -- results ---------------------------------------------------------------------------------


def test_query_arrow_many_rows(clients: dict[str, Any]) -> None:
    messages: list[str] = []
    table = C.query_arrow(
        clients["alice"], "SELECT * FROM bench.big ORDER BY id", progress=messages.append
    )
    assert table.num_rows == BIG_ROWS
    assert table.column_names == BIG_COLUMNS
    assert table.column("name").null_count == BIG_ROWS // 5
    assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    assert str(table.schema.field("amount").type).startswith("decimal128")
    assert messages[0].startswith("running job connauth_")
    assert messages[-1] == f"downloading {BIG_ROWS} rows"


def test_query_pandas_many_rows(clients: dict[str, Any]) -> None:
    # No warning filter: query_pandas avoids the deprecated RowIterator.to_dataframe().
    df = C.query_pandas(clients["alice"], "SELECT * FROM bench.big ORDER BY id")
    assert len(df) == BIG_ROWS
    assert list(df.columns) == BIG_COLUMNS
    assert str(df["id"].dtype) == "Int64"
    assert str(df["qty"].dtype) == "Int64"  # nullable, not float64
    assert df["qty"].isna().sum() == len(range(0, BIG_ROWS, 11))
    assert str(df["active"].dtype) == "boolean"
    assert df["active"].sum() == BIG_ROWS // 2
    assert str(df["price"].dtype) == "float64"
    assert str(df["created_at"].dtype) == "datetime64[us, UTC]"
    assert df["name"].isna().sum() == BIG_ROWS // 5
    assert isinstance(df["amount"].dropna().iloc[0], decimal.Decimal)


def test_empty_result_keeps_columns(clients: dict[str, Any]) -> None:
    sql = "SELECT region, amount, owner FROM demo.sales WHERE region = @r"
    table = C.query_arrow(clients["alice"], sql, {"r": "nowhere"})
    assert table.num_rows == 0
    assert table.column_names == ["region", "amount", "owner"]
    assert str(table.schema.field("amount").type).startswith("decimal128")
    df = C.query_pandas(clients["alice"], sql, {"r": "nowhere"})
    assert len(df) == 0
    assert list(df.columns) == ["region", "amount", "owner"]


def test_max_rows_guard(clients: dict[str, Any], tokens: dict[str, str]) -> None:
    sql = "SELECT id FROM bench.big"
    assert C.query_arrow(clients["alice"], sql, max_rows=BIG_ROWS).num_rows == BIG_ROWS
    with pytest.raises(TooManyRows) as exc_info:
        C.query_arrow(clients["alice"], sql, max_rows=100)
    err = exc_info.value
    assert f"returned {BIG_ROWS} rows, more than the limit of 100" in err.message
    assert err.fix is not None and "LIMIT" in err.fix and "--max-rows" in err.fix
    with pytest.raises(TooManyRows):
        C.query_pandas(clients["alice"], sql, max_rows=BIG_ROWS - 1)
    assert C.translate_error(err, make_info("http://x")) is err
    assert_no_token(err, tokens)


def test_keyboard_interrupt_cancels_the_job(
    clients: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = clients["alice"]
    jobs: list[Any] = []
    cancelled: list[str] = []
    real_query = client.query

    def spy_query(*args: Any, **kwargs: Any) -> Any:
        job = real_query(*args, **kwargs)
        real_cancel = job.cancel

        def cancel(**kw: Any) -> Any:
            cancelled.append(job.job_id)
            return real_cancel(**kw)

        job.cancel = cancel
        jobs.append(job)
        return job

    monkeypatch.setattr(client, "query", spy_query)

    def interrupt(message: str) -> None:
        if message.startswith("running job"):
            raise KeyboardInterrupt  # Ctrl-C while the job runs

    with pytest.raises(KeyboardInterrupt):
        C.query_arrow(client, "SELECT COUNT(*) FROM bench.big", progress=interrupt)
    assert cancelled == [jobs[0].job_id]
    # the cancel reached BigQuery: the job is known there under the user
    assert client.get_job(jobs[0].job_id).job_id == jobs[0].job_id


# -- errors ------------------------------------------------------------------------------------


def test_sql_error_is_a_query_error(
    clients: dict[str, Any], info: ConnectionInfo, tokens: dict[str, str]
) -> None:
    with pytest.raises(Exception) as exc_info:
        C.query_arrow(clients["alice"], "SELEC 1")
    err = translated(exc_info.value, info)
    assert type(err) is QueryError
    assert err.message.startswith("BigQuery: Syntax error:")
    assert "POST http" not in str(err) and "Location:" not in str(err)
    assert "(job connauth_" in err.message
    assert not C.is_auth_error(exc_info.value)
    assert_no_token(err, tokens)

    with pytest.raises(Exception) as exc_info:
        C.query_arrow(clients["alice"], "SELECT * FROM demo.nope")
    err = translated(exc_info.value, info)
    assert isinstance(err, QueryError) and err.code == "not_found"
    assert "Not found: Table test-project.demo.nope" in err.message
    assert err.fix is not None and "dataset" in err.fix

    with pytest.raises(Exception) as exc_info:
        C.query_arrow(clients["alice"], "SELECT @missing AS m")
    err = translated(exc_info.value, info)
    assert isinstance(err, QueryError)
    assert err.fix is not None and "--params" in err.fix


BAD_TOKENS = {
    "tampered_signature": lambda good: good[:-8] + ("A" * 8 if good[-8:] != "A" * 8 else "B" * 8),
    "not_a_jwt": lambda good: "ya29.not-a-real-token-" + good[-12:],
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_token_asks_to_reauthorize(
    case: str, info: ConnectionInfo, tokens: dict[str, str], bq_server: BigQueryServer
) -> None:
    bad = BAD_TOKENS[case](tokens["alice"])
    conn = C.connect(info, Credential(bad, None))
    try:
        for call in (
            lambda: C.query_arrow(conn, "SELECT 1 AS x"),
            lambda: C.list_schemas(conn, PROJECT),
            lambda: C.whoami(conn),
        ):
            with pytest.raises(ConsentRequired) as exc_info:
                call()
            raw = exc_info.value
            assert C.is_auth_error(raw)
            err = translated(raw, info)
            assert err.code == "token_rejected"
            assert err.fix is not None
            assert "re-authorize through the broker" in err.fix
            assert "%sql_connector authorize warehouse" in err.fix
            assert_no_token(err, tokens, bad)
            assert_no_token(raw, tokens, bad)
    finally:
        C.close(conn)
    assert bq_server.stats()["unauthenticated"] >= 3


def test_driver_auth_errors_are_translated(
    bq_server: BigQueryServer, info: ConnectionInfo, tokens: dict[str, str]
) -> None:
    """google-auth's RefreshError (plain Credentials(token)) and 401/UNAUTHENTICATED."""
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import RefreshError

    bad = tokens["bob"][:-6] + "AAAAAA"
    client = bq_server.client(bad, project=PROJECT)  # google.oauth2.credentials.Credentials
    with pytest.raises(RefreshError) as exc_info:
        client.query("SELECT 1").result()
    client.close()
    driver_errors: list[BaseException] = [
        exc_info.value,
        gexc.Unauthorized("Request had invalid authentication credentials."),
        gexc.Unauthenticated("Request had invalid authentication credentials."),
        gexc.RetryError("Timeout of 600.0s exceeded", gexc.Unauthorized("invalid credentials")),
    ]
    for exc in driver_errors:
        assert C.is_auth_error(exc), exc
        err = translated(exc, info)
        assert isinstance(err, ConsentRequired) and err.code == "token_rejected"
        assert err.fix is not None and "%sql_connector authorize warehouse" in err.fix
        assert_no_token(err, tokens, bad)


def test_no_dataset_access_names_the_role(
    clients: dict[str, Any], info: ConnectionInfo, tokens: dict[str, str]
) -> None:
    calls = (
        lambda: C.query_arrow(clients["bob"], "SELECT COUNT(*) AS n FROM bench.big"),
        lambda: C.list_tables(clients["bob"], PROJECT, "bench"),
        lambda: C.list_columns(clients["bob"], PROJECT, "bench", "big"),
    )
    for call in calls:
        with pytest.raises(Exception) as exc_info:
            call()
        assert not C.is_auth_error(exc_info.value)
        err = translated(exc_info.value, info)
        assert isinstance(err, AccessDenied) and err.code == "permission_denied"
        assert "Access Denied" in err.message and "bench" in err.message
        assert err.fix is not None
        assert "roles/bigquery.dataViewer on the dataset" in err.fix
        assert f"roles/bigquery.jobUser on project {PROJECT}" in err.fix
        assert_no_token(err, tokens)

    # a valid token for a user with no grants at all: jobs.create is what's missing
    with pytest.raises(Exception) as exc_info:
        C.query_arrow(clients["carol"], "SELECT 1 AS x")
    err = translated(exc_info.value, info)
    assert isinstance(err, AccessDenied)
    assert "bigquery.jobs.create" in err.message
    assert err.fix is not None
    assert err.fix.startswith("ask a BigQuery admin to grant the user roles/bigquery.jobUser")


def test_unreachable_endpoint_names_it(tokens: dict[str, str]) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    info = make_info(endpoint, retry_deadline=1)
    conn = C.connect(info, Credential(tokens["alice"], None))
    try:
        for call in (
            lambda: C.query_arrow(conn, "SELECT 1"),
            lambda: C.list_schemas(conn, PROJECT),
        ):
            with pytest.raises(Exception) as exc_info:
                call()
            err = translated(exc_info.value, info)
            assert err.code == "warehouse_unreachable"
            assert err.message == f"Cannot reach BigQuery at {endpoint}: connection refused."
            assert err.fix is not None and "api_endpoint" in err.fix
            assert not C.is_auth_error(exc_info.value)
            assert_no_token(err, tokens)
    finally:
        C.close(conn)


def test_other_driver_errors_are_translated(tokens: dict[str, str]) -> None:
    import requests
    from google.api_core import exceptions as gexc

    info = make_info("http://bq.internal:9050")
    default = ConnectionInfo(name="bq", connector="bigquery", auth="oauth", params={"project": "p"})
    timeout = translated(requests.exceptions.ReadTimeout("Read timed out."), info)
    assert (
        timeout.message
        == "Cannot reach BigQuery at http://bq.internal:9050: the connection timed out."
    )
    assert translated(requests.exceptions.ConnectionError("boom"), default).message == (
        "Cannot reach BigQuery at https://bigquery.googleapis.com: the connection failed."
    )
    quota = translated(
        gexc.Forbidden(
            "Quota exceeded", errors=[{"reason": "quotaExceeded", "message": "Quota exceeded"}]
        ),
        info,
    )
    assert quota.code == "quota_exceeded"
    storage = translated(
        gexc.ServiceUnavailable("errors resolving bigquerystorage.googleapis.com:443"), info
    )
    assert storage.fix is not None and "use_storage_api: False" in storage.fix
    session = translated(
        gexc.PermissionDenied("User does not have bigquery.readsessions.create permission"), info
    )
    assert session.fix is not None and "roles/bigquery.readSessionUser" in session.fix
    server = translated(gexc.InternalServerError("backend error"), info)
    assert server.code == "warehouse_error"
    # a token that leaks into a driver message is scrubbed
    leaky = gexc.BadRequest(f"Bad header: Bearer {tokens['alice']}")
    err = translated(leaky, info)
    assert isinstance(err, QueryError)
    assert_no_token(err, tokens)
    assert C.translate_error(ValueError("unrelated"), info) is None


# -- metadata ----------------------------------------------------------------------------------


def test_metadata(
    clients: dict[str, Any], bq_server: BigQueryServer, tokens: dict[str, str]
) -> None:
    from google.cloud import bigquery

    admin = bq_server.client(tokens["admin"], project=PROJECT)
    view = bigquery.Table(f"{PROJECT}.demo.sales_by_region")
    view.view_query = (
        f"SELECT region, SUM(amount) AS total FROM `{PROJECT}.demo.sales` GROUP BY region"
    )
    admin.create_table(view, exists_ok=True)
    admin.close()

    assert C.list_catalogs(clients["alice"])[0] == PROJECT
    assert C.list_schemas(clients["alice"], PROJECT) == ["bench", "demo"]
    assert C.list_schemas(clients["bob"], PROJECT) == ["demo"]
    assert C.list_tables(clients["bob"], PROJECT, "demo") == [
        {"name": "sales", "type": "TABLE", "kind": "TABLE"},
        {"name": "sales_by_region", "type": "VIEW", "kind": "VIEW"},
    ]
    assert C.list_tables(clients["alice"], PROJECT, "bench") == [
        {"name": "big", "type": "TABLE", "kind": "TABLE"}
    ]
    assert C.list_columns(clients["alice"], PROJECT, "demo", "sales") == [
        {"name": "region", "type": "STRING", "nullable": True},
        {"name": "amount", "type": "NUMERIC", "nullable": True},
        {"name": "owner", "type": "STRING", "nullable": True},
    ]
    columns = {
        c["name"]: c["type"] for c in C.list_columns(clients["alice"], PROJECT, "bench", "big")
    }
    assert columns["id"] in ("INTEGER", "INT64")
    assert columns["created_at"] == "TIMESTAMP"
    assert columns["active"] in ("BOOLEAN", "BOOL")
