"""Client authentication and the network path of IdP calls, through the real server and
the real test IdP: ``private_key_jwt`` (RFC 7523) for a client registered with a public
key and no secret; every IdP call through ``HTTP_PROXY`` unless ``NO_PROXY`` names the
host; an unreadable ``c.ConnAuth.ca_bundle`` named in the error."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

from tests.idp_fixture import DEFAULT_CLIENT_ID, TestIdP
from tests.test_consent_flow import api
from tests.test_refresh import LEEWAY, TTL, authorize, wait_until_due


class CountingProxy(ThreadingHTTPServer):
    """A forward HTTP proxy (absolute-URI requests) that counts what it forwards."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[str] = []  # "METHOD host:port/path"
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: CountingProxy

    def _forward(self) -> None:
        target = urlsplit(self.path)
        with self.server.lock:
            self.server.seen.append(f"{self.command} {target.netloc}{target.path}")
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection",)}
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        path = target.path + (f"?{target.query}" if target.query else "")
        conn.request(self.command, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = _forward

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[CountingProxy]:
    server = CountingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _idp_requests(proxy: CountingProxy, idp: TestIdP) -> list[str]:
    host = urlsplit(idp.issuer).netloc
    return [s for s in proxy.seen if f" {host}/" in s]


# -- private_key_jwt -----------------------------------------------------------------
@pytest.fixture
def client_key(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "client-key.pem"
    path.write_bytes(pem)
    public = RSAKey.import_key(pem).as_dict(private=False)
    return path, {**public, "kid": RSAKey.import_key(pem).thumbprint(), "use": "sig"}


@pytest.fixture
def mode() -> str:
    return "secret"


@pytest.fixture
def idp_config(
    mode: str, redirect_uri: str, client_key: tuple[Path, dict[str, Any]]
) -> dict[str, Any]:
    cfg: dict[str, Any] = {"access_token_ttl": TTL}
    if mode == "private_key_jwt":
        cfg["clients"] = [
            {
                "client_id": DEFAULT_CLIENT_ID,
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [client_key[1]]},
            }
        ]
    return cfg


@pytest.fixture
def connauth_config(
    mode: str, client_key: tuple[Path, dict[str, Any]], proxy: CountingProxy, monkeypatch
) -> dict[str, Any]:
    cfg: dict[str, Any] = {"refresh_leeway": LEEWAY, "http_timeout": 2}
    if mode == "private_key_jwt":
        cfg["client_private_key_path"] = str(client_key[0])
    if mode.startswith("proxy"):
        for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv(
            "NO_PROXY", "127.0.0.1" if mode == "proxy_bypassed" else "example.invalid"
        )
    if mode == "bad_ca":
        cfg["ca_bundle"] = str(client_key[0].with_name("nope.pem"))
    return cfg


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any], mode: str) -> dict[str, Any]:
    if mode == "private_key_jwt":
        jp_server_config["ConnAuth"]["client_secret"] = ""  # a key, no secret
    return jp_server_config


@pytest.mark.parametrize("mode", ["private_key_jwt"])
async def test_private_key_jwt_consent_refresh_revoke(jp_fetch, consent, idp, mode):
    first = await authorize(jp_fetch, consent)
    await wait_until_due(first)
    fresh = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert fresh["status"] == "ok" and fresh["access_token"] != first["access_token"]
    revoked = await api(jp_fetch, "connections", "sales", "revoke", method="POST")
    assert revoked["revoked_at_idp"] is True
    log = idp.stats()["token_log"]
    assert [t["status"] for t in log] == [200, 200]
    doctor = await api(jp_fetch, "connections", "sales", "doctor")
    auth = [c for c in doctor["checks"] if c["check"] == "client authentication"]
    assert auth[0]["detail"] == "private_key_jwt" and auth[0]["ok"] is True


@pytest.mark.parametrize("mode", ["proxy"])
async def test_idp_calls_go_through_the_environments_proxy(jp_fetch, consent, idp, proxy, mode):
    await authorize(jp_fetch, consent)
    through = _idp_requests(proxy, idp)
    # discovery, the code exchange, the JWKS for the ID token: all through the proxy
    assert any("/.well-known/openid-configuration" in s for s in through)
    assert any(s.startswith("POST ") and "/token" in s for s in through), through
    assert any("jwks" in s or "/certs" in s for s in through), through


@pytest.mark.parametrize("mode", ["proxy_bypassed"])
async def test_no_proxy_bypasses_the_proxy(jp_fetch, consent, idp, proxy, mode):
    await authorize(jp_fetch, consent)
    assert _idp_requests(proxy, idp) == []


@pytest.mark.parametrize("mode", ["bad_ca"])
async def test_unreadable_ca_bundle_is_a_clear_error(jp_fetch, mode):
    status = await api(jp_fetch, "connections", "sales")
    assert status["status"] == "error"
    assert "c.ConnAuth.ca_bundle" in json.dumps(status)
    assert "PEM" in status["fix"]
