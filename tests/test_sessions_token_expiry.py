"""Sessions outlive tokens: Snowflake keeps its session on its own session and master
tokens (renewed by the driver at ``/session/token-request`` when it answers 390112) and
is reopened only when Snowflake ends it (390114); BigQuery jobs and Storage Read streams
get fresh tokens from the broker through google-auth's ``refresh_handler``. Driven
through a real IPython shell, the real server and IdP, the official drivers and the local
warehouses, which count statements and sessions. Databricks: test_sessions_at_most_once.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jupyter_connauth.broker import jwt_mint
from tests import test_stack_snowflake
from tests.idp_fixture import TestIdP
from tests.servers.bigquery.fixture import BigQueryServer
from tests.servers.snowflake.fixture import SnowflakeServer
from tests.test_sessions_kernel import authorize
from tests.test_stack_bigquery import BQ, BQ_SCOPE, PROJECT, bq_connection
from tests.test_stack_snowflake import JWT_AUD, SF, USERS

broker_key = test_stack_snowflake.broker_key  # the module's broker signing key (fixture)

pytestmark = pytest.mark.timeout(240)

TOKEN_TTL = 4  # seconds, the IdP's access tokens and (patched) the broker's JWTs
#: Seconds of DuckDB work behind the local Snowflake (~7 s here), past a token's life.
SF_SLOW = (
    "SELECT max(md5(CAST(seq4() AS VARCHAR))) AS m FROM TABLE(GENERATOR(ROWCOUNT => 40000000))"
)


async def opened(shell: Any, jp_fetch: Any, consent: Any, snowflake: SnowflakeServer) -> Any:
    """Alice's consent and the kernel's session of ``sales``; the server's counters then."""
    await authorize(jp_fetch, consent, "sales", "alice")
    r = await shell.run("%%sql_connector sales\nSELECT 1 AS one")
    assert r.error_in_exec is None, r.error_in_exec
    return snowflake.stats()


class _SnowflakeStack:
    @pytest.fixture
    def master_validity(self) -> int:
        return 30  # the idle timeout (Snowflake: four hours)

    @pytest.fixture
    def idp_config(self) -> dict[str, Any]:
        return {
            "resources": {SF: {"audience": SF, "scopes": ["session:role-any"]}},
            "access_token_ttl": TOKEN_TTL,
        }

    @pytest.fixture
    def connauth_config(self) -> dict[str, Any]:
        return {"allow_jwt_signing_as_user": True}

    @pytest.fixture
    def snowflake(
        self,
        idp: TestIdP,
        server_url: str,
        broker_key: tuple[Path, rsa.RSAPrivateKey],
        master_validity: int,
    ) -> Iterator[SnowflakeServer]:
        public = (
            broker_key[1]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        idp_integration = {
            "name": "IDP",
            "issuer": idp.issuer,
            "jwks_url": idp.discovery()["jwks_uri"],
            "audiences": [SF],
            "any_role_mode": "ENABLE",
        }
        broker = {"name": "JUPYTER", "issuer": server_url, "public_keys": [public]}
        config = {
            "integrations": [idp_integration, {**broker, "audiences": [JWT_AUD]}],
            "users": USERS,
            "session_validity": 2,  # Snowflake: an hour
            "master_validity": master_validity,
        }
        with SnowflakeServer(config) as server:
            yield server

    @pytest.fixture
    def connections(
        self, snowflake: SnowflakeServer, broker_key: tuple[Path, rsa.RSAPrivateKey]
    ) -> dict[str, Any]:
        base = {
            "connector": "snowflake",
            "account": "connauth",
            "database": "CONNAUTH",
            "schema": "PUBLIC",
            "driver_options": {
                "host": snowflake.host,
                "port": snowflake.port,
                "protocol": "http",
                "enable_server_session_keep_alive_auto_detection": False,
            },
        }
        return {
            "sales": {**base, "scopes": "session:role-any offline_access", "resource": SF},
            "sales_jwt": {
                **base,
                "role": "ANALYST",
                "auth": "oauth-jwt",
                "jwt_audience": JWT_AUD,
                "private_key_path": str(broker_key[0]),
            },
        }


class TestSnowflake(_SnowflakeStack):
    async def test_session_kept_across_three_jwt_lifetimes(
        self, shell, consent, jp_fetch, snowflake, monkeypatch
    ):
        monkeypatch.setattr(jwt_mint, "JWT_LIFETIME", TOKEN_TTL)  # Snowflake's 10 minutes
        await authorize(jp_fetch, consent, "sales_jwt", "alice")
        r = await shell.run(
            "%%sql_connector sales_jwt\nCREATE TEMP TABLE scratch AS SELECT 42 AS answer"
        )
        assert r.error_in_exec is None, r.error_in_exec
        before = snowflake.stats()
        for _ in range(3):
            await asyncio.sleep(TOKEN_TTL + 0.3)  # the JWT and the session token expired
            shell.ip.user_ns.pop("kept", None)
            r = await shell.run("%%sql_connector sales_jwt -o kept\nSELECT answer FROM scratch")
            assert r.error_in_exec is None, r.error_in_exec
            assert list(shell.ip.user_ns["kept"]["ANSWER"]) == [42]  # the temp table survives
        after = snowflake.stats()
        assert after["sessions_opened"] == before["sessions_opened"] == 1
        assert after["statements"] == before["statements"] + 3
        assert after["session_renewals"] >= 3  # 390112, renewed with the master token
        assert "Authorize" not in shell.text()

    async def test_long_query_across_token_expiry_runs_once(
        self, shell, consent, jp_fetch, snowflake
    ):
        before = await opened(shell, jp_fetch, consent, snowflake)
        started = time.monotonic()
        r = await shell.run(f"%%sql_connector sales -o slow\n{SF_SLOW}")
        assert r.error_in_exec is None, r.error_in_exec
        assert time.monotonic() - started > TOKEN_TTL, "the query did not outlive its token"
        r = await shell.run("%%sql_connector sales -o mine\nSELECT owner FROM sales")
        assert r.error_in_exec is None, r.error_in_exec
        after = snowflake.stats()
        assert after["statements"] == before["statements"] + 2  # each ran once
        assert after["sessions_opened"] == before["sessions_opened"]  # no new session
        assert set(shell.ip.user_ns["mine"]["OWNER"]) == {"ALICE"}
        assert "Authorize" not in shell.text()


class TestSnowflakeSessionEnd(_SnowflakeStack):
    @pytest.fixture
    def master_validity(self) -> int:
        return 6

    async def test_new_session_only_when_snowflake_ends_it(
        self, shell, consent, jp_fetch, snowflake
    ):
        before = await opened(shell, jp_fetch, consent, snowflake)
        await asyncio.sleep(7)  # idle past the master token's validity: the session is over
        r = await shell.run("%%sql_connector sales -o mine\nSELECT owner FROM sales")
        assert r.error_in_exec is None, r.error_in_exec  # logged in again, no user action
        after = snowflake.stats()
        assert after["sessions_opened"] == before["sessions_opened"] + 1
        assert after["statements"] == before["statements"] + 1  # refused, then run once
        assert set(shell.ip.user_ns["mine"]["OWNER"]) == {"ALICE"}


#: A job that outlives a token (~5 s of DuckDB work behind the local BigQuery, which runs
#: it inside jobs.insert) and ~47 000 result rows, read through the Storage Read API.
BQ_SLOW = (
    "SELECT x, h FROM (SELECT x, TO_HEX(MD5(CAST(x AS STRING))) AS h "
    "FROM UNNEST(GENERATE_ARRAY(1, 12000000)) AS x) WHERE STARTS_WITH(h, '00')"
)


@pytest.mark.filterwarnings("ignore:Retrieving Arrow record batches:PendingDeprecationWarning")
class TestBigQuery:
    @pytest.fixture
    def idp_config(self) -> dict[str, Any]:
        return {
            "resources": {BQ: {"audience": BQ, "scopes": [BQ_SCOPE]}},
            "access_token_ttl": TOKEN_TTL,
        }

    @pytest.fixture
    def bigquery(self, idp: TestIdP) -> Iterator[BigQueryServer]:
        pytest.importorskip("google.cloud.bigquery_storage_v1")
        config = {
            "project": PROJECT,
            "jwks_url": idp.discovery()["jwks_uri"],
            "issuer": idp.issuer,
            "audience": BQ,
            "users": {"alice@example.com": ["demo"]},
        }
        with BigQueryServer(config) as srv:
            yield srv

    @pytest.fixture
    def connections(self, bigquery: BigQueryServer) -> dict[str, Any]:
        return {"bq": bq_connection(bigquery, f"http://{bigquery.grpc_endpoint}")}

    async def test_job_and_storage_read_across_token_expiry_run_once(
        self, shell, consent, jp_fetch, bigquery, idp
    ):
        await authorize(jp_fetch, consent, "bq", "alice")
        r = await shell.run("%%sql_connector bq\nSELECT 1 AS one")  # the client
        assert r.error_in_exec is None, r.error_in_exec
        bigquery.reset_stats()
        refreshed = idp.token_requests("refresh_token")
        r = await shell.run(f"%%sql_connector bq -o big\n{BQ_SLOW}")
        assert r.error_in_exec is None, r.error_in_exec
        stats = bigquery.stats()
        assert idp.token_requests("refresh_token") > refreshed, stats  # a token expired
        assert stats["jobs"] == 1  # ran once
        assert stats["unauthenticated"] == 0  # every request had a valid token
        assert stats["storage_read_rows_calls"] >= 1  # the result came by Storage Read
        assert len(shell.ip.user_ns["big"]) > 40_000
        assert "Authorize" not in shell.text()
