# ruff: noqa: F811 - the fixtures imported from tests.warehouses are parameters
"""A statement outlives its token, and is never sent twice.

The IdP issues 3-second access tokens; the local Databricks warehouse checks the bearer
on every request (as Databricks does), so a statement that runs longer than that is
polled with tokens the driver's ``credentials_provider`` gets from the broker: it runs
once, in the same session, with no user action. When the warehouse rejects the
credential after the statement was submitted (here: the grant was revoked meanwhile, so
the broker has no fresh token), the error is reported with its fix and nothing is
retried."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.test_consent_flow import api
from tests.test_sessions_kernel import authorize
from tests.warehouses import DBX, connections, warehouse  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(240)

#: Seconds of DuckDB work (md5 of 60M rows: ~10 s here), well past the 3-s token.
SLOW = "SELECT max(md5(CAST(i AS VARCHAR))) AS m FROM range(60000000) t(i)"


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {"resources": {DBX: {"audience": DBX, "scopes": ["sql"]}}, "access_token_ttl": 3}


async def test_long_statement_outlives_its_token(shell, jp_fetch, consent, warehouse, idp):
    await authorize(jp_fetch, consent, "lake", "alice")
    r = await shell.run("%%sql_connector lake\nSELECT 1 AS one")  # the session
    assert r.error_in_exec is None, r.error_in_exec
    before, refreshed = warehouse.stats(), idp.token_requests("refresh_token")
    r = await shell.run(f"%%sql_connector lake -o slow\n{SLOW}")
    assert r.error_in_exec is None, r.error_in_exec
    after = warehouse.stats()
    assert idp.token_requests("refresh_token") > refreshed, "no token expired mid-statement"
    assert after["statements"] == before["statements"] + 1  # ran once
    assert after["sessions_opened"] == before["sessions_opened"]  # in the same session
    assert after.get("auth_401", 0) == before.get("auth_401", 0)
    assert len(shell.ip.user_ns["slow"]) == 1
    assert "Authorize" not in shell.text()  # no user action


async def test_auth_error_after_submission_is_not_retried(shell, jp_fetch, consent, warehouse):
    await authorize(jp_fetch, consent, "lake", "alice")
    before = warehouse.stats()

    async def revoke_meanwhile() -> None:  # the user revokes in the sidebar mid-statement
        await asyncio.sleep(0.5)
        await api(jp_fetch, "connections", "lake", "revoke", method="POST")

    r, _ = await asyncio.gather(
        shell.run(f"%%sql_connector lake -o slow\n{SLOW}"), revoke_meanwhile()
    )
    after = warehouse.stats()
    assert after["auth_401"] > before["auth_401"], "the token did not expire mid-statement"
    assert after["statements"] == before["statements"] + 1  # ran once, not again
    err = r.error_in_exec
    assert err is not None and hasattr(err, "_render_traceback_"), err
    assert "not run again" in str(err)
    assert "slow" not in shell.ip.user_ns

    # the session was dropped: after consent again, the next query reconnects and works
    await authorize(jp_fetch, consent, "lake", "alice")
    r = await shell.run("%%sql_connector lake -o df\nSELECT owner FROM main.demo.sales")
    assert r.error_in_exec is None, r.error_in_exec
    assert set(shell.ip.user_ns["df"]["owner"]) == {"alice@example.com"}
    assert warehouse.stats()["sessions_opened"] == after["sessions_opened"] + 1


async def test_server_side_statement_outlives_its_token(
    jp_fetch, consent, jp_serverapp, warehouse, idp
):
    """The server's own calls (Test and browse) renew through the broker the same way."""
    await authorize(jp_fetch, consent, "lake", "alice")
    calls = jp_serverapp.web_app.settings["connauth_warehouse"]
    assert (await calls.call("alice", "lake", "query_arrow", "SELECT 1 AS one")).num_rows == 1
    before, refreshed = warehouse.stats(), idp.token_requests("refresh_token")
    table = await calls.call("alice", "lake", "query_arrow", SLOW)
    after = warehouse.stats()
    assert table.num_rows == 1
    assert idp.token_requests("refresh_token") > refreshed, "no token expired mid-statement"
    assert after["statements"] == before["statements"] + 1
    assert after["sessions_opened"] == before["sessions_opened"]
    assert after.get("auth_401", 0) == before.get("auth_401", 0)
