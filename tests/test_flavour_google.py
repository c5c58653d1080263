"""The google flavour against the test IdP's Google profile (tests/idp/profiles.mjs),
through the real server's HTTP API and the IdP's login pages.

Google knows no ``offline_access`` scope (its "Error 400: invalid_scope" page), issues
refresh tokens for ``access_type=offline`` on a user's first authorization only, and
again only with ``prompt=consent``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.test_consent_flow import api
from tests.test_refresh import LEEWAY, TTL, authorize, wait_until_due

BQ = "https://www.googleapis.com/auth/bigquery"
DRIVE = "https://www.googleapis.com/auth/drive.readonly"


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {
        "profile": "google",
        "access_token_ttl": TTL,
        "resources": {"https://bigquery.googleapis.com/": {"scopes": [BQ, DRIVE]}},
    }


@pytest.fixture
def connauth_config() -> dict[str, Any]:
    return {"flavour": "google", "refresh_leeway": LEEWAY, "http_timeout": 2}


@pytest.fixture
def connections() -> dict[str, Any]:
    return {
        "sales": {"connector": "bigquery", "project": "acme"},  # the google template
        # an admin's scopes from another IdP's habits: offline_access is left out
        "legacy": {"connector": "bigquery", "project": "acme", "scopes": f"{BQ} offline_access"},
    }


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_template_consent_gets_a_refresh_token_and_refreshes(jp_fetch, consent, idp):
    conns = await api(jp_fetch, "connections")
    sales = next(c for c in conns["connections"] if c["name"] == "sales")
    assert sales["scopes"] == [BQ]
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    q = _query(answer["authorize_url"])
    assert "offline_access" not in q["scope"].split()
    assert q["access_type"] == "offline"
    assert "prompt" not in q, "first use: Google issues the refresh token without it"
    page = await consent(answer["authorize_url"])
    assert page.status_code == 200, page.text
    first = await api(jp_fetch, "connections", "sales", "token", method="POST")
    status = await api(jp_fetch, "connections", "sales")
    assert status["refreshable"] is True
    await wait_until_due(first)
    fresh = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert fresh["status"] == "ok" and fresh["access_token"] != first["access_token"]
    assert idp.token_requests("refresh_token") == 1


async def test_offline_access_in_scopes_is_not_sent(jp_fetch, consent):
    token = await authorize(jp_fetch, consent, "legacy")
    assert token["status"] == "ok"
    status = await api(jp_fetch, "connections", "legacy")
    assert status["refreshable"] is True
    doctor = {
        c["check"]: c for c in (await api(jp_fetch, "connections", "legacy", "doctor"))["checks"]
    }
    assert "remove offline_access" in doctor["offline_access"]["fix"]


async def test_scope_edit_reconsents_with_prompt_consent_and_gets_a_refresh_token(
    jp_fetch, consent
):
    new = {"name": "adhoc", "connector": "bigquery", "project": "acme", "scopes": BQ}
    await api(jp_fetch, "connections", method="POST", body=new)
    await authorize(jp_fetch, consent, "adhoc")
    assert (await api(jp_fetch, "connections", "adhoc"))["refreshable"] is True
    await api(
        jp_fetch, "connections", "adhoc", method="PUT", body={**new, "scopes": f"{BQ} {DRIVE}"}
    )
    answer = await api(jp_fetch, "connections", "adhoc", "token", method="POST")
    assert answer["reason"] == "scopes_changed"
    q = _query(answer["authorize_url"])
    assert q["prompt"] == "consent" and q["access_type"] == "offline"
    page = await consent(answer["authorize_url"])
    assert page.status_code == 200, page.text
    status = await api(jp_fetch, "connections", "adhoc")
    assert status["status"] == "authorized"
    assert status["refreshable"] is True, "without prompt=consent Google sends none now"
