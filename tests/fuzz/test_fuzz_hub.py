"""Fuzzing the JupyterHub service: a real hub (configurable-http-proxy), the connauth
service and the test IdP. alice consents to ``sales`` first; then bob, anonymous
callers and bogus tokens send generated requests (the spec's operations through
schemathesis, and raw hypothesis requests: admin routes, odd paths, malformed bodies,
forged callbacks). Checks: no 5xx, nothing of alice's (access or refresh token) nor the
client secret in any answer, alice's stored grant unchanged, the service still answers.

~600 requests by default, ~1,500 with ``CONNAUTH_FUZZ_FULL=1``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from cryptography.fernet import Fernet

from tests.fuzz.engine import (
    FULL,
    Auth,
    Checker,
    Sender,
    api_requests,
    budget,
    callback_requests,
    run_list,
    run_raw,
    run_schemathesis,
    seed_requests,
)
from tests.hub.hub_fixture import (
    CHP,
    TestHub,
    configure_service,
    hub_browser,
    service_hub,
    store_url,
)
from tests.idp_fixture import DEFAULT_CLIENT_SECRET, TestIdP, default_client, headless_login

pytest.importorskip("schemathesis")
pytest.importorskip("jupyterhub")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900 if FULL else 300),
    pytest.mark.skipif(not CHP.exists(), reason="npm ci in tests/hub (configurable-http-proxy)"),
]

TOTAL = budget(600, 1_500)
BASE = {"connector": "databricks", "server_hostname": "127.0.0.1:9", "http_path": "/p"}


class FuzzHub:
    def __init__(self, hub: TestHub, idp: TestIdP, store_url: str, crypt_key: str) -> None:
        self.hub, self.idp, self.store_url, self.crypt_key = hub, idp, store_url, crypt_key
        self.tokens: dict[str, str] = {}

    def service(self, user: str, method: str, path: str) -> httpx2.Response:
        return httpx2.request(
            method,
            f"{self.hub.service_url}api/{path}",
            headers={"Authorization": f"token {self.tokens[user]}"},
            timeout=60,
            trust_env=False,
        )

    def stored(self, user: str, name: str) -> Any:
        from jupyter_connauth.broker.store import SQLTokenStore
        from jupyter_connauth.core.crypto import CryptKeeper

        store = SQLTokenStore(self.store_url, CryptKeeper([self.crypt_key.encode()]))
        try:
            return store.get_token(user, name)
        finally:
            store.close()


@pytest.fixture(scope="module")
def fuzz_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzHub]:
    work = tmp_path_factory.mktemp("fuzzhub")
    crypt_key = Fernet.generate_key().decode()
    hub = service_hub(work, crypt_key)
    idp = TestIdP(
        workdir=work / "idp",
        extra_scopes=["sql"],
        access_token_ttl=7200,
        clients=[default_client([hub.callback_url])],
    )
    idp.start()
    try:
        configure_service(
            hub,
            idp,
            work,
            connections={
                "sales": {**BASE, "scopes": "sql offline_access"},
                "finance": {**BASE, "scopes": "sql offline_access"},
            },
            _email_template="{username}@example.com",
        )
        hub.start()
        h = FuzzHub(hub, idp, store_url(work), crypt_key)
        for user in ("alice", "bob"):
            h.tokens[user] = hub.add_user(user)
        yield h
    finally:
        hub.stop()
        idp.close()


def test_fuzz_hub_service(fuzz_hub: FuzzHub) -> None:
    h = fuzz_hub
    first = h.service("alice", "POST", "connections/sales/authorize").json()
    callback = headless_login(first["authorize_url"], "alice")
    with hub_browser(h.hub.public_url, "alice") as browser:  # the callback needs alice's login
        page = browser.get(callback, follow_redirects=True)
    assert page.status_code == 200, page.text
    grant = h.service("alice", "POST", "connections/sales/token").json()
    assert grant["status"] == "ok"
    row = h.stored("alice", "sales")
    assert row is not None and row.record is not None and row.record.refresh_token

    checker = Checker(
        forbidden={
            "alice_access_token": row.record.access_token,
            "alice_refresh_token": row.record.refresh_token,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "alice_hub_token": h.tokens["alice"],
            "bob_hub_token": h.tokens["bob"],
        },
        api_prefix="/services/connauth/api/",
    )
    auths = [
        Auth("bob", {"Authorization": f"token {h.tokens['bob']}"}, True, "bob"),
        Auth("bob-bearer", {"Authorization": f"Bearer {h.tokens['bob']}"}, True, "bob"),
        Auth("none", {}, False),
        Auth("bad", {"Authorization": f"token {h.tokens['alice'][:-2]}xx"}, False),
        Auth("kernel-header", {"X-ConnAuth-Token": "x"}, False),
        Auth("cookie-junk", {"Cookie": "jupyterhub-services=forged"}, False),
    ]
    weighted = [a for a in auths if a.valid] * 3 + auths
    # Straight to the service (as user servers call it): configurable-http-proxy itself
    # answers 500 "URIError: URI malformed" to bad percent-escapes such as %C0%AF, before
    # the service sees them; that is the proxy's behaviour, not ours.
    sender = Sender(h.hub.service_direct_url.removesuffix("services/connauth/"), checker)
    api_root = "/services/connauth/api/"
    known = ["sales", "finance", "nope", "alice", "fz-1"]
    started = time.perf_counter()
    try:
        run_list(sender, seed_requests(auths[:3], api_root, ["sales", "fz-1"], "sales"))
        for name in ("sales", None):
            run_schemathesis(
                sender,
                weighted,
                TOTAL // 5,
                base_path="/services/",
                path_parameters={"name": name} if name else None,
            )
        run_raw(sender, api_requests(weighted, known, api_root), TOTAL // 4)
        cb = callback_requests(
            auths,
            lambda: list(checker.states),
            h.idp.issuer,
            "/services/connauth/oauth/connector/callback",
        )
        while checker.requests < TOTAL:
            run_raw(sender, cb, TOTAL - checker.requests)
    finally:
        sender.close()
    summary = f"{checker.report()}\ntotal {time.perf_counter() - started:.1f} s"
    print(summary)  # the numbers, with pytest -s
    assert not checker.findings, summary

    # alice's grant is untouched and still hers; bob has none; the service answers.
    after = h.stored("alice", "sales")
    assert after is not None and after.record == row.record
    bob = h.stored("bob", "sales")
    assert bob is None or bob.record is None
    again = h.service("alice", "POST", "connections/sales/token").json()
    assert again["status"] == "ok" and again["access_token"] == grant["access_token"]
    assert h.service("bob", "GET", "info").status_code == 200
