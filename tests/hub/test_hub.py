"""A real JupyterHub (configurable-http-proxy, local user servers) with the connauth service:
one callback for every user, isolation between users, admin routes, no secrets on user
servers, and login pass-through with GenericOAuthenticator against the test IdP."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt as pyjwt
import pytest

from tests.hub.hub_fixture import (
    CHP,
    TestHub,
    configure_service,
    hub_browser,
    service_hub,
    use_oauth_login,
)
from tests.idp_fixture import (
    TestIdP,
    default_client,
    headless_device,
    headless_login,
)
from tests.servers.databricks.fixture import DatabricksServer
from tests.test_passthrough_jwt import rsa_pem
from tests.warehouses import DBX, trusting
from tests.warehouses import lake as warehouse_lake

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not CHP.exists(), reason="npm ci in tests/hub (configurable-http-proxy)"),
]

SF_AUD = "https://acme.snowflakecomputing.com"


def connections(key_path: Path, warehouse: DatabricksServer | None = None) -> dict[str, Any]:
    base = {"connector": "databricks", "server_hostname": "h", "http_path": "/p"}
    lake: dict[str, Any] = {}
    if warehouse is not None:  # a real local warehouse, for the sidebar's Test and browse
        lake["lake"] = warehouse_lake(warehouse)
    return {
        **lake,
        "sales": {**base, "scopes": "sql offline_access"},
        "tx": {**base, "auth": "token-exchange", "resource": DBX, "scopes": "sql"},
        "sf": {
            "connector": "snowflake",
            "account": "acme",
            "role": "ANALYST",
            "auth": "oauth-jwt",
            "jwt_audience": SF_AUD,
            "private_key_path": str(key_path),
        },
    }


class Hub:
    def __init__(
        self,
        hub: TestHub,
        idp: TestIdP,
        key_pem: bytes,
        warehouse: DatabricksServer | None = None,
    ) -> None:
        self.hub, self.idp, self.key_pem, self.warehouse = hub, idp, key_pem, warehouse
        self.tokens: dict[str, str] = {}

    def call(self, user: str, method: str, url: str, body: Any = None) -> httpx2.Response:
        return httpx2.request(
            method,
            url,
            headers={"Authorization": f"token {self.tokens[user]}"},
            json=body,
            timeout=60,
            trust_env=False,
        )

    def service(self, user: str, method: str, path: str, body: Any = None) -> httpx2.Response:
        return self.call(user, method, f"{self.hub.service_url}api/{path}", body)

    def server(self, user: str, owner: str, method: str, path: str) -> httpx2.Response:
        """``path`` on ``owner``'s server, as ``user``."""
        return self.call(user, method, f"{self.hub.public_url}user/{owner}/connauth/api/{path}")

    def browser(self, user: str) -> contextlib.AbstractContextManager[httpx2.Client]:
        return hub_browser(self.hub.public_url, user)

    def authorize(self, user: str, name: str = "sales") -> dict[str, Any]:
        first = self.server(user, user, "POST", f"connections/{name}/token").json()
        assert first["status"] == "consent_required", first
        assert httpx2.URL(first["authorize_url"]).params["redirect_uri"] == self.hub.callback_url
        callback = headless_login(first["authorize_url"], user)
        assert callback.startswith(self.hub.callback_url)
        with self.browser(user) as browser:
            page = browser.get(callback, follow_redirects=True)
        assert page.status_code == 200, page.text
        answer = self.server(user, user, "POST", f"connections/{name}/token").json()
        assert answer["status"] == "ok", answer
        return dict(answer)


@pytest.fixture(scope="module")
def dummy_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    work = tmp_path_factory.mktemp("hub")
    key_path, _key = rsa_pem(work)
    # The IdP must know the callback URL: make the hub (and its ports) first.
    hub = service_hub(work)
    idp = TestIdP(
        workdir=work / "idp",
        extra_scopes=["sql"],
        resources={DBX: {"audience": DBX, "scopes": ["sql"]}},
        clients=[default_client([hub.callback_url])],
        device_interval=1,
    )
    idp.start()
    users = {f"{u}@example.com": {"name": u} for u in ("alice", "bob")}
    warehouse = DatabricksServer(trusting(idp, DBX, users=users))
    try:
        warehouse.start()
        configure_service(
            hub,
            idp,
            work,
            connections=connections(key_path, warehouse),
            _email_template="{username}@example.com",
        )
        hub.start()
        h = Hub(hub, idp, key_path.read_bytes(), warehouse)
        for user in ("alice", "bob"):
            h.tokens[user] = hub.add_user(user)
        h.tokens["admin"] = hub.add_user("admin", admin=True)
        for user in ("alice", "bob"):
            hub.start_server(user)
        yield h
    finally:
        hub.stop()
        warehouse.stop()
        idp.close()


def claims_of(token: str) -> dict[str, Any]:
    return dict(pyjwt.decode(token, options={"verify_signature": False}))


def test_each_user_authorizes_through_the_one_callback(dummy_hub: Hub) -> None:
    h = dummy_hub
    for user in ("alice", "bob"):
        answer = h.authorize(user)
        assert answer["identity"] == f"{user}@example.com"
        assert claims_of(answer["access_token"])["sub"] == user  # the warehouse sees them
    # Snowflake: the JWT is minted in the service for the hub's email of the user.
    from cryptography.hazmat.primitives import serialization

    pub = serialization.load_pem_private_key(h.key_pem, None).public_key()  # type: ignore[union-attr]
    for user in ("alice", "bob"):
        sf = h.server(user, user, "POST", "connections/sf/token").json()
        assert sf["status"] == "ok" and sf["kind"] == "jwt", sf
        claims = pyjwt.decode(
            sf["access_token"],
            pub,
            algorithms=["RS256"],
            audience=SF_AUD,  # type: ignore[arg-type]
        )
        assert claims["email"] == f"{user}@example.com"
        assert claims["iss"] == h.hub.service_url


def test_user_b_reaches_nothing_of_user_a(dummy_hub: Hub) -> None:
    h = dummy_hub
    alice_token = h.server("alice", "alice", "POST", "connections/sales/token").json()
    if alice_token["status"] != "ok":
        alice_token = h.authorize("alice")
    flow = h.service("alice", "POST", "connections/sales/authorize").json()
    secret_bits = [alice_token["access_token"], flow["flow_id"]]
    # The service: bob is always himself; alice's flow is unknown to him.
    got = h.service("bob", "GET", f"flows/{flow['flow_id']}")
    assert got.status_code in (403, 404) and "alice" not in got.text
    for method, path in [
        ("POST", "connections/sales/token"),
        ("GET", "connections/sales"),
        ("GET", "connections"),
        ("GET", "info"),
    ]:
        r = h.service("bob", method, path)
        assert all(s not in r.text for s in secret_bits), (method, path)
    assert h.service("bob", "POST", "connections/sales/revoke").status_code == 200
    assert h.service("alice", "GET", "connections/sales").json()["status"] == "authorized"
    for method, path in [
        ("GET", "admin/users"),
        ("POST", "admin/users/alice/revoke"),
        ("POST", "admin/revoke"),
        ("PUT", "admin/connections/sales/scopes"),
        ("POST", "connections"),
        ("PUT", "connections/sales"),
        ("DELETE", "connections/sales"),
        ("PUT", "connections/sf/private_key"),
    ]:
        r = h.service("bob", method, path, {"scopes": "x"} if method == "PUT" else {})
        assert r.status_code == 403, (method, path, r.status_code, r.text)
    # alice's server: every route refuses bob.
    for method, path in [
        ("GET", "info"),
        ("GET", "connections"),
        ("GET", "connections/sales"),
        ("POST", "connections/sales/token"),
        ("POST", "connections/sales/authorize"),
        ("POST", "connections/sales/revoke"),
        ("POST", "connections/sales/test"),
        ("GET", "connections/sales/browse"),
        ("GET", f"flows/{flow['flow_id']}"),
    ]:
        r = h.server("bob", "alice", method, path)
        assert r.status_code in (403, 404) or r.is_redirect, (method, path, r.status_code)
        assert all(s not in r.text for s in secret_bits)
    # Without any hub credential the service refuses.
    anon = httpx2.post(f"{h.hub.service_url}api/connections/sales/token", trust_env=False)
    assert anon.status_code == 403
    # bob's server holds neither the client secret nor the private key, nor the crypt key.
    pid = h.hub.server_pid("bob")
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    forbidden = [str(h.idp.client_secret).encode(), b"PRIVATE KEY", b"CRYPT_KEY"]
    assert not any(f in environ for f in forbidden)
    home = h.hub.dir / "home" / "bob"
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(f in data for f in forbidden[:2]), path
    info = h.server("bob", "bob", "GET", "info")
    assert info.status_code == 200 and str(h.idp.client_secret) not in info.text


def test_admin_sees_status_revokes_and_edits_scopes(dummy_hub: Hub) -> None:
    h = dummy_hub
    if h.service("alice", "GET", "connections/sales").json()["status"] != "authorized":
        h.authorize("alice")
    users = h.service("admin", "GET", "admin/users")
    assert users.status_code == 200, users.text
    by_name = {u["name"]: u for u in users.json()["users"]}
    sales = {c["name"]: c for c in by_name["alice"]["connections"]}["sales"]
    assert sales["status"] == "authorized" and "access_token" not in users.text
    r = h.service("admin", "POST", "admin/users/alice/revoke", {"connection": "sales"})
    assert r.status_code == 200 and r.json()["results"][0]["revoked"]
    after = h.service("alice", "GET", "connections/sales").json()
    assert after["status"] == "consent_required" and after["reason"] == "revoked"
    config_conn = h.service("admin", "PUT", "admin/connections/sales/scopes", {"scopes": "sql"})
    assert config_conn.status_code == 403 and "restart the service" in config_conn.json()["fix"]
    made = h.service(
        "admin",
        "POST",
        "connections",
        {
            "name": "adhoc",
            "connector": "databricks",
            "server_hostname": "h",
            "http_path": "/q",
            "scopes": "sql offline_access",
        },
    )
    assert made.status_code == 201, made.text
    h.authorize("bob", "adhoc")
    edited = h.service("admin", "PUT", "admin/connections/adhoc/scopes", {"scopes": "sql"})
    assert edited.status_code == 200 and edited.json()["tokens_invalidated"] == 1
    bob = h.service("bob", "GET", "connections/adhoc").json()
    assert bob["status"] == "consent_required" and bob["reason"] == "scopes_changed"
    everyone = h.service("admin", "POST", "admin/revoke", {})
    assert everyone.status_code == 200


def test_sidebar_test_and_browse_run_in_the_service(dummy_hub: Hub) -> None:
    """The sidebar's Test and browse tree, through alice's server's forwarder to the
    service, which queries the warehouse with alice's own token."""
    h = dummy_hub
    assert h.warehouse is not None
    first = h.server("alice", "alice", "POST", "connections/lake/test")
    assert first.status_code == 200, first.text
    asked = first.json()
    assert asked["status"] == "consent_required", asked
    with h.browser("alice") as browser:
        page = browser.get(headless_login(asked["authorize_url"], "alice"), follow_redirects=True)
    assert page.status_code == 200, page.text
    ok = h.server("alice", "alice", "POST", "connections/lake/test").json()
    assert ok["status"] == "ok" and ok["whoami"]["user"] == "alice@example.com", ok
    opened = h.warehouse.stats()["sessions_opened"]

    def names(path: str) -> list[str]:
        r = h.server("alice", "alice", "GET", f"connections/lake/browse?path={path}")
        body = r.json()
        assert r.status_code == 200 and body["status"] == "ok", r.text
        return [i if isinstance(i, str) else i["name"] for i in body["items"]]

    assert names("") == ["main"]
    assert "demo" in names("main")
    assert "sales" in names("main/demo")
    assert "owner" in names("main/demo/sales")
    assert h.warehouse.stats()["sessions_opened"] == opened  # one session, reused
    # bob: his own consent, not alice's session.
    for method, path in [("POST", "connections/lake/test"), ("GET", "connections/lake/browse")]:
        r = h.service("bob", method, path)
        assert r.status_code == 200 and r.json()["status"] == "consent_required", r.text
    # Errors keep the API's shape; a revoke drops the session with the token.
    bad = h.service("alice", "GET", "connections/lake/browse?path=a/b/c/d")
    assert bad.status_code >= 400 and bad.json()["error"] == "bad_path"
    assert h.service("alice", "POST", "connections/lake/revoke").json()["revoked"]
    again = h.service("alice", "POST", "connections/lake/test").json()
    assert again["status"] == "consent_required"


def test_tokens_survive_a_user_server_restart(dummy_hub: Hub) -> None:
    h = dummy_hub
    h.server("alice", "alice", "POST", "connections/sales/revoke")  # whatever ran before
    h.authorize("alice")
    h.hub.api("DELETE", "users/alice/server")
    h.hub.start_server("alice")
    again = h.server("alice", "alice", "POST", "connections/sales/token").json()
    assert again["status"] == "ok"


@pytest.fixture(scope="module")
def oauth_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    work = tmp_path_factory.mktemp("oauthhub")
    hub = service_hub(work, authenticator="generic-oauth")
    login_callback = f"{hub.public_url}hub/oauth_callback"
    idp = TestIdP(
        workdir=work / "idp",
        extra_scopes=["sql"],
        resources={DBX: {"audience": DBX, "scopes": ["sql"]}},
        clients=[default_client([hub.callback_url, login_callback])],
    )
    idp.start()
    use_oauth_login(hub, idp, ["openid", "email"])
    configure_service(hub, idp, work, connections=connections(work / "no-key.pem"))
    try:
        hub.start()
        yield Hub(hub, idp, b"")
    finally:
        hub.stop()
        idp.close()


def test_login_pass_through_needs_no_popup(oauth_hub: Hub) -> None:
    h = oauth_hub
    with httpx2.Client(trust_env=False, timeout=30) as browser:
        r = browser.get(f"{h.hub.public_url}hub/oauth_login")
        assert r.is_redirect, r.text
        callback = headless_login(r.headers["location"], "carol")
        done = browser.get(callback)
        assert done.is_redirect and "/hub/" in done.headers["location"], done.text
    h.tokens["carol"] = h.hub.api("POST", "users/carol/tokens", {"note": "t"})["token"]
    codes_before = h.idp.token_requests("authorization_code")
    answer = h.service("carol", "POST", "connections/tx/token").json()
    assert answer["status"] == "ok", answer
    assert answer["via"] == "login"
    claims = claims_of(answer["access_token"])
    assert claims["sub"] == "carol" and claims["aud"] == DBX
    assert h.idp.token_requests("urn:ietf:params:oauth:grant-type:token-exchange") == 1
    assert h.idp.token_requests("authorization_code") == codes_before  # no popup
    assert h.idp.token_requests("refresh_token") == 0  # the hub's refresh token untouched
    status = h.service("carol", "GET", "connections/tx").json()
    assert status["status"] == "authorized" and status["via"] == "login"
    # A connection without pass-through still asks carol for consent.
    assert h.service("carol", "POST", "connections/sales/token").json()["status"] == (
        "consent_required"
    )


def test_admin_magic_commands_through_the_user_server(dummy_hub: Hub, monkeypatch: Any) -> None:
    """`%sql_connector admin ...` as the hub admin, via the admin's own server."""
    from IPython.core.interactiveshell import InteractiveShell

    from jupyter_connauth.kernel.client import BrokerClient

    h = dummy_hub
    h.hub.start_server("admin")
    if h.service("alice", "GET", "connections/sales").json()["status"] != "authorized":
        h.authorize("alice")
    client = BrokerClient(
        f"{h.hub.public_url}user/admin/connauth/api/", jupyter_token=h.tokens["admin"]
    )
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "jupyter_connauth")
        magics = ip.magics_manager.registry["ConnAuthMagics"]
        magics._client = client
        shown: list[str] = []
        monkeypatch.setattr(
            ip.display_pub, "publish", lambda data, *a, **k: shown.append(data["text/plain"])
        )
        ip.run_line_magic("sql_connector", "admin users")
        assert any("alice" in s and "authorized" in s for s in shown), shown
        assert not any("access_token" in s for s in shown)
        ip.run_line_magic("sql_connector", "admin revoke alice sales")
        assert h.service("alice", "GET", "connections/sales").json()["reason"] == "revoked"
        # alice is no admin: the same commands are refused for her
        magics._client = BrokerClient(
            f"{h.hub.public_url}user/alice/connauth/api/", jupyter_token=h.tokens["alice"]
        )
        result = ip.run_cell("%sql_connector admin users")
        assert result.error_in_exec is not None
    finally:
        client.close()
        magics = ip.magics_manager.registry.pop("ConnAuthMagics", None)
        if magics is not None and magics._client is not None:
            magics._client.close()  # alice's, set above
        InteractiveShell.clear_instance()


def test_the_callback_binds_the_consent_to_the_hub_login(dummy_hub: Hub) -> None:
    """bob cannot complete alice's consent link: the callback sends a browser through the
    hub's login, and a flow belongs to whoever started it."""
    h = dummy_hub
    h.server("alice", "alice", "POST", "connections/sales/revoke")
    first = h.server("alice", "alice", "POST", "connections/sales/token").json()
    callback = headless_login(first["authorize_url"], "bob")  # bob signs in at the IdP
    anonymous = httpx2.get(callback, timeout=30, trust_env=False)
    assert anonymous.is_redirect and "/hub/api/oauth2/authorize" in anonymous.headers["location"]
    with h.browser("bob") as browser:
        page = browser.get(callback, follow_redirects=True)
    assert page.status_code == 400 and "another user" in page.text
    status = h.service("alice", "GET", "connections/sales").json()
    assert status["status"] == "consent_required"  # nothing stored for alice


def test_a_refresh_that_needs_consent_keeps_the_hub_identity(dummy_hub: Hub) -> None:
    """invalid_grant at a refresh starts a consent flow: that flow must carry the hub's
    email like any other, so bob cannot complete it in alice's browser."""
    h = dummy_hub
    h.server("alice", "alice", "POST", "connections/sales/revoke")
    h.idp.set_runtime(access_token_ttl=2)  # at most half a lifetime is leeway: due in 1 s
    try:
        h.authorize("alice")
    finally:
        h.idp.set_runtime(access_token_ttl=300)
    h.idp.revoke_grants("alice")  # the user removed the app's access at the IdP
    time.sleep(1.1)
    answer = h.service("alice", "POST", "connections/sales/token").json()
    assert answer["status"] == "consent_required" and answer["reason"] == "grant_revoked", answer
    callback = headless_login(answer["authorize_url"], "bob")  # bob at the IdP
    with h.browser("alice") as browser:  # ... in alice's hub session
        page = browser.get(callback, follow_redirects=True)
    assert page.status_code == 400, page.text
    assert "bob@example.com" in page.text and "belongs to alice@example.com" in page.text
    status = h.service("alice", "GET", "connections/sales").json()
    assert status["status"] == "consent_required"  # nothing stored for alice


def test_a_refused_subject_token_starts_a_consent_bound_to_the_hub_identity(
    dummy_hub: Hub,
) -> None:
    """Pass-through whose subject (the user's consent grant) the IdP refuses: the new
    consent flow must carry the hub's email as well."""
    h = dummy_hub
    first = h.service("alice", "POST", "connections/tx/token").json()
    if first["status"] == "consent_required":
        callback = headless_login(first["authorize_url"], "alice")
        with h.browser("alice") as browser:
            assert browser.get(callback, follow_redirects=True).status_code == 200
    h.idp.set_runtime(reject_subject_tokens=True)  # e.g. Entra after a session revocation
    try:
        answer = h.service("alice", "POST", "connections/tx/token").json()
    finally:
        h.idp.set_runtime(reject_subject_tokens=False)
    assert answer["status"] == "consent_required" and answer["reason"] == "grant_revoked", answer
    callback = headless_login(answer["authorize_url"], "bob")
    with h.browser("alice") as browser:
        page = browser.get(callback, follow_redirects=True)
    assert page.status_code == 400, page.text
    assert "belongs to alice@example.com" in page.text
    assert h.service("alice", "GET", "connections/tx").json()["status"] == "consent_required"


def test_device_code_through_the_user_server_binds_the_hub_identity(dummy_hub: Hub) -> None:
    """RFC 8628 through alice's server to the service, which polls the IdP. A code
    entered by another IdP account (a phished code) stores nothing; alice's own does."""
    h = dummy_hub
    h.server("alice", "alice", "POST", "connections/sales/revoke")
    api = f"{h.hub.public_url}user/alice/connauth/api/"

    def device_flow(login: str) -> dict[str, Any]:
        started = h.call("alice", "POST", api + "connections/sales/authorize", {"method": "device"})
        answer = started.json()
        assert answer["status"] == "device_code", answer
        assert headless_device(answer["verification_uri"], answer["user_code"], login) == (
            "Sign-in Success"
        )
        for _ in range(150):
            flow = h.server("alice", "alice", "GET", f"flows/{answer['flow_id']}").json()
            if flow["status"] != "pending":
                return dict(flow)
            time.sleep(0.2)
        raise AssertionError(flow)

    phished = device_flow("bob")
    assert phished["status"] == "failed" and phished["error"] == "identity_mismatch", phished
    assert h.service("alice", "GET", "connections/sales").json()["status"] == "consent_required"
    own = device_flow("alice")
    assert own["status"] == "complete" and own["identity"] == "alice@example.com", own
    token = h.server("alice", "alice", "POST", "connections/sales/token").json()
    assert token["status"] == "ok" and token["identity"] == "alice@example.com"
