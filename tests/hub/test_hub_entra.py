"""The hub service with an Entra ID login (the test IdP's entra profile, JupyterHub's
GenericOAuthenticator): on-behalf-of prefers the hub's login token; when Conditional
Access answers it with a claims challenge, the service starts a consent that passes the
claims and uses that grant from then on: never a loop over the login token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from tests.hub.hub_fixture import CHP, configure_service, service_hub, use_oauth_login
from tests.hub.test_hub import Hub
from tests.idp_fixture import TestIdP, default_client, headless_login

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not CHP.exists(), reason="npm ci in tests/hub (configurable-http-proxy)"),
]

DBX = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"
OBO = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture(scope="module")
def entra_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, httpx2.Client]]:
    work = tmp_path_factory.mktemp("entrahub")
    hub = service_hub(work, authenticator="generic-oauth")
    login_callback = f"{hub.public_url}hub/oauth_callback"
    idp = TestIdP(
        workdir=work / "idp",
        profile="entra",
        resources={f"urn:entra:{DBX}": {"audience": DBX, "scopes": [f"{DBX}/user_impersonation"]}},
        clients=[default_client([hub.callback_url, login_callback])],
    )
    idp.start()
    # the hub login asks for this app's own API: its token is an OBO assertion
    use_oauth_login(hub, idp, ["openid", "email", f"api://{idp.client_id}/access_as_user"])
    obo = {"connector": "databricks", "server_hostname": "h", "http_path": "/p"}
    configure_service(
        hub, idp, work, flavour="azure", connections={"obo": {**obo, "auth": "on-behalf-of"}}
    )
    browser = httpx2.Client(trust_env=False, timeout=30)
    try:
        hub.start()
        h = Hub(hub, idp, b"")
        r = browser.get(f"{hub.public_url}hub/oauth_login")
        assert r.is_redirect, r.text
        done = browser.get(headless_login(r.headers["location"], "carol"))
        assert done.is_redirect and "/hub/" in done.headers["location"], done.text
        h.tokens["carol"] = hub.api("POST", "users/carol/tokens", {"note": "t"})["token"]
        yield h, browser
    finally:
        browser.close()
        hub.stop()
        idp.close()


def _obo_log(idp: TestIdP) -> list[dict[str, Any]]:
    return [t for t in idp.stats()["token_log"] if t["grant_type"] == OBO]


def test_claims_challenge_on_the_login_token_consents_once_with_the_claims(
    entra_hub: tuple[Hub, httpx2.Client],
) -> None:
    h, browser = entra_hub
    # Conditional Access for carol after she signed in to the hub (without the claims)
    h.idp.set_runtime(conditional_access={"accounts": ["carol"], "acrs": "c1"})
    answer = h.service("carol", "POST", "connections/obo/token").json()
    assert answer["status"] == "consent_required", answer
    assert answer["reason"] == "claims_challenge"
    query = {k: v[0] for k, v in parse_qs(urlsplit(answer["authorize_url"]).query).items()}
    assert json.loads(query["claims"])["access_token"]["acrs"]["value"] == "c1"
    callback = headless_login(answer["authorize_url"], "carol")
    page = browser.get(callback, follow_redirects=True)
    assert page.status_code == 200, page.text
    challenged = len([t for t in _obo_log(h.idp) if t["error"] == "interaction_required"])
    for _ in range(3):  # the broker's own grant from now on; the login token is not retried
        token = h.service("carol", "POST", "connections/obo/token").json()
        assert token["status"] == "ok", token
        assert token.get("via") != "login"
        assert token["identity"] == "carol@example.com"
    after = len([t for t in _obo_log(h.idp) if t["error"] == "interaction_required"])
    assert after == challenged == 1
