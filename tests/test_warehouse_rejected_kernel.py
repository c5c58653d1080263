# ruff: noqa: F811 - the fixtures imported from test_sessions_kernel are parameters
"""A warehouse that starts rejecting the user's token (its federation policy changed,
the token revoked at the IdP): one forced refresh fixes it silently, or the grant is
marked rejected and the next query shows the Authorize balloon with the reason. Through
a real IPython shell, the real server, the real IdP and the local Databricks warehouse
(its runtime knob rejects tokens issued before a time)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests import test_stack_snowflake as sf
from tests.test_consent_flow import api
from tests.test_sessions_kernel import (  # noqa: F401 - fixtures
    authorize,
    connections,
    idp_config,
    rows,
    warehouse,
)
from tests.test_stack_snowflake import broker_key  # noqa: F401 - a fixture

pytestmark = pytest.mark.timeout(180)


async def test_one_refresh_fixes_a_rejected_token_silently(
    shell,
    jp_fetch,
    consent,
    warehouse,
    idp,
):
    await authorize(jp_fetch, consent, "lake", "alice")
    await asyncio.sleep(1.1)  # iat is in whole seconds
    warehouse.reject_issued_before(int(time.time()))  # the next token is accepted
    refreshes, statements = idp.token_requests("refresh_token"), warehouse.stats()["statements"]
    err, df = await rows(shell)
    assert err is None and len(df) == 2, shell.text()
    assert idp.token_requests("refresh_token") == refreshes + 1
    assert warehouse.stats()["statements"] == statements + 1  # ran once
    status = await api(jp_fetch, "connections", "lake")
    assert status["status"] == "authorized"


async def test_still_rejected_marks_the_grant_and_offers_consent(
    shell,
    jp_fetch,
    consent,
    warehouse,
    idp,
):
    await authorize(jp_fetch, consent, "lake", "alice")
    warehouse.reject_issued_before(time.time() + 3600)  # every token of the IdP
    refreshes, statements = idp.token_requests("refresh_token"), warehouse.stats()["statements"]
    err, df = await rows(shell)
    assert df is None and err is not None
    assert idp.token_requests("refresh_token") == refreshes + 1  # once, no loop
    status = await api(jp_fetch, "connections", "lake")
    assert status["status"] == "consent_required", status
    assert status["reason"] == "warehouse_rejected"
    assert "warehouse rejected your token" in status["reason_text"]
    shell.outputs.clear()
    await shell.run("%sql_connector status")
    assert "warehouse rejected your token" in shell.text()
    shell.outputs.clear()
    await shell.run("%config ConnAuthMagics.wait_timeout = 1.5")
    err, df = await rows(shell)
    assert df is None and err is not None
    assert "Authorize" in shell.text()  # the consent balloon
    assert "warehouse rejected your token" in shell.text()
    assert idp.token_requests("refresh_token") == refreshes + 1
    assert warehouse.stats()["statements"] == statements  # nothing ran


async def test_the_sidebars_test_refreshes_a_rejected_token_once(
    jp_fetch,
    consent,
    warehouse,
    idp,
):
    await authorize(jp_fetch, consent, "lake", "alice")
    await asyncio.sleep(1.1)  # iat is in whole seconds
    warehouse.reject_issued_before(int(time.time()))
    refreshes = idp.token_requests("refresh_token")
    result = await api(jp_fetch, "connections", "lake", "test", method="POST")
    assert result.get("ok", True) and "error" not in result, result
    assert idp.token_requests("refresh_token") == refreshes + 1
    warehouse.reject_issued_before(time.time() + 3600)
    with pytest.raises(HTTPClientError):
        await api(jp_fetch, "connections", "lake", "test", method="POST")
    # the refreshed token rejected too: the grant marked, no second refresh
    assert idp.token_requests("refresh_token") == refreshes + 1
    answer = await api(jp_fetch, "connections", "lake", "test", method="POST")
    assert answer["status"] == "consent_required" and answer["reason"] == "warehouse_rejected"
    status = await api(jp_fetch, "connections", "lake")
    assert status["status"] == "consent_required" and status["reason"] == "warehouse_rejected"
    assert idp.token_requests("refresh_token") == refreshes + 1


class TestAdminFix:
    """Snowflake's integration no longer trusts the IdP's issuer (an admin edited
    EXTERNAL_OAUTH_ISSUER): every token fails login with 390303, a new consent would not
    help: the admin's fix is shown, and nothing loops."""

    @pytest.fixture
    def idp_config(self) -> dict[str, Any]:
        return sf.idp_config.__wrapped__()  # type: ignore[attr-defined]

    @pytest.fixture
    def snowflake(self, idp, server_url, broker_key):  # type: ignore[no-untyped-def]
        yield from sf.snowflake.__wrapped__(idp, server_url, broker_key)

    @pytest.fixture
    def connections(self, snowflake, broker_key):  # type: ignore[no-untyped-def]
        return sf.connections.__wrapped__(snowflake, broker_key)

    async def test_issuer_mismatch_shows_the_admin_fix(
        self, shell, jp_fetch, consent, idp, snowflake
    ):
        await authorize(jp_fetch, consent, "sales", "alice")
        snowflake.set_issuer("IDP", "https://idp.example.com/reset")
        refreshes, logins = idp.token_requests("refresh_token"), snowflake.stats()["logins"]
        cell = "%%sql_connector sales\nSELECT COUNT(*) AS n FROM sales"
        first = await shell.run(cell)
        assert "EXTERNAL_OAUTH_ISSUER" in str(first.error_in_exec)
        assert idp.token_requests("refresh_token") == refreshes + 1  # one forced refresh
        status = await api(jp_fetch, "connections", "sales")
        assert status["status"] == "error" and status["error"] == "warehouse_rejected", status
        assert "EXTERNAL_OAUTH_ISSUER" in status["fix"]
        failed = snowflake.stats()["failed_logins"]
        for _ in range(2):  # the fix at once: no refresh, no login, no balloon
            shell.outputs.clear()
            again = await shell.run(cell)
            assert "EXTERNAL_OAUTH_ISSUER" in str(again.error_in_exec)
            assert "warehouse rejected your token" in str(again.error_in_exec)
            assert "Authorize" not in shell.text()
        assert idp.token_requests("refresh_token") == refreshes + 1
        assert snowflake.stats()["failed_logins"] == failed
        assert snowflake.stats()["logins"] == logins
