"""The okta and keycloak flavours against the test IdP's Okta and Keycloak profiles
(tests/idp/profiles.mjs), through the real server's HTTP API and the IdP's login pages.

Okta apps authenticate with ``client_secret_basic`` (a secret in the body is
``invalid_client``) and its token exchange needs ``audience``; Keycloak needs PKCE S256
and issues refresh tokens on every code exchange.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.test_consent_flow import api
from tests.test_refresh import LEEWAY, TTL, authorize, wait_until_due

AUDIENCE = "api://default"


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
def profile() -> str:
    return "okta"


@pytest.fixture
def idp_config(profile: str) -> dict[str, Any]:
    resources = {AUDIENCE: {"audience": AUDIENCE, "scopes": ["session:role-any"]}}
    return {"profile": profile, "access_token_ttl": TTL, "resources": resources}


@pytest.fixture
def auth_method() -> str:
    return ""


@pytest.fixture
def connauth_config(profile: str, auth_method: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {"flavour": profile, "refresh_leeway": LEEWAY, "http_timeout": 2}
    if auth_method:
        cfg["token_endpoint_auth_method"] = auth_method
    return cfg


@pytest.fixture
def connections() -> dict[str, Any]:
    dbx = {"server_hostname": "dbc.example.com", "http_path": "/sql/1.0/warehouses/w"}
    return {
        "sales": {"connector": "snowflake", "account": "acme"},  # okta template
        "dbx": {"connector": "databricks", **dbx},
        "tx": {
            "connector": "snowflake",
            "account": "acme",
            "auth": "token-exchange",
            "resource": AUDIENCE,
            "scopes": "session:role-any",
        },
    }


async def test_okta_basic_auth_from_discovery_consent_and_refresh(jp_fetch, consent, idp):
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    q = _query(answer["authorize_url"])
    assert set(q["scope"].split()) == {"openid", "email", "session:role-any", "offline_access"}
    assert "prompt" not in q
    page = await consent(answer["authorize_url"])
    assert page.status_code == 200, page.text
    first = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert first["status"] == "ok"
    await wait_until_due(first)
    fresh = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert fresh["status"] == "ok" and fresh["access_token"] != first["access_token"]
    assert idp.token_requests("refresh_token") == 1
    doctor = {
        c["check"]: c for c in (await api(jp_fetch, "connections", "sales", "doctor"))["checks"]
    }
    assert doctor["client authentication"] == {
        "check": "client authentication",
        "ok": True,
        "detail": "client_secret_basic",
        "fix": None,
    }


@pytest.mark.parametrize("auth_method", ["client_secret_post"])
async def test_okta_refuses_client_secret_post_and_the_fix_says_why(jp_fetch, consent, auth_method):
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    page = await consent(answer["authorize_url"])
    assert page.status_code == 400
    assert "invalid_client" in page.text
    doctor = await api(jp_fetch, "connections", "sales", "doctor")
    checks = [c for c in doctor["checks"] if c["check"] == "client authentication"]
    assert checks[0]["ok"] is False  # not in token_endpoint_auth_methods_supported
    assert "c.ConnAuth.token_endpoint_auth_method" in checks[0]["fix"]


async def test_okta_token_exchange_sends_audience(jp_fetch, consent, idp):
    await authorize(jp_fetch, consent, "tx")
    token = await api(jp_fetch, "connections", "tx", "token", method="POST")
    assert token["status"] == "ok", token
    log = [t for t in idp.stats()["token_log"] if t["grant_type"].endswith("token-exchange")]
    assert log and log[-1]["status"] == 200


@pytest.mark.parametrize("profile", ["keycloak"])
async def test_keycloak_consent_without_prompt_and_refresh(jp_fetch, consent, idp, profile):
    answer = await api(jp_fetch, "connections", "dbx", "token", method="POST")
    q = _query(answer["authorize_url"])
    assert q["code_challenge_method"] == "S256" and "prompt" not in q
    page = await consent(answer["authorize_url"])
    assert page.status_code == 200, page.text
    first = await api(jp_fetch, "connections", "dbx", "token", method="POST")
    assert (await api(jp_fetch, "connections", "dbx"))["refreshable"] is True
    await wait_until_due(first)
    fresh = await api(jp_fetch, "connections", "dbx", "token", method="POST")
    assert fresh["status"] == "ok" and fresh["access_token"] != first["access_token"]
    assert "refresh_token" not in json.dumps(fresh)
