"""ID token validation (OpenID Connect Core 3.1.3.7) in jupyter_connauth.oauth.oidc.

The discovery document and the JWKS come from the real test IdP. One test takes a real
code flow through the product's IdPClient; the others present tokens an attacker or a
misbehaving IdP could: signed with the IdP's own key (taken from the test IdP's key
file, as a leaked or mis-issued token would be) but with claims Core 3.1.3.7 refuses,
or signed with another key or algorithm.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from jupyter_connauth.oauth.client import IdPClient
from jupyter_connauth.oauth.oidc import InvalidIDTokenError, id_token_algs
from jupyter_connauth.oauth.rfc6749 import OAuthProtocolError
from tests.idp_fixture import DEFAULT_REDIRECT_URI, TestIdP, headless_login, running_idp

NONCE = "n-0S6_WzA2Mj"


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    with running_idp() as server:
        yield server


@pytest.fixture(scope="module")
def idp_key(idp: TestIdP) -> RSAKey:
    """The IdP's own signing key (its kid is in the JWKS)."""
    return RSAKey.import_key(json.loads((idp.workdir / "signing-key.json").read_text()))


def _client(idp: TestIdP) -> IdPClient:
    return IdPClient(idp.discovery_url, idp.client_id, idp.client_secret or "")


def _verify(idp: TestIdP, token: str, access_token: str | None = None) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        client = _client(idp)
        try:
            return await client.verify_id_token(token, NONCE, access_token=access_token)
        finally:
            await client.aclose()

    return asyncio.run(run())


def _claims(idp: TestIdP, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": idp.issuer,
        "sub": "alice",
        "aud": idp.client_id,
        "exp": now + 300,
        "iat": now,
        "nonce": NONCE,
        "email": "alice@example.com",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(key: Any, claims: dict[str, Any], alg: str = "RS256") -> str:
    header = {"alg": alg, "typ": "JWT"}
    if isinstance(key, RSAKey):
        header["kid"] = str(key.kid)
    return jwt.encode(header, claims, key, algorithms=[alg])


def _at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def _refused(idp: TestIdP, token: str, *, access_token: str | None = None) -> str:
    with pytest.raises(InvalidIDTokenError) as e:
        _verify(idp, token, access_token)
    assert isinstance(e.value, OAuthProtocolError) and e.value.error == "invalid_id_token"
    assert token not in str(e.value)
    return str(e.value.description)


def test_real_code_flow_id_token_is_verified(idp: TestIdP) -> None:
    """The IdP's own ID token, from a code flow with PKCE and a nonce, passes."""

    async def flow() -> tuple[dict[str, Any], str]:
        client = _client(idp)
        try:
            verifier = secrets.token_urlsafe(64)
            url = await client.authorization_url(
                redirect_uri=DEFAULT_REDIRECT_URI,
                scopes=["openid", "email"],
                state="st",
                code_verifier=verifier,
                nonce=NONCE,
                extra={},
            )
            callback = await asyncio.to_thread(headless_login, url, "alice")
            params = dict(parse_qsl(urlsplit(callback).query))
            resp = await client.exchange_code(
                code=params["code"],
                code_verifier=verifier,
                redirect_uri=DEFAULT_REDIRECT_URI,
                extra={},
            )
            assert resp.id_token
            claims = await client.verify_id_token(
                resp.id_token, NONCE, access_token=resp.access_token
            )
            return claims, resp.id_token
        finally:
            await client.aclose()

    claims, id_token = asyncio.run(flow())
    assert claims["sub"] == "alice" and claims["iss"] == idp.issuer
    assert claims["email"] == "alice@example.com"
    # The same token for another sign-in request (another nonce) is refused.
    with pytest.raises(InvalidIDTokenError):
        asyncio.run(_client_verify_other_nonce(idp, id_token))


async def _client_verify_other_nonce(idp: TestIdP, token: str) -> None:
    client = _client(idp)
    try:
        await client.verify_id_token(token, "another-nonce")
    finally:
        await client.aclose()


def test_token_signed_with_the_idps_key_passes(idp: TestIdP, idp_key: RSAKey) -> None:
    access = secrets.token_urlsafe(32)
    token = _sign(idp_key, _claims(idp, at_hash=_at_hash(access)))
    assert _verify(idp, token, access)["sub"] == "alice"


def test_forged_signature_is_refused(idp: TestIdP) -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "forged"})
    _refused(idp, _sign(other, _claims(idp)))


def test_alg_none_is_refused(idp: TestIdP) -> None:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    _refused(idp, f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(_claims(idp))}.")


def test_hmac_with_the_client_secret_is_refused(idp: TestIdP) -> None:
    """Core 10.1 allows HS256 keyed by the client secret; this client announces none."""
    key = OctKey.import_key((idp.client_secret or "x").encode())
    assert "algorithm" in _refused(idp, _sign(key, _claims(idp), alg="HS256"))


def test_alg_outside_discovery_is_refused(idp: TestIdP, idp_key: RSAKey) -> None:
    """The IdP's own key, but PS256: discovery's id_token_signing_alg_values_supported
    says RS256 only, so the token is not what this IdP issues."""
    assert idp.discovery()["id_token_signing_alg_values_supported"] == ["RS256"]
    jwk = idp_key.as_dict(private=True)
    unpinned = RSAKey.import_key({k: v for k, v in jwk.items() if k != "alg"})
    assert "RS256" in _refused(idp, _sign(unpinned, _claims(idp), alg="PS256"))


@pytest.mark.parametrize(
    ("changes", "claim"),
    [
        ({"aud": "another-client"}, "aud"),
        ({"iss": "https://evil.example"}, "iss"),
        ({"nonce": "replayed"}, "nonce"),
        ({"sub": None}, "sub"),
        ({"exp": int(time.time()) - 3600}, "expired"),
    ],
)
def test_claims_core_3_1_3_7_refuses(
    idp: TestIdP, idp_key: RSAKey, changes: dict[str, Any], claim: str
) -> None:
    assert claim in _refused(idp, _sign(idp_key, _claims(idp, **changes)))


def test_several_audiences_need_azp(idp: TestIdP, idp_key: RSAKey) -> None:
    auds = [idp.client_id, "https://other.example"]
    assert "azp" in _refused(idp, _sign(idp_key, _claims(idp, aud=auds)))
    assert "azp" in _refused(idp, _sign(idp_key, _claims(idp, aud=auds, azp="other")))
    assert _verify(idp, _sign(idp_key, _claims(idp, aud=auds, azp=idp.client_id)))["sub"]


def test_at_hash_must_match_the_access_token(idp: TestIdP, idp_key: RSAKey) -> None:
    token = _sign(idp_key, _claims(idp, at_hash=_at_hash("the-real-access-token")))
    assert "at_hash" in _refused(idp, token, access_token="a-substituted-token")


@pytest.mark.parametrize(
    ("announced", "allowed"),
    [
        (["RS256"], ["RS256"]),
        (["PS256", "RS256"], ["PS256", "RS256"]),  # joserfc alone would refuse PS256
        (["none", "HS256", "ES256"], ["ES256"]),  # never none, never the client secret
        (None, ["RS256"]),  # Discovery 3: RS256 is the default
        (["none"], ["RS256"]),
    ],
)
def test_algs_pinned_to_discovery(announced: list[str] | None, allowed: list[str]) -> None:
    meta = {} if announced is None else {"id_token_signing_alg_values_supported": announced}
    assert id_token_algs(meta) == allowed
