"""The local BigQuery server, driven by the official google-cloud-bigquery client.

A throwaway RSA key plays the IdP: its JWKS is served from a local HTTP
thread and tokens are minted with PyJWT.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import google.auth.credentials
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions as gexc
from google.auth.exceptions import RefreshError
from google.cloud import bigquery

from ..keys import JwksServer, new_key, rsa_jwk
from .fixture import BIG_COLUMNS, BigQueryServer

AUDIENCE = "https://bigquery.test.local"
PROJECT = "test-project"
ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"  # valid token, no grants
BIG_ROWS = 100_000

# google-cloud-bigquery >= 3.4x warns on every to_dataframe() call.
TO_DATAFRAME_DEPRECATION = (
    "ignore:Retrieving DataFrames via google-cloud-bigquery is deprecated:PendingDeprecationWarning"
)

# google-cloud-bigquery-storage >= 2.4x warns whenever it builds Arrow batches.
STORAGE_ARROW_DEPRECATION = (
    "ignore:Retrieving Arrow record batches directly via "
    "google-cloud-bigquery-storage is deprecated"
    ":PendingDeprecationWarning"
)


class FakeIdP:
    """RSA key + JWKS endpoint + token minting."""

    def __init__(self) -> None:
        self.key = new_key()
        self.kid = uuid.uuid4().hex[:8]
        self.jwks = JwksServer([rsa_jwk(self.key, self.kid)], "/.well-known/jwks.json").start()
        self.issuer = self.jwks.base_url
        self.jwks_url = self.jwks.url

    def mint(
        self,
        email: str,
        *,
        audience: str = AUDIENCE,
        issuer: str | None = None,
        lifetime: int = 600,
        key: Any = None,
        kid: str | None = None,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer or self.issuer,
            "aud": audience,
            "sub": email.split("@")[0],
            "email": email,
            "iat": now - 5,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid}
        )

    @property
    def jwks_hits(self) -> int:
        return self.jwks.hits

    def close(self) -> None:
        self.jwks.close()


class RefreshingCredentials(google.auth.credentials.Credentials):
    """Token credentials whose refresh() asks a supplier (as a broker-backed kernel would)."""

    def __init__(self, supplier: Callable[[], str]) -> None:
        super().__init__()
        self._supplier = supplier
        self.token = supplier()
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        self.token = self._supplier()


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeIdP]:
    provider = FakeIdP()
    yield provider
    provider.close()


@pytest.fixture(scope="module")
def server(idp: FakeIdP) -> Iterator[BigQueryServer]:
    srv = BigQueryServer(
        {
            "project": PROJECT,
            "jwks_url": idp.jwks_url,
            "issuer": idp.issuer,
            "audience": AUDIENCE,
            "users": {ALICE: ["demo", "bench"], BOB: ["demo"]},
            "seed_big_rows": BIG_ROWS,
        }
    )
    srv.start()
    print(
        f"\nBigQuery test server started in {srv.start_seconds:.2f}s ({BIG_ROWS} big rows seeded)"
    )
    yield srv
    srv.stop()


def client_for(server: BigQueryServer, idp: FakeIdP, email: str) -> bigquery.Client:
    return server.client(idp.mint(email), project=PROJECT)


# -- identity and row-level security ------------------------------------------


def test_session_user_is_the_token_email(server: BigQueryServer, idp: FakeIdP) -> None:
    for email in (ALICE, BOB):
        client = client_for(server, idp, email)
        rows = list(client.query_and_wait("SELECT SESSION_USER() AS u"))
        assert rows[0]["u"] == email
        # async job path (jobs.insert + getQueryResults) too
        rows = list(client.query("SELECT SESSION_USER() AS u").result())
        assert rows[0]["u"] == email


def test_row_access_policy_shows_only_own_rows(server: BigQueryServer, idp: FakeIdP) -> None:
    seen = {}
    for email in (ALICE, BOB):
        client = client_for(server, idp, email)
        rows = list(
            client.query("SELECT region, amount, owner FROM demo.sales ORDER BY region").result()
        )
        assert rows, email
        assert {r["owner"] for r in rows} == {email}
        seen[email] = sorted((r["region"], float(r["amount"])) for r in rows)
    assert seen[ALICE] == [("AMER", 250.5), ("EMEA", 100.0)]
    assert seen[BOB] == [("AMER", 42.0), ("APAC", 75.25), ("EMEA", 300.0)]


def test_spoofed_caller_header_is_ignored(server: BigQueryServer, idp: FakeIdP) -> None:
    """bqemulator's own identity headers cannot override the token's user."""
    req = urllib.request.Request(
        f"{server.endpoint}/bigquery/v2/projects/{PROJECT}/queries",
        data=json.dumps(
            {
                "query": "SELECT SESSION_USER() AS u, COUNT(*) AS n FROM demo.sales",
                "useLegacySql": False,
            }
        ).encode(),
        headers={
            "Authorization": f"Bearer {idp.mint(BOB)}",
            "Content-Type": "application/json",
            "X-Bqemu-Caller": f"user:{ALICE}",
            "X-Bqemu-Groups": "admins@example.com",
        },
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    assert body["rows"][0]["f"][0]["v"] == BOB
    assert body["rows"][0]["f"][1]["v"] == "3"


def test_other_users_job_is_not_found(server: BigQueryServer, idp: FakeIdP) -> None:
    alice = client_for(server, idp, ALICE)
    job = alice.query("SELECT 1 AS x")
    job.result()
    bob = client_for(server, idp, BOB)
    with pytest.raises(gexc.NotFound, match=r"Not found: Job"):
        bob.get_job(job.job_id, location=job.location)
    assert alice.get_job(job.job_id, location=job.location).state == "DONE"


# -- authentication failures ------------------------------------------------------

OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

BAD_TOKENS: dict[str, Callable[[FakeIdP], str]] = {
    "bad_signature": lambda idp: idp.mint(ALICE, key=OTHER_KEY),
    "expired": lambda idp: idp.mint(ALICE, lifetime=-60),
    "wrong_audience": lambda idp: idp.mint(ALICE, audience="https://someone-else"),
    "wrong_issuer": lambda idp: idp.mint(ALICE, issuer="https://evil.example"),
    "unknown_kid": lambda idp: idp.mint(ALICE, kid="nope"),
    "not_a_jwt": lambda idp: "ya29.not-a-jwt",
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_invalid_token_is_unauthorized(server: BigQueryServer, idp: FakeIdP, case: str) -> None:
    """With refreshable credentials the driver retries, then raises Unauthorized."""
    creds = RefreshingCredentials(lambda: BAD_TOKENS[case](idp))
    client = server.client("unused", project=PROJECT, credentials=creds)
    with pytest.raises(gexc.Unauthorized) as info:
        client.query_and_wait("SELECT 1")
    err = info.value
    assert err.code == 401
    assert (
        "Request had invalid authentication credentials. Expected OAuth 2 access token"
        in err.message
    )
    assert err.errors[0]["reason"] == "authError"
    assert creds.refreshes == 2  # google-auth's AuthorizedSession refreshes twice on 401
    with pytest.raises(gexc.Unauthorized):
        client.get_dataset("demo")


def test_invalid_token_with_plain_credentials_is_refresh_error(
    server: BigQueryServer, idp: FakeIdP
) -> None:
    """Credentials(token) cannot refresh: a 401 surfaces as RefreshError."""
    client = server.client(idp.mint(ALICE, lifetime=-60), project=PROJECT)
    with pytest.raises(RefreshError, match="do not contain the necessary fields need to refresh"):
        client.query("SELECT 1").result()


def test_missing_token_is_401_with_google_error_body(server: BigQueryServer) -> None:
    req = urllib.request.Request(f"{server.endpoint}/bigquery/v2/projects/{PROJECT}/datasets")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 401
    assert "invalid_token" in info.value.headers["WWW-Authenticate"]
    body = json.loads(info.value.read())
    assert body["error"]["status"] == "UNAUTHENTICATED"
    assert body["error"]["errors"][0]["reason"] == "authError"


# -- authorization failures -------------------------------------------------------


def test_query_on_dataset_without_grant_is_forbidden(server: BigQueryServer, idp: FakeIdP) -> None:
    bob = client_for(server, idp, BOB)
    expected = (
        f"Access Denied: Table {PROJECT}:bench.big: User does not have permission to query table "
        f"{PROJECT}:bench.big, or perhaps it does not exist."
    )
    # jobs.insert: like BigQuery, the job is created and fails; result() raises.
    job = bob.query("SELECT COUNT(*) FROM bench.big")
    with pytest.raises(gexc.Forbidden) as info:
        job.result()
    assert expected in info.value.message
    assert info.value.errors[0]["reason"] == "accessDenied"
    assert job.state == "DONE" and job.error_result["reason"] == "accessDenied"
    # jobs.query (query_and_wait): HTTP 403 straight away.
    with pytest.raises(gexc.Forbidden) as info:
        bob.query_and_wait("SELECT COUNT(*) FROM bench.big")
    assert expected in info.value.message
    with pytest.raises(gexc.Forbidden, match="User does not have permission to query table"):
        bob.query_and_wait(f"SELECT * FROM `{PROJECT}.bench.big` JOIN demo.sales ON TRUE LIMIT 1")
    with pytest.raises(gexc.Forbidden, match=r"Permission bigquery.tables.get denied on table"):
        bob.get_table("bench.big")
    with pytest.raises(gexc.Forbidden, match=r"Permission bigquery.datasets.get denied on dataset"):
        bob.get_dataset("bench")
    assert [d.dataset_id for d in bob.list_datasets()] == ["demo"]


def test_user_without_grants_cannot_create_jobs(server: BigQueryServer, idp: FakeIdP) -> None:
    carol = client_for(server, idp, CAROL)
    with pytest.raises(gexc.Forbidden) as info:
        carol.query_and_wait("SELECT 1")
    assert (
        f"Access Denied: Project {PROJECT}: User does not have bigquery.jobs.create "
        f"permission in project {PROJECT}." in info.value.message
    )


def test_cte_names_are_not_tables(server: BigQueryServer, idp: FakeIdP) -> None:
    bob = client_for(server, idp, BOB)
    rows = list(bob.query_and_wait("WITH big AS (SELECT 1 AS x) SELECT x FROM big"))
    assert rows[0]["x"] == 1


# -- query features ----------------------------------------------------------------


def test_server_side_query_parameters(server: BigQueryServer, idp: FakeIdP) -> None:
    alice = client_for(server, idp, ALICE)
    cfg = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("region", "STRING", "EMEA"),
            bigquery.ScalarQueryParameter("min_amount", "NUMERIC", "50"),
        ]
    )
    rows = list(
        alice.query(
            "SELECT region, amount FROM demo.sales "
            "WHERE region = @region AND amount >= @min_amount",
            job_config=cfg,
        ).result()
    )
    assert [(r["region"], float(r["amount"])) for r in rows] == [("EMEA", 100.0)]
    cfg = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("n", "INT64", 41),
            bigquery.ScalarQueryParameter("s", "STRING", "it's"),
        ]
    )
    row = next(iter(alice.query_and_wait("SELECT @n + 1 AS n, @s AS s", job_config=cfg)))
    assert (row["n"], row["s"]) == (42, "it's")


def test_big_table_to_arrow(server: BigQueryServer, idp: FakeIdP) -> None:
    alice = client_for(server, idp, ALICE)
    t0 = time.perf_counter()
    table = alice.query("SELECT * FROM bench.big").to_arrow(create_bqstorage_client=False)
    elapsed = time.perf_counter() - t0
    print(f"\nto_arrow {table.num_rows} rows in {elapsed:.2f}s")
    assert table.num_rows == BIG_ROWS
    assert table.column_names == BIG_COLUMNS
    assert table.column("name").null_count == BIG_ROWS // 5
    assert str(table.schema.field("amount").type).startswith("decimal128")
    assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"


@pytest.mark.filterwarnings(TO_DATAFRAME_DEPRECATION)
def test_big_table_to_dataframe(server: BigQueryServer, idp: FakeIdP) -> None:
    pytest.importorskip(
        "db_dtypes", reason="google-cloud-bigquery's to_dataframe() needs db-dtypes"
    )
    alice = client_for(server, idp, ALICE)
    t0 = time.perf_counter()
    df = alice.query("SELECT * FROM bench.big").to_dataframe(create_bqstorage_client=False)
    elapsed = time.perf_counter() - t0
    print(f"\nto_dataframe {len(df)} rows in {elapsed:.2f}s")
    assert len(df) == BIG_ROWS
    assert df["name"].isna().sum() == BIG_ROWS // 5
    assert str(df["created_at"].dtype).startswith("datetime64")
    assert df["active"].sum() == BIG_ROWS // 2


@pytest.mark.filterwarnings(STORAGE_ARROW_DEPRECATION)
def test_storage_read_api_base_table(server: BigQueryServer, idp: FakeIdP) -> None:
    """Storage Read API (gRPC) on base tables: token checked, row policy applied."""
    pytest.importorskip(
        "google.cloud.bigquery_storage", reason="google-cloud-bigquery-storage not installed"
    )
    from google.cloud import bigquery_storage
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport,
    )

    def read_client(token: str) -> Any:
        channel = grpc.insecure_channel(
            server.grpc_endpoint, options=[("grpc.max_receive_message_length", -1)]
        )
        channel = grpc.intercept_channel(channel, _BearerInterceptor(token))
        return bigquery_storage.BigQueryReadClient(
            transport=BigQueryReadGrpcTransport(channel=channel)
        )

    for email, n in ((ALICE, 2), (BOB, 3)):
        token = idp.mint(email)
        rc = read_client(token)
        session = rc.create_read_session(
            parent=f"projects/{PROJECT}",
            read_session=bigquery_storage.types.ReadSession(
                table=f"projects/{PROJECT}/datasets/demo/tables/sales",
                data_format=bigquery_storage.types.DataFormat.ARROW,
            ),
            max_stream_count=1,
        )
        rows = rc.read_rows(session.streams[0].name).to_arrow(session).to_pylist()
        assert len(rows) == n and {r["owner"] for r in rows} == {email}

    big = (
        server.client(idp.mint(ALICE))
        .list_rows("bench.big")
        .to_arrow(bqstorage_client=read_client(idp.mint(ALICE)))
    )
    assert big.num_rows == BIG_ROWS
    with pytest.raises(gexc.PermissionDenied):
        read_client(idp.mint(BOB)).create_read_session(
            parent=f"projects/{PROJECT}",
            read_session=bigquery_storage.types.ReadSession(
                table=f"projects/{PROJECT}/datasets/bench/tables/big"
            ),
            max_stream_count=1,
        )
    with pytest.raises(gexc.Unauthenticated):
        read_client(idp.mint(ALICE, lifetime=-60)).create_read_session(
            parent=f"projects/{PROJECT}",
            read_session=bigquery_storage.types.ReadSession(
                table=f"projects/{PROJECT}/datasets/demo/tables/sales"
            ),
            max_stream_count=1,
        )


class _BearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the Bearer token as gRPC metadata (call credentials need TLS)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def _details(self, details: Any) -> Any:
        class Details(grpc.ClientCallDetails):
            pass

        new = Details()
        new.method = details.method
        new.timeout = details.timeout
        new.metadata = [*(details.metadata or []), ("authorization", f"Bearer {self.token}")]
        new.credentials = details.credentials
        new.wait_for_ready = getattr(details, "wait_for_ready", None)
        new.compression = getattr(details, "compression", None)
        return new

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


# -- counters -----------------------------------------------------------------------


def test_stats_count_requests_and_jobs(server: BigQueryServer, idp: FakeIdP) -> None:
    before = server.stats()
    client = client_for(server, idp, BOB)
    client.query_and_wait("SELECT 1")
    client.query("SELECT 2").result()
    after = server.stats()
    assert after["jobs"] - before["jobs"] == 2
    assert after["requests"] - before["requests"] >= 3
    assert after["jobs_by_user"][BOB] - before["jobs_by_user"].get(BOB, 0) == 2
    assert idp.jwks_hits >= 1
