"""The whole path for Snowflake: magics in IPython → broker in a real Jupyter server →
real IdP → the official driver → a local Snowflake that checks tokens like Snowflake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.idp_fixture import TestIdP
from tests.ipython_shell import run_signed_in
from tests.servers.keys import public_pem
from tests.servers.snowflake.fixture import SnowflakeServer, oauth_integrations
from tests.test_consent_flow import api
from tests.test_passthrough_jwt import rsa_pem

pytestmark = pytest.mark.timeout(180)

SF = "https://snowflake.local"
JWT_AUD = "snowflake:connauth"
USERS = {
    "alice@example.com": {"name": "ALICE", "default_role": "ANALYST", "roles": ["ANALYST"]},
    "bob@example.com": {"name": "BOB", "default_role": "ANALYST", "roles": ["ANALYST"]},
}


@pytest.fixture(scope="module")
def broker_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, rsa.RSAPrivateKey]:
    return rsa_pem(tmp_path_factory.mktemp("keys"), "broker.pem")


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {
        "resources": {SF: {"audience": SF, "scopes": ["session:role-any"]}},
        "access_token_ttl": 600,
    }


@pytest.fixture
def snowflake(
    idp: TestIdP, server_url: str, broker_key: tuple[Path, rsa.RSAPrivateKey]
) -> Iterator[SnowflakeServer]:
    integrations = oauth_integrations(
        idp_issuer=idp.issuer,
        jwks_url=idp.discovery()["jwks_uri"],
        idp_audience=SF,
        broker_issuer=server_url,
        broker_public_pem=public_pem(broker_key[1]),
        broker_audience=JWT_AUD,
        names=("IDP", "JUPYTER"),
    )
    config = {"integrations": integrations, "users": USERS}
    with SnowflakeServer(config) as server:
        yield server


@pytest.fixture
def connauth_config() -> dict[str, Any]:
    # sales_jwt is minted by this single-user server: the admin's explicit opt-in
    return {"allow_jwt_signing_as_user": True}


@pytest.fixture
def connections(
    snowflake: SnowflakeServer, broker_key: tuple[Path, rsa.RSAPrivateKey]
) -> dict[str, Any]:
    driver = snowflake.driver_options()
    base = {
        "connector": "snowflake",
        "account": "connauth",
        "database": "CONNAUTH",
        "schema": "PUBLIC",
    }
    return {
        "sales": {
            **base,
            "scopes": "session:role-any offline_access",
            "resource": SF,
            "driver_options": driver,
        },
        "sales_jwt": {
            **base,
            "role": "ANALYST",
            "auth": "oauth-jwt",
            "jwt_audience": JWT_AUD,
            "private_key_path": str(broker_key[0]),
            "driver_options": driver,
        },
    }


async def test_cell_waits_for_consent_then_shows_rows(shell, snowflake, broker):
    cell = "%%sql_connector sales -o df\nSELECT region, amount, owner FROM sales ORDER BY amount"
    await run_signed_in(shell, cell)
    df = shell.ip.user_ns["df"]
    assert set(df["OWNER"]) == {"ALICE"} and len(df) == 3
    assert shell.ip.user_ns["_"] is df
    text = shell.text()
    assert "Authorized as alice@example.com for sales" in text
    assert "alice@example.com · snowflake · 3 rows · " in text  # the footer: who ran it
    # the warehouse's audit: the session's QUERY_TAG names the Jupyter user
    tag = json.loads(snowflake.stats()["query_tags"][-1])
    assert tag["jupyter_user"] == "alice" and tag["app"] == "jupyter-connauth"
    logins = snowflake.stats()["logins"]
    # again: no balloon, no new login at the warehouse
    shell.outputs.clear()
    again = await shell.run("%%sql_connector sales\nSELECT COUNT(*) AS n FROM sales")
    assert again.error_in_exec is None
    assert "Authorize" not in shell.text()
    assert snowflake.stats()["logins"] == logins
    # no token in anything the notebook shows
    record = broker.store.get_token("alice", "sales").record
    assert record.access_token not in shell.text() + repr(shell.outputs)
    assert record.refresh_token not in shell.text() + repr(shell.outputs)


async def test_params_are_bound_and_whoami(shell, consent, jp_fetch):
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    await consent(answer["authorize_url"], "alice")
    shell.ip.user_ns["f"] = {"region": "EMEA' OR '1'='1"}
    r = await shell.run(
        "%%sql_connector sales -o hits --params {f}\nSELECT * FROM sales WHERE region = :region"
    )
    assert r.error_in_exec is None, r.error_in_exec
    assert len(shell.ip.user_ns["hits"]) == 0  # the quote is data, not SQL
    r = await shell.run(
        '%%sql_connector sales -o eu --params \'{"region": "EMEA"}\'\n'
        "SELECT * FROM sales WHERE region = :region"
    )
    assert r.error_in_exec is None and len(shell.ip.user_ns["eu"]) == 1
    shell.outputs.clear()
    await shell.run("%sql_connector whoami sales")
    assert "ALICE" in shell.text()


async def test_two_users_see_their_own_rows(
    jp_fetch, consent, broker, jp_serverapp, consent_as_other_user
):
    warehouse = jp_serverapp.web_app.settings["connauth_warehouse"]
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    await consent(answer["authorize_url"], "alice")
    bob = await broker.token("bob", "sales")
    page = await consent_as_other_user(bob.authorize_url, "bob")
    assert "Authorized as" in page
    for user, name in (("alice", "ALICE"), ("bob", "BOB")):
        who = await warehouse.call(user, "sales", "whoami")
        assert who["user"] == name
        table = await warehouse.call(user, "sales", "query_arrow", "SELECT owner FROM sales")
        assert set(table.column("OWNER").to_pylist()) == {name}
    tested = await api(jp_fetch, "connections", "sales", "test", method="POST")
    assert tested["status"] == "ok" and tested["whoami"]["user"] == "ALICE"
    tree = await api(jp_fetch, "connections", "sales", "browse")
    assert "CONNAUTH" in tree["items"]
    # a revoke ends the broker's own warehouse session too
    await api(jp_fetch, "connections", "sales", "revoke", method="POST")
    again = await api(jp_fetch, "connections", "sales", "test", method="POST")
    assert again["status"] == "consent_required" and again["reason"] == "revoked"


async def test_jwt_minted_by_the_broker_is_accepted(shell, consent, jp_fetch):
    answer = await api(jp_fetch, "connections", "sales_jwt", "token", method="POST")
    await consent(answer["authorize_url"], "bob")
    r = await shell.run("%sql_connector whoami sales_jwt")
    assert r.error_in_exec is None, r.error_in_exec
    assert "BOB" in shell.text() and "ANALYST" in shell.text()
    r = await shell.run("%%sql_connector sales_jwt -o mine\nSELECT owner FROM sales")
    assert set(shell.ip.user_ns["mine"]["OWNER"]) == {"BOB"}


class TestRefreshMidSession:
    @pytest.fixture
    def idp_config(self) -> dict[str, Any]:
        return {
            "resources": {SF: {"audience": SF, "scopes": ["session:role-any"]}},
            "access_token_ttl": 8,
        }

    @pytest.fixture
    def connauth_config(self) -> dict[str, Any]:
        return {"refresh_leeway": 5, "refresh_leeway_fraction": 1.0}

    async def test_expiry_refreshes_and_keeps_the_session_without_the_user(
        self, shell, consent, jp_fetch, idp, snowflake
    ):
        answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
        await consent(answer["authorize_url"], "alice")
        r = await shell.run("%%sql_connector sales\nSELECT 1 AS x")
        assert r.error_in_exec is None, r.error_in_exec
        assert snowflake.stats()["logins"] == 1
        await asyncio.sleep(3.5)  # the token is now due for refresh
        r = await shell.run("%%sql_connector sales -o after\nSELECT owner FROM sales")
        assert r.error_in_exec is None, r.error_in_exec
        assert idp.token_requests("refresh_token") == 1
        # the OAuth token's expiry does not end a Snowflake session: no new login
        assert snowflake.stats()["logins"] == 1
        assert set(shell.ip.user_ns["after"]["OWNER"]) == {"ALICE"}
        assert "Authorize" not in shell.text()


async def test_list_test_and_config_defaults(shell, consent, jp_fetch, capsys):
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    await consent(answer["authorize_url"], "alice")
    await shell.run("%sql_connector list")
    assert "sales_jwt" in shell.text() and "snowflake" in shell.text()
    r = await shell.run("%sql_connector test sales")
    assert r.error_in_exec is None, r.error_in_exec
    assert "OK: sales answered" in capsys.readouterr().out
    await shell.run("%config ConnAuthMagics.max_rows = 2")
    r = await shell.run("%%sql_connector sales\nSELECT * FROM sales")
    assert r.error_in_exec is not None and "max-rows" in str(r.error_in_exec)
    r = await shell.run("%%sql_connector sales --max-rows 10\nSELECT * FROM sales")
    assert r.error_in_exec is None
    r = await shell.run("%%sql_connector sales\nSELEC broken")
    assert r.error_in_exec is not None and hasattr(r.error_in_exec, "_render_traceback_")
    assert "syntax" in str(r.error_in_exec).lower()
