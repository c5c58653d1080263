"""An IdP that returns the email from UserInfo only (OpenID Connect Core 5.4): the hub's
identity check reads it there, instead of failing every consent as "an account without
an email"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub.hub_fixture import CHP, configure_service, service_hub
from tests.hub.test_hub import Hub
from tests.idp_fixture import TestIdP, default_client, headless_login

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not CHP.exists(), reason="npm ci in tests/hub (configurable-http-proxy)"),
]


@pytest.fixture(scope="module")
def userinfo_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    work = tmp_path_factory.mktemp("uihub")
    hub = service_hub(work)
    # No default resource: access tokens are opaque UserInfo tokens, and oidc-provider
    # (conformIdTokenClaims) then puts the email scope's claims in UserInfo only.
    idp = TestIdP(
        workdir=work / "idp", default_resource=None, clients=[default_client([hub.callback_url])]
    )
    idp.start()
    plain = {"connector": "databricks", "server_hostname": "h", "http_path": "/p"}
    configure_service(
        hub,
        idp,
        work,
        connections={"plain": {**plain, "scopes": "offline_access"}},
        _email_template="{username}@example.com",
    )
    try:
        hub.start()
        h = Hub(hub, idp, b"")
        h.tokens["alice"] = hub.add_user("alice")
        yield h
    finally:
        hub.stop()
        idp.close()


def consent(h: Hub, user: str, login: str) -> tuple[int, str]:
    first = h.service(user, "POST", "connections/plain/token").json()
    assert first["status"] == "consent_required", first
    callback = headless_login(first["authorize_url"], login)
    with h.browser(user) as browser:
        page = browser.get(callback, follow_redirects=True)
    return page.status_code, page.text


def test_the_email_from_userinfo_passes_the_hub_identity_check(userinfo_hub: Hub) -> None:
    h = userinfo_hub
    status, text = consent(h, "alice", "alice")
    assert status == 200, text
    assert "Authorized as alice@example.com" in text
    answer = h.service("alice", "POST", "connections/plain/token").json()
    assert answer["status"] == "ok" and answer["identity"] == "alice@example.com"
    # Still bound: bob's UserInfo email is not alice's.
    h.service("alice", "POST", "connections/plain/revoke")
    status, text = consent(h, "alice", "bob")
    assert status == 400 and "belongs to alice@example.com" in text
