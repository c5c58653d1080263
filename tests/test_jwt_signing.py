"""Snowflake oauth-jwt: minted only where users cannot read the key (or by an admin's
opt-in), for a verified claim the admin names, with a stable issuer and a ``kid``."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from jupyter_connauth.core.errors import ConnAuthError
from jupyter_connauth.kernel.local import LocalBrokerClient
from tests.test_consent_flow import api
from tests.test_passthrough_jwt import rsa_pem, sf_jwt

AUD = "https://acme.snowflakecomputing.com"
OID = "6f1e2d3c-0000-4a5b-9c8d-00000000ca01"


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, rsa.RSAPrivateKey]:
    return rsa_pem(tmp_path)


@pytest.fixture
def connections(key: tuple[Path, rsa.RSAPrivateKey]) -> dict[str, Any]:
    return {"sf": sf_jwt(key[0], AUD)}


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {
        "account_claims": {
            "carol": {"oid": OID},
            "eve": {"email_verified": False},
            # no email at all, and a upn (Entra lets some tenants' users edit it)
            "mallory": {"email": None, "upn": "boss@example.com"},
        }
    }


async def error_of(jp_fetch: Any, *path: str, method: str = "POST") -> tuple[int, dict[str, Any]]:
    with pytest.raises(HTTPClientError) as e:
        await api(jp_fetch, *path, method=method)
    assert e.value.response is not None
    return e.value.code, json.loads(e.value.response.body)


def rfc7638_thumbprint(key: rsa.RSAPrivateKey) -> str:
    numbers = key.public_key().public_numbers()

    def b64(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    canonical = json.dumps(
        {"e": b64(numbers.e), "kty": "RSA", "n": b64(numbers.n)}, separators=(",", ":")
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# -- a single-user server runs as the user: no signing without the admin's opt-in --------


async def test_refused_on_a_single_user_server_without_the_opt_in(jp_fetch, idp):
    status = await api(jp_fetch, "connections", "sf")
    assert status["status"] == "error" and status["error"] == "jwt_signing_refused"
    code, body = await error_of(jp_fetch, "connections", "sf", "token")
    assert code == 403 and body["error"] == "jwt_signing_refused"
    assert "allow_jwt_signing_as_user" in body["fix"] and "JupyterHub" in body["fix"]
    assert "authorize_url" not in body  # refused before any consent is asked
    doctor = await api(jp_fetch, "connections", "sf", "doctor")
    (signing,) = [c for c in doctor["checks"] if c["check"] == "JWT signing"]
    assert signing["ok"] is False and "allow_jwt_signing_as_user" in signing["fix"]


def test_refused_in_a_kernel_hosting_the_broker(
    tmp_path: Path, idp: Any, connections: dict[str, Any], crypt_key: str
) -> None:
    cfg = Config()
    cfg.LocalConnAuth.discovery_url = idp.discovery_url
    cfg.LocalConnAuth.client_id = idp.client_id
    cfg.LocalConnAuth.store_path = str(tmp_path / "local" / "tokens.sqlite3")
    cfg.LocalConnAuth.connections = connections
    client = LocalBrokerClient(cfg, user="alice")
    try:
        assert client.status("sf").get("error") == "jwt_signing_refused"
        with pytest.raises(ConnAuthError) as e:
            client.token("sf")
        assert e.value.code == "jwt_signing_refused" and "runs as you" in e.value.message
    finally:
        client.close()


# -- opted in: minted, flagged, for the named verified claim -----------------------------


class TestOptedIn:
    @pytest.fixture
    def connauth_config(self) -> dict[str, Any]:
        return {"allow_jwt_signing_as_user": True}

    async def test_minted_with_kid_and_flagged(
        self, capfd: pytest.CaptureFixture[str], jp_fetch, consent, key, server_url
    ):
        assert "allow_jwt_signing_as_user is on" in capfd.readouterr().err  # at start
        first = await api(jp_fetch, "connections", "sf", "token", method="POST")
        await consent(first["authorize_url"], "carol")
        answer = await api(jp_fetch, "connections", "sf", "token", method="POST")
        assert answer["status"] == "ok" and answer["kind"] == "jwt"
        header = pyjwt.get_unverified_header(answer["access_token"])
        assert header["alg"] == "RS256" and header["kid"] == rfc7638_thumbprint(key[1])
        claims = pyjwt.decode(
            answer["access_token"], key[1].public_key(), algorithms=["RS256"], audience=AUD
        )
        assert claims["sub"] == claims["email"] == "carol@example.com"
        assert claims["iss"] == server_url  # c.ConnAuth.public_url, the default issuer
        doctor = await api(jp_fetch, "connections", "sf", "doctor")
        by_name = {c["check"]: c for c in doctor["checks"]}
        assert by_name["JWT signing"]["ok"] is False
        assert "allow_jwt_signing_as_user is on" in by_name["JWT signing"]["detail"]
        assert by_name["JWT issuer"]["detail"] == server_url

    @pytest.mark.parametrize("login", ["eve", "mallory"])
    async def test_no_verified_email_no_token(self, jp_fetch, consent, login):
        first = await api(jp_fetch, "connections", "sf", "token", method="POST")
        page = await consent(first["authorize_url"], login)
        assert page.status_code == 200, page.text
        code, body = await error_of(jp_fetch, "connections", "sf", "token")
        assert code == 403 and body["error"] == "no_email", body
        assert "boss@example.com" not in json.dumps(body)


class TestNamedClaim:
    @pytest.fixture
    def connauth_config(self) -> dict[str, Any]:
        return {"allow_jwt_signing_as_user": True, "jwt_subject_claim": "oid"}

    async def test_subject_from_the_named_claim(self, jp_fetch, consent, key):
        first = await api(jp_fetch, "connections", "sf", "token", method="POST")
        await consent(first["authorize_url"], "carol")
        answer = await api(jp_fetch, "connections", "sf", "token", method="POST")
        claims = pyjwt.decode(
            answer["access_token"], key[1].public_key(), algorithms=["RS256"], audience=AUD
        )
        assert claims["sub"] == OID
        # an account without that claim gets no token, whatever its email
        await api(jp_fetch, "connections", "sf", "revoke", method="POST")
        again = await api(jp_fetch, "connections", "sf", "token", method="POST")
        await consent(again["authorize_url"], "dave")
        code, body = await error_of(jp_fetch, "connections", "sf", "token")
        assert code == 403 and body["error"] == "no_subject" and "'oid'" in body["message"]


# -- the issuer does not follow the port -----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def second_server(
    tmp_path: Path, jp_server_config: dict[str, Any], crypt_key: str
) -> Iterator[tuple[str, str]]:
    """The same config in another Jupyter server process, on another port."""
    home = tmp_path / "second"
    config_dir = home / "config"
    config_dir.mkdir(parents=True)
    config = json.loads(json.dumps(jp_server_config))
    config["ConnAuth"]["store_path"] = str(home / "tokens.sqlite3")
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
    port, token = _free_port(), "second-server-token"
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_CONNAUTH_CRYPT_KEY": crypt_key,
    }
    cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}"]
    cmd += [f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0", "--allow-root"]
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx2.get(f"{url}api/status?token={token}", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError((home / "server.log").read_text()[-3000:])
        yield url, token
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


class TestStableIssuer:
    @pytest.fixture
    def jp_server_config(self, jp_server_config: dict[str, Any]) -> dict[str, Any]:
        jp_server_config["ConnAuth"].pop("public_url")  # each server's URL has its port
        jp_server_config["ConnAuth"]["allow_jwt_signing_as_user"] = True
        jp_server_config["ServerApp"]["log_level"] = logging.getLevelName(logging.INFO)
        return jp_server_config

    async def test_issuer_identical_on_two_ports(self, jp_fetch, jp_http_port, second_server):
        here = await api(jp_fetch, "connections", "sf", "doctor")
        url, token = second_server
        assert str(jp_http_port) not in url
        there = httpx2.get(
            f"{url}connauth/api/connections/sf/doctor",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        ).json()
        issuers = [
            next(c["detail"] for c in d["checks"] if c["check"] == "JWT issuer")
            for d in (here, there)
        ]
        assert issuers[0] == issuers[1] == "jupyter-connauth"
