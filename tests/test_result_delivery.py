"""Large results the way the warehouses send them, through the connectors.

Each local server sends a large result the way the real service does (Snowflake: a first
chunk inline plus presigned chunk URLs; Databricks: CloudFetch links; BigQuery: the query's
destination table through the Storage Read API); the official driver downloads it and the
connector's DataFrame equals the inline result, dtypes included. The servers count what
they served, which shows the driver really took that path.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jupyter_connauth.connectors import get_connector
from jupyter_connauth.connectors.base import ConnectionInfo, Credential

pytestmark = pytest.mark.timeout(240)

ROWS = 50_000
ALICE, BOB = "alice@example.com", "bob@example.com"
ISSUER = "https://idp.results.test"


class Keys:
    """One RSA key, its JWKS served over local HTTP, and a token minter."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid="k1", use="sig", alg="RS256")
        self.jwks = {"keys": [jwk]}
        body = json.dumps(self.jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.jwks_url = f"http://127.0.0.1:{self.httpd.server_port}/jwks"

    def pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def token(self, aud: str, email: str = ALICE, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": aud, "sub": email, "email": email, "iat": now - 5}
        payload.update(exp=now + 900, jti=uuid.uuid4().hex, **claims)
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    k = Keys()
    yield k
    k.httpd.shutdown()
    k.httpd.server_close()


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
