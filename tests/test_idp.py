"""Tests of the test OpenID provider itself (tests/idp), driven with authlib."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import OAuth2Client
from idp_fixture import (
    DEFAULT_REDIRECT_URI,
    TestIdP,
    headless_login,
    running_idp,
)

BQ = "https://bigquery.googleapis.com/"
BQ_SCOPE = "https://www.googleapis.com/auth/bigquery"
DBX = "https://dbx.example.com/"
RESOURCES = {
    BQ: {"audience": BQ, "scopes": [BQ_SCOPE]},
    DBX: {"audience": "dbx-api", "scopes": ["sql", "all-apis"]},
}
EXTRA = ["session:role-any"]


def _params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


class Flow:
    """An authlib client for one IdP, plus the steps of an authorization."""

    def __init__(self, idp: TestIdP, scope: str) -> None:
        self.idp = idp
        self.meta = idp.discovery()
        self.oauth = OAuth2Client(
            idp.client_id,
            idp.client_secret,
            scope=scope,
            redirect_uri=DEFAULT_REDIRECT_URI,
            code_challenge_method="S256",
            trust_env=False,
        )

    def authorize_url(self, **extra: Any) -> tuple[str, str, str]:
        verifier = secrets.token_urlsafe(48)
        url, state = self.oauth.create_authorization_url(
            self.meta["authorization_endpoint"], code_verifier=verifier, **extra
        )
        return url, state, verifier

    def login(self, **extra: Any) -> dict[str, Any]:
        url, state, verifier = self.authorize_url(**extra)
        callback = headless_login(url)
        params = _params(callback)
        assert "code" in params, callback
        assert params["state"] == state
        assert params["iss"] == self.idp.issuer
        return self.oauth.fetch_token(
            self.meta["token_endpoint"], authorization_response=callback, code_verifier=verifier
        )

    def refresh(self, refresh_token: str, scope: str | None = None) -> dict[str, Any]:
        # authlib sends its configured scope unless told otherwise; by default send none
        return self.oauth.refresh_token(
            self.meta["token_endpoint"], refresh_token=refresh_token, scope=scope
        )

    def token_post(self, **data: str) -> httpx2.Response:
        return httpx2.post(
            self.meta["token_endpoint"],
            data=data,
            auth=(self.idp.client_id, self.idp.client_secret or ""),
            trust_env=False,
            timeout=10,
        )

    def close(self) -> None:
        self.oauth.close()


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    with running_idp(resources=RESOURCES, extra_scopes=EXTRA) as server:
        yield server


@pytest.fixture
def flow(idp: TestIdP) -> Iterator[Flow]:
    f = Flow(idp, f"openid email offline_access {BQ_SCOPE}")
    yield f
    f.close()
    idp.clear_faults()


def _verify(idp: TestIdP, token: str, audience: str) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    keys = {k["kid"]: k for k in idp.jwks()["keys"]}
    key = jwt.PyJWK(keys[header["kid"]]).key
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=idp.issuer)


def test_discovery(idp: TestIdP) -> None:
    meta = idp.discovery()
    assert meta["issuer"] == idp.issuer
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert {"authorization_code", "refresh_token"} <= set(meta["grant_types_supported"])
    assert meta["revocation_endpoint"]
    assert idp.discovery_url.endswith("/.well-known/openid-configuration")


def test_code_flow_jwt_access_token_and_refresh(idp: TestIdP, flow: Flow) -> None:
    idp.reset_stats()
    token = flow.login(prompt="consent")
    claims = _verify(idp, token["access_token"], BQ)
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com"
    assert claims["scope"] == BQ_SCOPE
    assert token["scope"] == BQ_SCOPE
    assert token["refresh_token"]
    id_token = jwt.decode(token["id_token"], options={"verify_signature": False})
    assert id_token["email"] == "alice@example.com" and id_token["email_verified"] is True

    refreshed = flow.refresh(token["refresh_token"], scope=flow.oauth.scope)
    _verify(idp, refreshed["access_token"], BQ)
    assert refreshed["access_token"] != token["access_token"]
    # rotation is off by default: the same refresh token works again
    assert flow.refresh(token["refresh_token"])["access_token"]
    stats = idp.stats()
    assert stats["token_requests"] == {"authorization_code": 1, "refresh_token": 2}
    assert stats["token_log"][0]["has_code_verifier"] is True
    assert stats["token_log"][0]["client_id"] == idp.client_id


def test_no_refresh_token_without_prompt_consent(flow: Flow) -> None:
    token = flow.login()
    assert "refresh_token" not in token


def test_resource_selected_by_scope_and_default_resource(idp: TestIdP) -> None:
    f = Flow(idp, "openid sql session:role-any")
    try:
        token = f.login()
        assert _verify(idp, token["access_token"], "dbx-api")["scope"] == "sql"
        token = f.login(resource="urn:connauth:test-api")
        assert _verify(idp, token["access_token"], "urn:connauth:test-api")["scope"] == (
            "session:role-any"
        )
    finally:
        f.close()


def test_failed_refresh_is_counted(idp: TestIdP, flow: Flow) -> None:
    idp.reset_stats()
    with pytest.raises(OAuthError) as e:
        flow.refresh("not-a-refresh-token")
    assert e.value.error == "invalid_grant"
    stats = idp.stats()
    assert stats["token_requests"] == {"refresh_token": 1}
    assert stats["token_errors"] == {"refresh_token": 1}


def test_code_replay_is_invalid_grant(flow: Flow) -> None:
    url, _, verifier = flow.authorize_url()
    callback = headless_login(url)
    code = _params(callback)["code"]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": DEFAULT_REDIRECT_URI,
        "code_verifier": verifier,
    }
    assert flow.token_post(**data).status_code == 200
    again = flow.token_post(**data)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_wrong_code_verifier_is_invalid_grant(flow: Flow) -> None:
    url, _, _ = flow.authorize_url()
    code = _params(headless_login(url))["code"]
    r = flow.token_post(
        grant_type="authorization_code",
        code=code,
        redirect_uri=DEFAULT_REDIRECT_URI,
        code_verifier=secrets.token_urlsafe(48),
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_pkce_is_required(idp: TestIdP, flow: Flow) -> None:
    url, _ = flow.oauth.create_authorization_url(flow.meta["authorization_endpoint"])
    assert "code_challenge" not in url
    params = _params(headless_login(url))
    assert params["error"] == "invalid_request"


def test_abort_and_consent_denied(flow: Flow) -> None:
    url, state, _ = flow.authorize_url()
    params = _params(headless_login(url, abort=True))
    assert params["error"] == "access_denied" and params["state"] == state
    url, _, _ = flow.authorize_url()
    assert _params(headless_login(url, consent=False))["error"] == "access_denied"


def test_unknown_scope_is_invalid_scope(flow: Flow) -> None:
    url, state, _ = flow.authorize_url(scope="openid no-such-scope")
    params = _params(headless_login(url))
    assert params["error"] == "invalid_scope" and params["state"] == state


def test_prompt_none_without_session(flow: Flow) -> None:
    url, _, _ = flow.authorize_url(prompt="none")
    assert _params(headless_login(url))["error"] == "login_required"


def test_session_reuse_skips_login_and_consent(idp: TestIdP, flow: Flow) -> None:
    with httpx2.Client(timeout=10, trust_env=False) as browser:
        url, _, _ = flow.authorize_url()
        assert "code" in _params(headless_login(url, login="bob", client=browser))
        # same browser session, grant already covers the request: no pages at all
        url, _, _ = flow.authorize_url(prompt="none")
        assert "code" in _params(headless_login(url, login="nobody", client=browser))
        # more scope than granted: prompt=none cannot ask
        url, _, _ = flow.authorize_url(prompt="none", scope=f"openid email profile {BQ_SCOPE}")
        assert _params(headless_login(url, client=browser))["error"] == "consent_required"
        # prompt=consent shows the consent page again even though it was granted
        url, _, verifier = flow.authorize_url(prompt="consent")
        callback = headless_login(url, client=browser)
        token = flow.oauth.fetch_token(
            flow.meta["token_endpoint"], authorization_response=callback, code_verifier=verifier
        )
        assert token["refresh_token"]
        assert _verify(idp, token["access_token"], BQ)["sub"] == "bob"


def test_redirect_uri_mismatch_is_html_400(flow: Flow) -> None:
    url, _, _ = flow.authorize_url(redirect_uri="http://127.0.0.1:1/evil")
    with pytest.raises(AssertionError, match="HTTP 400") as e:
        headless_login(url)
    assert "redirect_uri did not match" in str(e.value)


def test_token_endpoint_faults(idp: TestIdP, flow: Flow) -> None:
    token = flow.login(prompt="consent")
    idp.reset_stats()
    idp.set_faults(fail_token_endpoint=503)
    r = flow.token_post(grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("text/html")
    idp.set_faults(fail_token_endpoint=None, garbage=True)
    r = flow.token_post(grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    idp.set_faults(garbage=False, fail_token_endpoint=502, fail_times=1)
    r = flow.token_post(grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert r.status_code == 502
    assert flow.refresh(token["refresh_token"])["access_token"]  # recovered by itself
    stats = idp.stats()
    assert stats["token_requests"] == {"refresh_token": 4}
    assert [e["client_id"] for e in stats["token_log"]] == [idp.client_id] * 4


def test_token_endpoint_delay(idp: TestIdP, flow: Flow) -> None:
    import time

    idp.set_faults(delay_ms=300)
    start = time.monotonic()
    flow.token_post(grant_type="refresh_token", refresh_token="x")
    assert time.monotonic() - start >= 0.3


def test_revoke_grants(idp: TestIdP, flow: Flow) -> None:
    token = flow.login(prompt="consent")
    assert idp.revoke_grants(account="alice") >= 1
    with pytest.raises(OAuthError) as e:
        flow.refresh(token["refresh_token"])
    assert e.value.error == "invalid_grant"


def test_token_exchange(idp: TestIdP, flow: Flow) -> None:
    token = flow.login()
    r = flow.token_post(
        grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
        subject_token=token["access_token"],
        subject_token_type="urn:ietf:params:oauth:token-type:access_token",
        resource=DBX,
        scope="sql",
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    claims = _verify(idp, body["access_token"], "dbx-api")
    assert claims["sub"] == "alice" and claims["scope"] == "sql"
    bad = flow.token_post(
        grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
        subject_token="forged.token.value",
        subject_token_type="urn:ietf:params:oauth:token-type:access_token",
        audience="dbx-api",
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"


def test_on_behalf_of(idp: TestIdP, flow: Flow) -> None:
    token = flow.login()
    r = flow.token_post(
        grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer",
        assertion=token["access_token"],
        requested_token_use="on_behalf_of",
        scope="https://bigquery.googleapis.com/.default offline_access",
    )
    assert r.status_code == 200, r.text
    body = r.json()
    claims = _verify(idp, body["access_token"], BQ)
    assert claims["sub"] == "alice" and body["scope"] == BQ_SCOPE
    refreshed = flow.refresh(body["refresh_token"])
    assert _verify(idp, refreshed["access_token"], BQ)["sub"] == "alice"


def test_rotation_narrowing_and_restart() -> None:
    with running_idp(
        resources=RESOURCES, rotate_refresh_token=True, narrow_scopes=["all-apis"]
    ) as idp:
        f = Flow(idp, "openid offline_access sql all-apis")
        try:
            token = f.login(prompt="consent")
            assert token["scope"] == "sql"  # all-apis was narrowed away at consent
            assert _verify(idp, token["access_token"], "dbx-api")["scope"] == "sql"

            with pytest.raises(OAuthError) as e:  # RFC 6749 s6: not more than granted
                f.refresh(token["refresh_token"], scope="sql all-apis")
            assert e.value.error == "invalid_scope"
            first = f.refresh(token["refresh_token"])
            assert first["refresh_token"] != token["refresh_token"]
            with pytest.raises(OAuthError) as e:  # the old one is spent
                f.refresh(token["refresh_token"])
            assert e.value.error == "invalid_grant"

            token = f.login(prompt="consent")
            key_before = idp.jwks()
            idp.restart()
            assert idp.jwks() == key_before  # signing key survives a restart
            with pytest.raises(OAuthError) as e:  # grants do not
                f.refresh(token["refresh_token"])
            assert e.value.error == "invalid_grant"
            assert idp.stats()["token_requests"] == {"refresh_token": 1}  # counted after restart
            assert "READY" in idp.log_text() and token["refresh_token"] not in idp.log_text()
        finally:
            f.close()


def test_refresh_token_policy_always() -> None:
    with running_idp(refresh_token_policy="always", access_token_ttl=60, extra_scopes=EXTRA) as idp:
        f = Flow(idp, "openid offline_access session:role-any")
        try:
            token = f.login()  # no prompt=consent
            assert token["refresh_token"]
            assert token["expires_in"] == 60
        finally:
            f.close()


def test_start_failure_reports_output() -> None:
    idp = TestIdP(refresh_token_policy="sometimes")
    try:
        with pytest.raises(RuntimeError, match="refresh_token_policy"):
            idp.start()
    finally:
        idp.close()


def test_basic_auth_header_shape(idp: TestIdP) -> None:
    # the default client authenticates with client_secret_basic (authlib's default)
    raw = base64.b64encode(f"{idp.client_id}:wrong".encode()).decode()
    r = httpx2.post(
        idp.discovery()["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        headers={"Authorization": f"Basic {raw}"},
        trust_env=False,
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_missing_node_modules_says_npm_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import idp_fixture

    monkeypatch.setattr(idp_fixture, "IDP_DIR", tmp_path)
    idp = TestIdP(workdir=tmp_path / "work")
    with pytest.raises(RuntimeError, match="run npm ci in tests/idp"):
        idp.start()
