"""The product against vendor profiles of the test IdP where it already does what the
vendor requires (Keycloak; Google with the README's authorize_params): consent, silent
refresh and revoke through the server's API. Profiles where today's product fails
(Entra's prompt and .default rules, Okta's client authentication) are the flavour work
of issue 13, not tested here yet."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_consent_flow import api
from tests.test_refresh import authorize, wait_until_due

TTL = 6
BQ_SCOPE = "https://www.googleapis.com/auth/bigquery"


@pytest.fixture(params=["keycloak", "google"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def idp_config(profile: str) -> dict[str, Any]:
    resources = {"https://bigquery.googleapis.com/": {"scopes": [BQ_SCOPE]}}
    return {"profile": profile, "access_token_ttl": TTL, "resources": resources}


@pytest.fixture
def connections(profile: str) -> dict[str, Any]:
    # Keycloak: a client scope per warehouse audience; Google: BigQuery's scope, and no
    # offline_access (Google has none: access_type=offline below)
    if profile == "google":
        return {"sales": {"connector": "bigquery", "project": "p", "scopes": BQ_SCOPE}}
    return {
        "sales": {
            "connector": "databricks",
            "server_hostname": "dbc.example.com",
            "http_path": "/sql/1.0/warehouses/abc",
            "scopes": "sql offline_access",
        }
    }


@pytest.fixture
def connauth_config(profile: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {"refresh_leeway": 5, "http_timeout": 2}
    if profile == "google":  # README: refresh tokens with access_type=offline
        cfg["authorize_params"] = {"access_type": "offline", "prompt": "consent"}
    return cfg


async def test_consent_refresh_revoke(jp_fetch, consent, idp, profile):
    assert idp.discovery_url.startswith(idp.issuer)
    first = await authorize(jp_fetch, consent)
    status = await api(jp_fetch, "connections", "sales")
    assert status["refreshable"] is True, profile
    await wait_until_due(first)
    fresh = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert fresh["status"] == "ok" and fresh["access_token"] != first["access_token"]
    assert idp.token_requests("refresh_token") == 1
    revoked = await api(jp_fetch, "connections", "sales", "revoke", method="POST")
    assert revoked["revoked"] is True and revoked["revoked_at_idp"] is True
