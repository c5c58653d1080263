"""The refresh token's expiry where the IdP says it: Keycloak answers
``refresh_expires_in`` with every refresh token (the test IdP's keycloak profile, a real
oidc-provider process whose refresh tokens live ``refresh_token_ttl`` seconds). The
broker stores it with the grant, the connection's status answers ``refresh_expires_at``,
a refresh moves it on, and ``%sql_connector preflight --for`` in a real kernel warns
about a grant that cannot last that long."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.kernel_session import KernelSession
from tests.test_consent_flow import api
from tests.test_flavour_okta_keycloak import (  # noqa: F401 - fixtures
    auth_method,
    connauth_config,
    connections,
)
from tests.test_refresh import TTL, authorize, wait_until_due

pytestmark = pytest.mark.timeout(180)

REFRESH_TTL = 3600  # the refresh token's lifetime at the IdP (and its refresh_expires_in)


@pytest.fixture
def profile() -> str:
    return "keycloak"


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {"profile": "keycloak", "access_token_ttl": TTL, "refresh_token_ttl": REFRESH_TTL}


async def test_refresh_expiry_is_stored_answered_and_warned_about(
    jp_fetch, jp_serverapp, jp_auth_header, consent, idp
):
    before = time.time()
    first = await authorize(jp_fetch, consent, "dbx")
    status = await api(jp_fetch, "connections", "dbx")
    until = status["refresh_expires_at"]
    assert status["refreshable"] is True
    assert before + REFRESH_TTL - 5 <= until <= time.time() + REFRESH_TTL + 5, status

    await wait_until_due(first)  # a refresh: Keycloak's answer carries a new expiry
    fresh = await api(jp_fetch, "connections", "dbx", "token", method="POST")
    assert fresh["access_token"] != first["access_token"]
    assert idp.token_requests("refresh_token") == 1
    after = (await api(jp_fetch, "connections", "dbx"))["refresh_expires_at"]
    assert after > until  # the rotated refresh token's own expiry

    kernel = KernelSession(jp_fetch, jp_serverapp, jp_auth_header)
    async with kernel:
        await kernel.ok("%load_ext jupyter_connauth")
        short = await kernel.ok("%sql_connector preflight dbx --for 30m", consent=False)
        assert "✘" not in short.outputs[-1]["data"]["text/plain"], short.text
        long = await kernel.ok("%sql_connector preflight dbx --for 2h", consent=False)
        row = long.outputs[-1]["data"]["text/plain"]
        assert "✘" in row and "the IdP's refresh token expires at" in row, long.text
