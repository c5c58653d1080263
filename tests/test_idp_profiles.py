"""The test IdP's vendor profiles (tests/idp/profiles.mjs): each profile's documented
difference from the generic provider is observable over HTTP.

These test the test bed, not the product: they drive the IdP with authlib and plain
HTTP the way a client following the vendor's documentation would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pytest
from idp_fixture import ENTRA_TENANT, TestIdP, headless_login, running_idp
from test_idp import Flow

DBX = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"
DBX_SCOPE = f"{DBX}/user_impersonation"


def _params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _callback(flow: Flow, client: httpx2.Client | None = None, **extra: Any) -> dict[str, str]:
    url, _state, _verifier = flow.authorize_url(**extra)
    return _params(headless_login(url, client=client))


# ------------------------------------------------------------------ Entra ID


@pytest.fixture(scope="module")
def entra() -> Iterator[TestIdP]:
    resources = {f"urn:entra:{DBX}": {"audience": DBX, "scopes": [DBX_SCOPE]}}
    with running_idp(profile="entra", resources=resources) as idp:
        yield idp


def test_entra_tenant_issuer_and_common_template(entra: TestIdP) -> None:
    assert entra.issuer == f"{entra.origin}/{ENTRA_TENANT}/v2.0"
    assert entra.discovery()["issuer"] == entra.issuer
    common = httpx2.get(
        f"{entra.origin}/common/v2.0/.well-known/openid-configuration", trust_env=False
    ).json()
    assert common["issuer"] == f"{entra.origin}/{{tenantid}}/v2.0"


def test_entra_offline_access_without_prompt_gives_refresh_token(entra: TestIdP) -> None:
    flow = Flow(entra, f"openid email offline_access {DBX}/.default")
    try:
        token = flow.login()
    finally:
        flow.close()
    assert token.get("refresh_token"), "Entra issues a refresh token for offline_access alone"
    # .default is answered with the resource's concrete scopes
    assert token["scope"] == DBX_SCOPE
    at = _claims(token["access_token"])
    assert at["aud"] == DBX and at["tid"] == ENTRA_TENANT
    assert _claims(token["id_token"])["tid"] == ENTRA_TENANT


def test_entra_prompt_consent_in_restricted_tenant_is_aadsts90094(entra: TestIdP) -> None:
    flow = Flow(entra, f"openid offline_access {DBX_SCOPE}")
    try:
        params = _callback(flow, prompt="consent")
    finally:
        flow.close()
    assert params["error"] == "access_denied"
    assert params["error_description"].startswith("AADSTS90094")
    entra.set_runtime(user_consent="allowed")
    try:
        flow = Flow(entra, f"openid offline_access {DBX_SCOPE}")
        assert "refresh_token" in flow.login(prompt="consent")
        flow.close()
    finally:
        entra.set_runtime(user_consent="restricted")


def test_entra_obo_needs_an_assertion_for_the_app_itself(entra: TestIdP) -> None:
    graph_flow = Flow(entra, "openid email offline_access")
    own_flow = Flow(entra, f"openid api://{entra.client_id}/access_as_user")
    try:
        graph = graph_flow.login()["access_token"]
        own = own_flow.login()["access_token"]
        assert _claims(graph)["aud"] == "00000003-0000-0000-c000-000000000000"
        assert _claims(own)["aud"] == f"api://{entra.client_id}"
        obo = {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "requested_token_use": "on_behalf_of",
            "scope": f"{DBX}/.default",
        }
        refused = graph_flow.token_post(assertion=graph, **obo)
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_grant"
        assert refused.json()["error_description"].startswith("AADSTS500131")
        ok = own_flow.token_post(assertion=own, **obo)
        assert ok.status_code == 200, ok.text
        assert ok.json()["scope"] == DBX_SCOPE
    finally:
        graph_flow.close()
        own_flow.close()


def test_entra_conditional_access_claims_challenge(entra: TestIdP) -> None:
    flow = Flow(entra, f"openid offline_access {DBX_SCOPE}")
    entra.set_runtime(conditional_access={"accounts": ["carol"], "acrs": "c1"})
    try:
        # carol signs in (no claims request): her refresh token meets Conditional Access
        first_url, _s, verifier = flow.authorize_url()
        cb = headless_login(first_url, "carol")
        token = flow.oauth.fetch_token(
            flow.meta["token_endpoint"], authorization_response=cb, code_verifier=verifier
        )
        refused = flow.token_post(grant_type="refresh_token", refresh_token=token["refresh_token"])
        assert refused.status_code == 400
        body = refused.json()
        assert body["error"] == "interaction_required"
        assert body["error_description"].startswith("AADSTS50076")
        challenge = json.loads(body["claims"])
        assert challenge == {"access_token": {"acrs": {"essential": True, "value": "c1"}}}
        # alice is not under the policy
        alice = flow.login()
        assert flow.token_post(
            grant_type="refresh_token", refresh_token=alice["refresh_token"]
        ).is_success
        # a new authorization passing the claims request satisfies it
        url, _s, verifier = flow.authorize_url(claims=body["claims"])
        cb = headless_login(url, "carol")
        token = flow.oauth.fetch_token(
            flow.meta["token_endpoint"], authorization_response=cb, code_verifier=verifier
        )
        assert _claims(token["access_token"])["acrs"] == ["c1"]
        ok = flow.token_post(grant_type="refresh_token", refresh_token=token["refresh_token"])
        assert ok.status_code == 200, ok.text
    finally:
        entra.set_runtime(conditional_access=None)
        flow.close()


# ------------------------------------------------------------------ Google


@pytest.fixture(scope="module")
def google() -> Iterator[TestIdP]:
    bq = "https://www.googleapis.com/auth/bigquery"
    resources = {"https://bigquery.googleapis.com/": {"scopes": [bq]}}
    with running_idp(profile="google", resources=resources, extra_scopes=["extra.read"]) as idp:
        yield idp


def test_google_has_no_offline_access_scope(google: TestIdP) -> None:
    flow = Flow(google, "openid email offline_access")
    try:
        url, _s, _v = flow.authorize_url()
        r = httpx2.get(url, trust_env=False)
    finally:
        flow.close()
    assert r.status_code == 400
    assert "Error 400: invalid_scope" in r.text and "invalid=[offline_access]" in r.text


def test_google_refresh_token_rules(google: TestIdP) -> None:
    bq = "https://www.googleapis.com/auth/bigquery"
    browser = httpx2.Client(timeout=10, trust_env=False, follow_redirects=False)
    flow = Flow(google, f"openid email {bq}")
    try:

        def login(**extra: Any) -> dict[str, Any]:
            url, _s, verifier = flow.authorize_url(**extra)
            cb = headless_login(url, "dave", client=browser)
            return flow.oauth.fetch_token(
                flow.meta["token_endpoint"], authorization_response=cb, code_verifier=verifier
            )

        assert "refresh_token" not in login(), "no access_type=offline: no refresh token"
        assert "refresh_token" in login(access_type="offline"), "first offline authorization"
        again = login(access_type="offline")
        assert "refresh_token" not in again, "Google re-issues one only with prompt=consent"
        assert "refresh_token" in login(access_type="offline", prompt="consent")
    finally:
        flow.close()
        browser.close()


# ------------------------------------------------------------------ Okta


@pytest.fixture(scope="module")
def okta() -> Iterator[TestIdP]:
    resources = {"api://default": {"audience": "api://default", "scopes": ["session:role-any"]}}
    with running_idp(profile="okta", resources=resources) as idp:
        yield idp


def test_okta_client_secret_basic_only(okta: TestIdP) -> None:
    meta = okta.discovery()
    assert meta["issuer"] == f"{okta.origin}/oauth2/default"
    assert meta["token_endpoint"].endswith("/oauth2/default/v1/token")
    assert meta["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "none"]
    flow = Flow(okta, "openid email offline_access session:role-any")
    try:
        url, _s, verifier = flow.authorize_url()
        code = _params(headless_login(url))["code"]
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": flow.oauth.redirect_uri,
            "client_id": okta.client_id,
            "client_secret": okta.client_secret,
        }
        posted = httpx2.post(meta["token_endpoint"], data=data, trust_env=False)
        assert posted.status_code == 401
        assert posted.json()["error"] == "invalid_client"
        # the same code with client_secret_basic works (it was not spent)
        del data["client_secret"], data["client_id"]
        basic = flow.token_post(**data)
        assert basic.status_code == 200, basic.text
        assert basic.json().get("refresh_token"), "offline_access without prompt=consent"
    finally:
        flow.close()


def test_okta_token_exchange_needs_audience(okta: TestIdP) -> None:
    flow = Flow(okta, "openid session:role-any")
    try:
        subject = flow.login()["access_token"]
        exchange = {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": subject,
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "scope": "session:role-any",
        }
        refused = flow.token_post(**exchange)
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_request"
        assert "audience" in refused.json()["error_description"]
        ok = flow.token_post(audience="api://default", **exchange)
        assert ok.status_code == 200, ok.text
    finally:
        flow.close()


# ------------------------------------------------------------------ Keycloak


def test_keycloak_realm_paths_pkce_and_refresh_token() -> None:
    with running_idp(profile="keycloak", realm="acme") as idp:
        assert idp.issuer == f"{idp.origin}/realms/acme"
        meta = idp.discovery()
        assert meta["issuer"] == idp.issuer
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            assert "/realms/acme/protocol/openid-connect/" in meta[key]
        flow = Flow(idp, "openid email")
        try:
            token = flow.login()
            assert token.get("refresh_token"), "Keycloak refreshes without offline_access"
            assert "refresh_expires_in" in token
            url, _s, _v = flow.authorize_url()
            no_pkce = url.replace("code_challenge_method=S256", "code_challenge_method=plain")
            params = _params(headless_login(no_pkce))
            assert params["error"] == "invalid_request"
        finally:
            flow.close()


def test_generic_profile_is_unchanged_by_default() -> None:
    with running_idp() as idp:
        assert idp.issuer == idp.origin
        assert "client_secret_post" in idp.discovery()["token_endpoint_auth_methods_supported"]


def test_unknown_profile_is_refused(tmp_path: Any) -> None:
    idp = TestIdP(workdir=tmp_path, profile="auth0")
    with pytest.raises(Exception, match="profile must be one of"):
        idp.start()
    idp.close()
