"""Snowflake OAuth (JWT) minting and pass-through (token exchange, on-behalf-of)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jupyter_connauth.broker.jwt_mint import MISSING_KEY, JWTMinter, public_key_fingerprint
from jupyter_connauth.core.connections import parse_connection
from jupyter_connauth.core.errors import ConfigError
from tests.test_consent_flow import api

DBX = "https://databricks.local"
SF_AUD = "https://acme.snowflakecomputing.com"


def rsa_pem(tmp_path: Path, name: str = "snowflake_key.pem") -> tuple[Path, rsa.RSAPrivateKey]:
    """A new RSA key, written to ``tmp_path/name`` as unencrypted PKCS#8 PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / name
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, key


def sf_jwt(key_path: Path, audience: str = SF_AUD) -> dict[str, Any]:
    """The connection ``sf``: Snowflake account acme, role ANALYST, with JWTs the broker
    signs with the key at ``key_path`` for ``audience``."""
    return {
        "connector": "snowflake",
        "account": "acme",
        "role": "ANALYST",
        "auth": "oauth-jwt",
        "jwt_audience": audience,
        "private_key_path": str(key_path),
    }


def sf_spec(**extra: Any) -> Any:
    raw = {
        "connector": "snowflake",
        "account": "acme",
        "role": "ANALYST",
        "auth": "oauth-jwt",
        "jwt_audience": SF_AUD,
        **extra,
    }
    return parse_connection("sf", raw, "oidc")


def test_minted_jwt_claims_and_unique_jti(tmp_path: Path) -> None:
    path, key = rsa_pem(tmp_path)
    minter = JWTMinter("https://jupyter.example.com/", lambda _n: None)
    spec = sf_spec(private_key_path=str(path))
    seen: set[str] = set()
    times = []
    for _ in range(300):
        t0 = time.perf_counter()
        minted = minter.mint(spec, "alice@example.com")
        times.append(time.perf_counter() - t0)
        claims = pyjwt.decode(
            minted.token,
            key.public_key(),
            algorithms=["RS256"],
            audience="https://acme.snowflakecomputing.com",
            issuer="https://jupyter.example.com/",
        )
        assert claims["email"] == "alice@example.com"
        assert claims["scp"] == "session:role:ANALYST"
        assert claims["exp"] - claims["iat"] == 600
        seen.add(claims["jti"])
    assert len(seen) == 300
    assert statistics.median(times) < 0.05  # sanity only; the benchmark measures it
    assert public_key_fingerprint(key).startswith("SHA256:")


def test_user_claim_and_any_role(tmp_path: Path) -> None:
    path, key = rsa_pem(tmp_path)
    raw = {
        "connector": "snowflake",
        "account": "acme",
        "auth": "oauth-jwt",
        "jwt_audience": "aud",
        "jwt_user_claim": "upn",
        "private_key_path": str(path),
    }
    spec = parse_connection("sf", raw, "oidc")
    token = JWTMinter("https://j/", lambda _n: None).mint(spec, "bob@example.com").token
    claims = pyjwt.decode(token, key.public_key(), algorithms=["RS256"], audience="aud")
    assert claims["upn"] == "bob@example.com" and claims["scp"] == "session:role-any"


def test_missing_and_bad_private_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    minter = JWTMinter("https://j/", lambda _n: None)
    with pytest.raises(ConfigError) as e:
        minter.mint(sf_spec(), "alice@example.com")
    assert MISSING_KEY in str(e.value)
    monkeypatch.delenv("SF_KEY", raising=False)
    with pytest.raises(ConfigError, match="SF_KEY is empty"):
        minter.mint(sf_spec(private_key_env="SF_KEY"), "alice@example.com")
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="not an unencrypted PEM RSA key"):
        minter.mint(sf_spec(private_key_path=str(bad)), "alice@example.com")
    path, _key = rsa_pem(tmp_path)
    monkeypatch.setenv("SF_KEY", path.read_text())
    assert minter.mint(sf_spec(private_key_env="SF_KEY"), "a@example.com").token.count(".") == 2


class TestJWTThroughTheBroker:
    @pytest.fixture
    def connauth_config(self) -> dict[str, Any]:
        return {"allow_jwt_signing_as_user": True}  # a single-user server signs: opted in

    @pytest.fixture
    def connections(self, tmp_path: Path) -> dict[str, Any]:
        return {"sf": sf_jwt(rsa_pem(tmp_path)[0])}

    async def test_jwt_for_the_consented_email(self, jp_fetch, consent, server_url, connections):
        first = await api(jp_fetch, "connections", "sf", "token", method="POST")
        assert first["status"] == "consent_required"
        assert "email" in first["authorize_url"] and "offline_access" in first["authorize_url"]
        await consent(first["authorize_url"], "carol")
        answer = await api(jp_fetch, "connections", "sf", "token", method="POST")
        assert answer["kind"] == "jwt"
        pem = Path(connections["sf"]["private_key_path"]).read_bytes()  # noqa: ASYNC240
        key = serialization.load_pem_private_key(pem, None)
        claims = pyjwt.decode(
            answer["access_token"],
            key.public_key(),  # type: ignore[union-attr]
            algorithms=["RS256"],
            audience="https://acme.snowflakecomputing.com",
            issuer=server_url,
        )
        assert claims["email"] == "carol@example.com"
        again = await api(jp_fetch, "connections", "sf", "token", method="POST")
        assert again["access_token"] != answer["access_token"]  # one JWT per use
        assert answer["info"]["params"]["role"] == "ANALYST"
        assert "private_key" not in str(answer["info"])


class TestPassThrough:
    @pytest.fixture
    def idp_config(self) -> dict[str, Any]:
        return {"resources": {DBX: {"audience": DBX, "scopes": ["sql"]}}}

    @pytest.fixture
    def connections(self) -> dict[str, Any]:
        base = {"connector": "databricks", "server_hostname": "h", "http_path": "/p"}
        return {
            "tx": {**base, "auth": "token-exchange", "resource": DBX, "scopes": "sql"},
            "obo": {**base, "auth": "on-behalf-of", "scopes": f"{DBX}/.default"},
        }

    @pytest.mark.parametrize("name", ["tx", "obo"])
    async def test_exchange_gives_a_warehouse_token_for_the_user(
        self, jp_fetch, consent, idp, name
    ):
        first = await api(jp_fetch, "connections", name, "token", method="POST")
        assert first["status"] == "consent_required"
        await consent(first["authorize_url"], "dave")
        answer = await api(jp_fetch, "connections", name, "token", method="POST")
        assert answer["status"] == "ok" and answer["identity"] == "dave@example.com"
        keys = pyjwt.PyJWKClient(idp.discovery()["jwks_uri"])
        signing = keys.get_signing_key_from_jwt(answer["access_token"])
        claims = pyjwt.decode(
            answer["access_token"], signing.key, algorithms=["RS256"], audience=DBX
        )
        assert claims["sub"] == "dave"
        grant = "urn:ietf:params:oauth:grant-type:" + (
            "token-exchange" if name == "tx" else "jwt-bearer"
        )
        assert idp.token_requests(grant) == 1
        cached = await api(jp_fetch, "connections", name, "token", method="POST")
        assert cached["access_token"] == answer["access_token"]
        assert idp.token_requests(grant) == 1  # no popup, no new exchange while valid

    async def test_rejected_subject_asks_consent_again(self, jp_fetch, consent, idp, broker):
        first = await api(jp_fetch, "connections", "tx", "token", method="POST")
        await consent(first["authorize_url"])
        idp.restart()  # forgets grants; the subject token is still a valid JWT
        broker.exchanger.forget("alice", "tx")
        answer = await api(jp_fetch, "connections", "tx", "token", method="POST")
        # the restarted IdP still accepts its own JWTs: an exchange succeeds
        assert answer["status"] in ("ok", "consent_required")
        assert os.environ.get("JUPYTER_CONNAUTH_TOKEN")
