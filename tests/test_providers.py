"""Several IdPs in one server (c.ConnAuth.providers): the top-level settings are an
Entra ID (the test IdP's entra profile), a provider "google" is a second IdP process
(google profile); each connection names its provider, and both consents come back
through the one callback URL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.idp_fixture import TestIdP, default_client
from tests.test_consent_flow import api
from tests.test_flavour_entra import ENTRA_IDP
from tests.test_refresh import LEEWAY, TTL, authorize, wait_until_due

BQ = "https://www.googleapis.com/auth/bigquery"


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return dict(ENTRA_IDP)


@pytest.fixture
def google_idp(redirect_uri: str, tmp_path: Path) -> Iterator[TestIdP]:
    with TestIdP(
        workdir=tmp_path / "google-idp",
        profile="google",
        access_token_ttl=TTL,
        resources={"https://bigquery.googleapis.com/": {"scopes": [BQ]}},
        clients=[{**default_client([redirect_uri]), "client_id": "google-app"}],
    ) as idp:
        yield idp


@pytest.fixture
def connauth_config(google_idp: TestIdP) -> dict[str, Any]:
    return {
        "flavour": "azure",
        "refresh_leeway": LEEWAY,
        "http_timeout": 2,
        "providers": {
            "google": {
                "discovery_url": google_idp.discovery_url,
                "client_id": google_idp.client_id,
                "client_secret": google_idp.client_secret,
                "flavour": "google",
            },
            "broken": {"client_id": "x"},
        },
    }


@pytest.fixture
def connections() -> dict[str, Any]:
    dbx = {"server_hostname": "adb-1.azuredatabricks.net", "http_path": "/sql/1.0/warehouses/w"}
    return {
        "sales": {"connector": "databricks", **dbx},
        "bq": {"connector": "bigquery", "project": "acme", "provider": "google"},
        "nowhere": {"connector": "bigquery", "project": "acme", "provider": "okta"},
        "half": {"connector": "bigquery", "project": "acme", "provider": "broken"},
    }


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_two_idps_one_callback(jp_fetch, consent, idp, google_idp, redirect_uri):
    sales = await api(jp_fetch, "connections", "sales", "token", method="POST")
    bq = await api(jp_fetch, "connections", "bq", "token", method="POST")
    assert sales["authorize_url"].startswith(idp.issuer)
    assert bq["authorize_url"].startswith(google_idp.issuer)
    assert _query(sales["authorize_url"])["redirect_uri"] == redirect_uri
    assert _query(bq["authorize_url"])["redirect_uri"] == redirect_uri
    # each with its own flavour's rules: Google's template and access_type, no prompt on Entra
    assert _query(bq["authorize_url"])["scope"].split() == ["openid", "email", BQ]
    assert _query(bq["authorize_url"])["access_type"] == "offline"
    assert "prompt" not in _query(sales["authorize_url"])
    # the Google consent completes first, though the Entra flow was started first
    assert (await consent(bq["authorize_url"])).status_code == 200
    assert (await consent(sales["authorize_url"])).status_code == 200
    a = await api(jp_fetch, "connections", "sales", "token", method="POST")
    b = await api(jp_fetch, "connections", "bq", "token", method="POST")
    assert a["status"] == b["status"] == "ok"
    assert idp.token_requests("authorization_code") == 1
    assert google_idp.token_requests("authorization_code") == 1
    await wait_until_due(b)  # each refreshes at its own IdP
    assert (await api(jp_fetch, "connections", "bq", "token", method="POST"))["status"] == "ok"
    assert google_idp.token_requests("refresh_token") == 1
    assert idp.token_requests("refresh_token") == 0
    revoked = await api(jp_fetch, "connections", "bq", "revoke", method="POST")
    assert revoked["revoked_at_idp"] is True
    assert google_idp.stats()["revocation_requests"] == 1
    assert (await api(jp_fetch, "connections", "sales"))["status"] == "authorized"


async def test_info_names_the_providers_with_their_templates(jp_fetch):
    """The sidebar's edit form offers c.ConnAuth.providers, each with its own flavour's
    scope templates (Google's for a Google provider, not the top-level Entra's)."""
    info = await api(jp_fetch, "info")
    assert info["flavour"] == "azure"
    by_name = {p["name"]: p for p in info["providers"]}
    assert by_name["google"]["flavour"] == "google"
    assert by_name["google"]["scope_templates"]["bigquery/oauth"] == [BQ]
    assert (
        info["scope_templates"]["bigquery/oauth"]
        != by_name["google"]["scope_templates"]["bigquery/oauth"]
    )


async def test_provider_state_cannot_cross(jp_fetch, consent, idp, google_idp):
    """The one callback finds the flow by its state, and the flow's connection the IdP
    that exchanges the code: the Google app's client, never the top-level one."""
    token = await authorize(jp_fetch, consent, "bq")
    assert token["identity"] == "alice@example.com"
    log = google_idp.stats()["token_log"]
    assert [t["client_id"] for t in log] == ["google-app"]
    assert idp.token_requests("authorization_code") == 0


async def test_unknown_and_broken_providers_are_clear_errors(jp_fetch):
    conns = {c["name"]: c for c in (await api(jp_fetch, "connections"))["connections"]}
    nowhere = conns["nowhere"]
    assert nowhere["status"] == "error"
    assert "c.ConnAuth.connections['nowhere'].provider" in json.dumps(nowhere)
    assert "'google'" in nowhere["fix"]
    half = conns["half"]
    assert half["status"] == "error"
    assert "c.ConnAuth.providers['broken'].discovery_url" in json.dumps(half)
    assert conns["sales"]["status"] == "consent_required"
