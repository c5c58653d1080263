"""The azure flavour against the test IdP's Entra ID profile (tests/idp/profiles.mjs),
through the real server's HTTP API and the IdP's login pages.

The profile's tenant restricts user consent (an admin consented for everyone), as many
do: a ``prompt=consent`` would be "Need admin approval" (AADSTS90094).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.idp_fixture import ENTRA_TENANT, TestIdP
from tests.test_consent_flow import api
from tests.test_refresh import LEEWAY, TTL, authorize, wait_until_due

DBX = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"
DBX_SCOPE = f"{DBX}/user_impersonation"
HOST = {"server_hostname": "adb-1.azuredatabricks.net", "http_path": "/sql/1.0/warehouses/w"}


#: The entra profile with Azure Databricks as a resource (shared with test_providers).
ENTRA_IDP: dict[str, Any] = {
    "profile": "entra",
    "access_token_ttl": TTL,
    "resources": {f"urn:entra:{DBX}": {"audience": DBX, "scopes": [DBX_SCOPE]}},
}


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return dict(ENTRA_IDP)


@pytest.fixture
def connauth_config() -> dict[str, Any]:
    return {"flavour": "azure", "refresh_leeway": LEEWAY, "http_timeout": 2}


@pytest.fixture
def connections() -> dict[str, Any]:
    return {
        "sales": {"connector": "databricks", **HOST},  # the azure template
        "dflt": {"connector": "databricks", **HOST, "scopes": f"{DBX}/.default offline_access"},
        "obo": {"connector": "databricks", **HOST, "auth": "on-behalf-of"},
        "obo_graph": {
            "connector": "databricks",
            **HOST,
            "auth": "on-behalf-of",
            "subject_scopes": "openid email offline_access",
        },
    }


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _checks(doctor: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in doctor["checks"]}


async def test_default_scopes_consent_without_prompt_and_refresh(jp_fetch, consent, idp):
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    q = _query(answer["authorize_url"])
    assert "prompt" not in q, "Entra issues refresh tokens without prompt=consent"
    assert set(q["scope"].split()) == {"openid", "email", DBX_SCOPE, "offline_access"}
    page = await consent(answer["authorize_url"])
    assert page.status_code == 200, page.text  # no AADSTS90094 in a restricted tenant
    first = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert first["status"] == "ok"
    status = await api(jp_fetch, "connections", "sales")
    assert status["refreshable"] is True and status["granted_scopes"] == [DBX_SCOPE]
    await wait_until_due(first)
    fresh = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert fresh["status"] == "ok" and fresh["access_token"] != first["access_token"]
    assert idp.token_requests("refresh_token") == 1


async def test_prompt_consent_from_config_is_aadsts90094_and_doctor_says_so(
    jp_fetch, consent, broker
):
    broker.flows.authorize_params["prompt"] = "consent"  # as c.ConnAuth.authorize_params would
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    page = await consent(answer["authorize_url"])
    assert page.status_code == 400
    assert "AADSTS90094" in page.text
    doctor = _checks(await api(jp_fetch, "connections", "sales", "doctor"))
    assert doctor["prompt"]["ok"] is False
    assert "remove prompt from c.ConnAuth.authorize_params" in doctor["prompt"]["fix"]
    assert doctor["flavour"]["detail"].startswith("azure: Microsoft Entra ID")


async def test_dot_default_is_satisfied_by_the_resources_granted_scopes(jp_fetch, consent):
    token = await authorize(jp_fetch, consent, "dflt")
    status = await api(jp_fetch, "connections", "dflt")
    assert status["granted_scopes"] == [DBX_SCOPE]  # Entra never answers ".default"
    assert token["identity"] == "alice@example.com"


async def test_on_behalf_of_with_the_apps_own_api(jp_fetch, consent, idp):
    answer = await api(jp_fetch, "connections", "obo", "token", method="POST")
    scopes = _query(answer["authorize_url"])["scope"].split()
    assert f"api://{idp.client_id}/access_as_user" in scopes
    await consent(answer["authorize_url"])
    token = await api(jp_fetch, "connections", "obo", "token", method="POST")
    assert token["status"] == "ok", token
    stats = idp.stats()["token_log"]
    obo = [t for t in stats if t["grant_type"].endswith("jwt-bearer")]
    assert obo and obo[-1]["status"] == 200
    doctor = _checks(await api(jp_fetch, "connections", "obo", "doctor"))
    assert doctor["on-behalf-of subject"]["ok"] is True
    assert "subject token audience" not in doctor


async def test_on_behalf_of_with_a_graph_subject_doctor_names_the_fix(jp_fetch, consent, idp):
    answer = await api(jp_fetch, "connections", "obo_graph", "token", method="POST")
    await consent(answer["authorize_url"])
    from tornado.httpclient import HTTPClientError

    with pytest.raises(HTTPClientError) as e:
        await api(jp_fetch, "connections", "obo_graph", "token", method="POST")
    body = json.loads(e.value.response.body)
    assert "AADSTS500131" in body["message"]
    doctor = _checks(await api(jp_fetch, "connections", "obo_graph", "doctor"))
    subject = doctor["on-behalf-of subject"]
    assert subject["ok"] is False
    assert f"Application ID URI api://{idp.client_id}" in subject["fix"]
    assert "access_as_user" in subject["fix"]
    audience = doctor["subject token audience"]
    assert audience["ok"] is False and "00000003-0000-0000-c000-000000000000" in audience["detail"]


async def test_conditional_access_claims_challenge_on_refresh(jp_fetch, consent, idp):
    first = await authorize(jp_fetch, consent)
    idp.set_runtime(conditional_access={"accounts": ["alice"], "acrs": "c1"})
    await wait_until_due(first)
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert answer["status"] == "consent_required" and answer["reason"] == "claims_challenge"
    claims = json.loads(_query(answer["authorize_url"])["claims"])
    assert claims == {"access_token": {"acrs": {"essential": True, "value": "c1"}}}
    page = await consent(answer["authorize_url"])
    assert page.status_code == 200, page.text
    token = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert token["status"] == "ok"
    await wait_until_due(token)  # the new grant satisfies the policy: refresh, no loop
    fresh = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert fresh["status"] == "ok" and fresh["access_token"] != token["access_token"]
    challenged = [t for t in idp.stats()["token_log"] if t["error"] == "interaction_required"]
    assert len(challenged) == 1


async def test_conditional_access_claims_challenge_on_behalf_of(jp_fetch, consent, idp):
    answer = await api(jp_fetch, "connections", "obo", "token", method="POST")
    await consent(answer["authorize_url"])
    idp.set_runtime(conditional_access={"accounts": ["alice"], "acrs": "c1"})
    again = await api(jp_fetch, "connections", "obo", "token", method="POST")
    assert again["status"] == "consent_required" and again["reason"] == "claims_challenge"
    assert "claims" in _query(again["authorize_url"])
    await consent(again["authorize_url"])
    token = await api(jp_fetch, "connections", "obo", "token", method="POST")
    assert token["status"] == "ok", token


# -- multi-tenant: the common endpoint's issuer template --------------------------------
@pytest.fixture
def common_tenants() -> list[str] | None:
    """Parametrized by the tests below: the common endpoint and c.ConnAuth.allowed_tenants."""
    return None


@pytest.fixture
def jp_server_config(
    jp_server_config: dict[str, Any], idp: TestIdP, common_tenants: list[str] | None
) -> dict[str, Any]:
    if common_tenants is not None:
        cfg = jp_server_config["ConnAuth"]
        cfg["discovery_url"] = f"{idp.origin}/common/v2.0/.well-known/openid-configuration"
        cfg["allowed_tenants"] = common_tenants
    return jp_server_config


@pytest.mark.parametrize("common_tenants", [[ENTRA_TENANT]])
async def test_common_endpoint_allowed_tenant(jp_fetch, consent, common_tenants):
    token = await authorize(jp_fetch, consent)
    assert token["identity"] == "alice@example.com"


@pytest.mark.parametrize("common_tenants", [["11111111-2222-3333-4444-555555555555"]])
async def test_common_endpoint_other_tenant_is_refused(jp_fetch, consent, common_tenants):
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    page = await consent(answer["authorize_url"])
    assert page.status_code >= 400
    assert "allowed_tenants" in page.text, page.text[:3000]
    status = await api(jp_fetch, "connections", "sales")
    assert status["status"] == "consent_required"


@pytest.mark.parametrize("common_tenants", [[]])
async def test_common_endpoint_without_allowed_tenants_doctor_names_the_fix(
    jp_fetch, common_tenants
):
    doctor = _checks(await api(jp_fetch, "connections", "sales", "doctor"))
    assert doctor["tenants"]["ok"] is False
    assert "c.ConnAuth.allowed_tenants" in doctor["tenants"]["fix"]
