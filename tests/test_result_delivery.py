"""Large results the way the warehouses send them, through the connectors.

Each local server sends a large result the way the real service does (Snowflake: a first
chunk inline plus presigned chunk URLs; Databricks: CloudFetch links; BigQuery: the query's
destination table through the Storage Read API); the official driver downloads it and the
connector's DataFrame equals the inline result, dtypes included. The servers count what
they served, which shows the driver really took that path.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pandas as pd
import pytest

from jupyter_connauth.connectors import get_connector
from jupyter_connauth.connectors.base import ConnectionInfo, Credential
from jupyter_connauth.connectors.streaming import SMALL_ROWS
from tests.servers.keys import JwksServer, new_key, public_pem, rsa_jwk

pytestmark = pytest.mark.timeout(240)

ROWS = 50_000
ALICE, BOB = "alice@example.com", "bob@example.com"
ISSUER = "https://idp.results.test"


class Keys:
    """One RSA key, its JWKS served over local HTTP (tests/servers/keys.py), a minter."""

    def __init__(self) -> None:
        self.key = new_key()
        self.jwks = {"keys": [rsa_jwk(self.key, "k1")]}
        self.server = JwksServer(self.jwks["keys"], "/jwks").start()
        self.jwks_url = self.server.url

    def pem(self) -> str:
        return public_pem(self.key)

    def token(self, aud: str, email: str = ALICE, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": aud, "sub": email, "email": email, "iat": now - 5}
        payload.update(exp=now + 900, jti=uuid.uuid4().hex, **claims)
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    k = Keys()
    yield k
    k.server.close()


def _query(info: ConnectionInfo, token: str, sql: str) -> pd.DataFrame:
    connector = get_connector(info.connector)
    conn = connector.connect(info, Credential(token, time.time() + 900))
    try:
        return connector.query_pandas(conn, sql, max_rows=1_000_000)
    finally:
        connector.close(conn)


# ----------------------------------------------------------------------------- Snowflake
SF_AUD = "snowflake:results"


def _sf_server(keys: Keys, **extra: Any) -> Any:
    from tests.servers.snowflake.fixture import SnowflakeServer

    SnowflakeServer.ensure_env()
    return SnowflakeServer(
        {
            "issuer": ISSUER,
            "audiences": [SF_AUD],
            "public_keys": [keys.pem()],
            "users": {ALICE: {"name": "ALICE", "default_role": "ANALYST", "roles": ["ANALYST"]}},
            "seed_big_rows": ROWS,
            **extra,
        }
    )


def _sf_info(server: Any) -> ConnectionInfo:
    options = server.connect_kwargs("x")
    for key in ("token", "authenticator", "account", "database", "schema"):
        options.pop(key, None)
    return ConnectionInfo(
        "sf",
        "snowflake",
        "oauth",
        {"account": "connauth", "database": "CONNAUTH", "schema": "PUBLIC"},
        options,
    )


def test_snowflake_chunked_result_equals_inline(keys: Keys) -> None:
    sql = "SELECT * FROM BIG ORDER BY ID"
    token = keys.token(SF_AUD, scp="session:role:ANALYST")
    chunked = {"result_inline_rows": 1000, "result_chunk_rows": 10_000}
    with _sf_server(keys, **chunked) as sf:
        df = _query(_sf_info(sf), token, sql)
        stats = sf.stats()
    with _sf_server(keys, result_inline_rows=10 * ROWS) as sf_inline:
        inline = _query(_sf_info(sf_inline), token, sql)
        inline_stats = sf_inline.stats()
        # a result of exactly one Arrow batch, of more rows than SMALL_ROWS
        connector = get_connector("snowflake")
        conn = connector.connect(_sf_info(sf_inline), Credential(token, time.time() + 900))
        one = f"{sql} LIMIT 2048"
        try:
            cur = conn.cursor()
            cur.execute(one)
            assert [b.num_rows for b in cur.fetch_arrow_batches()] == [2048] > [SMALL_ROWS]
            cur.close()
            single = connector.query_pandas(conn, one)
            whole = connector.to_pandas(connector.query_arrow(conn, one))
        finally:
            connector.close(conn)
    pd.testing.assert_frame_equal(single, whole)
    # 1000 rows inline, then 49,000 in 5 chunks of ≤ 10,000, each downloaded once
    assert stats["results_chunked"] == 1 and stats["chunks_created"] == 5
    assert stats["chunk_downloads"] == 5 and stats["chunk_rejected"] == 0
    assert inline_stats["chunk_downloads"] == 0
    assert len(df) == ROWS
    pd.testing.assert_frame_equal(df, inline)


def test_snowflake_chunk_urls_expire_like_presigned_urls(keys: Keys) -> None:
    import snowflake.connector

    with _sf_server(
        keys, result_inline_rows=1000, result_chunk_rows=10_000, result_url_ttl=1
    ) as sf:
        token = keys.token(SF_AUD, scp="session:role:ANALYST")
        with snowflake.connector.connect(**sf.connect_kwargs(token)) as conn:
            cur = conn.cursor()
            cur.execute("SELECT * FROM BIG")
            time.sleep(2.2)  # the driver downloads chunks when fetching: after expiry here
            with pytest.raises(snowflake.connector.errors.Error):
                cur.fetch_pandas_all()
        stats = sf.stats()
    assert stats["chunk_downloads"] == 0 and stats["chunk_rejected"] >= 1


#: Results the batch-at-a-time conversion (connectors/streaming.py) could get wrong,
#: against the driver's all-at-once conversion of the same result. Chunks of 10,000 rows:
#: nulls in an INTEGER and a BOOLEAN column only from row 30,000 on (the column's dtype
#: changes after earlier chunks were converted: float64 and object, as for the whole
#: column), a NUMBER(12,2) column (float64), a small result, an empty one.
SF_STREAM_QUERIES = {
    "late nulls": (
        "SELECT ID, CASE WHEN ID >= 30000 AND ID % 7 = 0 THEN NULL ELSE ID END AS LATE_INT, "
        "CASE WHEN ID >= 30000 AND ID % 5 = 0 THEN NULL ELSE FLAG END AS LATE_BOOL, "
        "AMOUNT, NAME, NOTE, CREATED_AT, DAY FROM BIG ORDER BY ID"
    ),
    "small": "SELECT * FROM BIG ORDER BY ID LIMIT 10",  # converted whole (≤ SMALL_ROWS)
    "empty": "SELECT * FROM BIG WHERE ID < 0",
}


@pytest.fixture(scope="module")
def sf_chunked(keys: Keys) -> Iterator[Any]:
    chunked = {"result_inline_rows": 1000, "result_chunk_rows": 10_000}
    with _sf_server(keys, **chunked) as sf:
        yield sf


def test_snowflake_streamed_result_equals_the_drivers_whole_result(
    keys: Keys, sf_chunked: Any
) -> None:
    connector = get_connector("snowflake")
    token = keys.token(SF_AUD, scp="session:role:ANALYST")
    conn = connector.connect(_sf_info(sf_chunked), Credential(token, time.time() + 900))
    try:
        for name, sql in SF_STREAM_QUERIES.items():
            before = sf_chunked.stats()["chunk_downloads"]
            df = connector.query_pandas(conn, sql, max_rows=1_000_000)
            downloads = sf_chunked.stats()["chunk_downloads"] - before
            # the driver's fetch_arrow_all, then to_pandas: the conversion before streaming
            whole = connector.to_pandas(connector.query_arrow(conn, sql))
            pd.testing.assert_frame_equal(df, whole, obj=name)
            if name == "late nulls":
                assert downloads == 5  # 1,000 rows inline, then 5 chunks
                assert [str(t) for t in df.dtypes[1:3]] == ["float64", "object"]
                assert df["LATE_INT"].isna().sum() > 0 and df["LATE_INT"][:30000].notna().all()
                assert set(map(type, df["LATE_BOOL"].dropna())) == {bool}
            elif name == "small":
                assert downloads == 0 and len(df) == 10
            else:
                assert len(df) == 0 and list(df.columns) == list(whole.columns)
    finally:
        connector.close(conn)


def test_snowflake_ctrl_c_while_chunks_download(keys: Keys) -> None:
    """Ctrl-C while the driver downloads chunks (a slow object store: 2 s a chunk): the
    fetch stops before its next batch instead of converting the rest, and the session
    runs the next query in full."""
    import _thread

    slow = {"result_inline_rows": 1000, "result_chunk_rows": 10_000, "result_chunk_delay": 2.0}
    with _sf_server(keys, **slow) as sf:
        connector = get_connector("snowflake")
        token = keys.token(SF_AUD, scp="session:role:ANALYST")
        conn = connector.connect(_sf_info(sf), Credential(token, time.time() + 900))
        try:
            seen: list[str] = []
            timers: list[threading.Timer] = []

            def progress(status: str) -> None:
                seen.append(status)
                if status.startswith("fetching"):
                    timers.append(threading.Timer(0.3, _thread.interrupt_main))
                    timers[0].start()

            t0 = time.monotonic()
            try:
                with pytest.raises(KeyboardInterrupt):
                    connector.query_pandas(conn, "SELECT * FROM BIG", progress=progress)
            finally:
                for timer in timers:
                    timer.cancel()
            assert seen == ["running", f"fetching {ROWS:,} rows", "cancelling"]
            # the worker stopped at the first chunk (≈ 2 s), not after the last (≈ 4 s: 4
            # downloads in parallel, then the fifth); measured 2.1 s vs 4.2 s without the stop
            assert time.monotonic() - t0 < 3.2
            df = connector.query_pandas(conn, "SELECT ID FROM BIG ORDER BY ID")
            assert df["ID"].tolist() == list(range(ROWS))
        finally:
            connector.close(conn)


# ----------------------------------------------------------------------------- Databricks
DBX_AUD = "databricks-results"


def test_databricks_cloudfetch_result_equals_inline(keys: Keys) -> None:
    from tests.servers.databricks.fixture import DatabricksServer

    config = {
        "jwks": keys.jwks,
        "issuer": ISSUER,
        "audience": DBX_AUD,
        "users": {ALICE: {"name": "Alice"}},
        "seed_big_rows": ROWS,
        "lz4": True,
        "cloudfetch_min_rows": 1000,
        "cloudfetch_file_rows": 10_000,
    }
    sql = "SELECT * FROM main.bench.big ORDER BY id"
    with DatabricksServer(config) as srv:
        kw = srv.connect_kwargs("x")
        options = {k: kw[k] for k in ("_connection_uri", "_tls_trusted_ca_file")}
        params = {"server_hostname": kw["server_hostname"], "http_path": kw["http_path"]}
        info = ConnectionInfo("dbx", "databricks", "oauth", params, options)
        token = keys.token(DBX_AUD)
        df = _query(info, token, sql)
        stats = srv.stats()
        no_links = ConnectionInfo("dbx", "databricks", "oauth", params,
                                  {**options, "use_cloud_fetch": False})  # fmt: skip
        inline = _query(no_links, token, sql)
        after = srv.stats()
    assert stats["cloudfetch_results"] == 1 and stats["cloudfetch_files"] == 5
    assert stats["cloudfetch_downloads"] == 5 and stats["cloudfetch_rejected"] == 0
    assert after["cloudfetch_downloads"] == 5  # the inline query took no link
    assert len(df) == ROWS
    pd.testing.assert_frame_equal(df, inline)


# ----------------------------------------------------------------------------- BigQuery
BQ_AUD = "https://bigquery.results.test"
BQ_ROWS = 20_000  # the inline path is REST JSON at ~70 µs a row here


@pytest.fixture(scope="module")
def bq(keys: Keys) -> Iterator[Any]:
    pytest.importorskip("google.cloud.bigquery_storage_v1")
    from tests.servers.bigquery.fixture import BigQueryServer

    with BigQueryServer(
        {
            "project": "test-project",
            "jwks_url": keys.jwks_url,
            "issuer": ISSUER,
            "audience": BQ_AUD,
            "users": {ALICE: ["bench"], BOB: ["bench"]},
            "seed_big_rows": BQ_ROWS,
        }
    ) as srv:
        yield srv


def _bq_info(srv: Any, **options: Any) -> ConnectionInfo:
    opts = {"client_options": {"api_endpoint": srv.endpoint}, **options}
    return ConnectionInfo("bq", "bigquery", "oauth", {"project": "test-project"}, opts)


@pytest.mark.filterwarnings("ignore:Retrieving Arrow record batches:PendingDeprecationWarning")
def test_bigquery_storage_read_result_equals_rest(bq: Any, keys: Keys) -> None:
    sql = "SELECT * FROM `test-project.bench.big` ORDER BY id"
    token = keys.token(BQ_AUD)
    bq.reset_stats()
    storage = _bq_info(bq, storage_api_endpoint=f"http://{bq.grpc_endpoint}")
    df = _query(storage, token, sql)
    stats = bq.stats()
    rest = _query(_bq_info(bq, use_storage_api=False), token, sql)
    after = bq.stats()
    assert stats["storage_result_sessions"] == 1 and stats["storage_read_rows_calls"] >= 1
    assert after["storage_result_sessions"] == 1  # the REST query read no session
    assert len(df) == BQ_ROWS
    pd.testing.assert_frame_equal(df, rest)


@pytest.mark.filterwarnings("ignore:Retrieving Arrow record batches:PendingDeprecationWarning")
def test_bigquery_streamed_result_equals_the_drivers_whole_result(bq: Any, keys: Keys) -> None:
    """Storage Read batches converted one at a time equal ``to_arrow()`` converted whole:
    INT64/BOOL nullable with nulls only in later batches, TIMESTAMP in UTC, and a NUMERIC
    column whose values need 1 digit of scale in the first rows and 3 after row 15,000
    (the earlier batches' Decimals re-quantized: every value shows the column's scale)."""
    connector = get_connector("bigquery")
    info = _bq_info(bq, storage_api_endpoint=f"http://{bq.grpc_endpoint}")
    client = connector.connect(info, Credential(keys.token(BQ_AUD), time.time() + 900))
    sql = (
        "SELECT id, IF(id >= 15000 AND MOD(id, 7) = 0, NULL, id) AS late_int, "
        "IF(id >= 15000 AND MOD(id, 5) = 0, NULL, active) AS late_bool, created_at, name, "
        "IF(id < 15000, NUMERIC '2.5', NUMERIC '1.125') AS late_scale "
        "FROM `test-project.bench.big` ORDER BY id"
    )
    from jupyter_connauth.connectors.bigquery_storage import read_client

    reader = read_client(client, f"http://{bq.grpc_endpoint}")
    batches = client.query(sql).result().to_arrow_iterable(bqstorage_client=reader)
    assert sum(1 for _ in batches) > 1  # the result comes in several batches
    df = connector.query_pandas(client, sql)
    whole = connector.to_pandas(connector.query_arrow(client, sql))
    pd.testing.assert_frame_equal(df, whole)
    dtypes = [str(t) for t in df.dtypes]  # name: str (pandas 3) or object (pandas 2)
    assert dtypes[:4] + dtypes[5:] == ["Int64", "Int64", "boolean", "datetime64[us, UTC]", "object"]
    assert df["late_int"][:15000].notna().all() and df["late_int"].isna().any()
    assert {str(d) for d in df["late_scale"]} == {"2.500", "1.125"}
    # a result of exactly one Storage Read page, of more rows than SMALL_ROWS
    one = sql.replace("ORDER BY id", "ORDER BY id LIMIT 2048")
    before = bq.stats()["storage_result_sessions"]
    pages = client.query(one).result().to_arrow_iterable(bqstorage_client=reader)
    assert [b.num_rows for b in pages] == [2048] and 2048 > SMALL_ROWS
    single = connector.query_pandas(client, one)
    assert bq.stats()["storage_result_sessions"] == before + 2  # both read through Storage
    pd.testing.assert_frame_equal(single, connector.to_pandas(connector.query_arrow(client, one)))
    no_rows = sql.replace("ORDER BY", "WHERE id < 0 ORDER BY")
    empty = connector.query_pandas(client, no_rows)
    whole_empty = connector.to_pandas(connector.query_arrow(client, no_rows))
    pd.testing.assert_frame_equal(empty, whole_empty)
    assert len(empty) == 0 and list(empty.dtypes) == list(df.dtypes)


def test_bigquery_result_table_is_readable_by_its_owner_only(bq: Any, keys: Keys) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud.bigquery_storage_v1 import types

    from jupyter_connauth.connectors.bigquery_storage import read_client

    connector = get_connector("bigquery")
    alice = connector.connect(_bq_info(bq), Credential(keys.token(BQ_AUD), None))
    bob = connector.connect(_bq_info(bq), Credential(keys.token(BQ_AUD, BOB), None))
    job = alice.query("SELECT id FROM `test-project.bench.big` LIMIT 10")
    job.result()
    dest = job.destination
    table = f"projects/{dest.project}/datasets/{dest.dataset_id}/tables/{dest.table_id}"
    request = {
        "parent": f"projects/{dest.project}",
        "read_session": types.ReadSession(table=table, data_format=types.DataFormat.ARROW),
        "max_stream_count": 1,
    }
    session = read_client(alice, f"http://{bq.grpc_endpoint}").create_read_session(**request)
    assert len(session.streams) == 1
    with pytest.raises(gexc.PermissionDenied):
        read_client(bob, f"http://{bq.grpc_endpoint}").create_read_session(**request)
