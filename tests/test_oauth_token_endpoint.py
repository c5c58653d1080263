"""The token-endpoint client of jupyter_connauth.oauth against the real test IdP: the
client authentication is injected (RFC 6749 2.3.1, OpenID Connect Core 9), and the
IdP's answers come back as the RFC 6749 5.2 error subclasses.

The test IdP registers its client with ``client_secret_basic`` (oidc-provider's
default); a public-client request (``none``) or a wrong secret is refused as
``invalid_client``, as RFC 6749 5.2 says.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from jupyter_connauth.oauth.client import IdPClient
from jupyter_connauth.oauth.rfc6749 import (
    ClientAuthentication,
    InvalidClientError,
    InvalidGrantError,
    OAuthProtocolError,
    TokenResponse,
)
from tests.idp_fixture import DEFAULT_REDIRECT_URI, TestIdP, headless_login, running_idp


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    with running_idp(extra_scopes=["sql"]) as server:
        yield server


def _refresh(idp: TestIdP, auth: ClientAuthentication | None, refresh_token: str) -> TokenResponse:
    async def run() -> TokenResponse:
        client = IdPClient(
            idp.discovery_url, idp.client_id, idp.client_secret or "", client_auth=auth
        )
        try:
            return await client.refresh(refresh_token=refresh_token, scope=None, extra={})
        finally:
            await client.aclose()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def refresh_token(idp: TestIdP) -> str:
    """A refresh token from one real consent (the product's default authentication)."""

    async def run() -> str:
        client = IdPClient(idp.discovery_url, idp.client_id, idp.client_secret or "")
        try:
            verifier = secrets.token_urlsafe(64)
            url = await client.authorization_url(
                redirect_uri=DEFAULT_REDIRECT_URI,
                scopes=["openid", "sql", "offline_access"],
                state="st",
                code_verifier=verifier,
                nonce="n",
                extra={"prompt": "consent"},
            )
            callback = await asyncio.to_thread(headless_login, url, "alice")
            code = dict(parse_qsl(urlsplit(callback).query))["code"]
            resp = await client.exchange_code(
                code=code, code_verifier=verifier, redirect_uri=DEFAULT_REDIRECT_URI, extra={}
            )
            assert resp.refresh_token
            return resp.refresh_token
        finally:
            await client.aclose()

    return asyncio.run(run())


def _basic(client: Any, method: str, uri: str, headers: Any, body: str) -> Any:
    """A client authentication a flavour could bring: HTTP Basic written by hand."""
    pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
    headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return uri, headers, body


def test_injected_client_authentication(idp: TestIdP, refresh_token: str) -> None:
    secret = idp.client_secret or ""
    token = refresh_token
    for auth in (
        ClientAuthentication("client_secret_basic", secret),
        ClientAuthentication("connauth_basic", secret, signer=("connauth_basic", _basic)),
        None,  # the default: client_secret_post with the secret
    ):
        resp = _refresh(idp, auth, token)
        assert resp.access_token and resp.scope and "sql" in resp.scope
        token = resp.refresh_token or token


def test_wrong_or_missing_client_authentication_is_invalid_client(
    idp: TestIdP, refresh_token: str
) -> None:
    for auth in (
        ClientAuthentication("client_secret_basic", "not-the-secret"),
        ClientAuthentication("none"),
    ):
        with pytest.raises(InvalidClientError) as e:
            _refresh(idp, auth, refresh_token)
        assert e.value.error == "invalid_client"
        assert "not-the-secret" not in str(e.value) and refresh_token not in str(e.value)


def test_unknown_refresh_token_is_invalid_grant(idp: TestIdP) -> None:
    with pytest.raises(InvalidGrantError) as e:
        _refresh(idp, None, "unknown-refresh-token")
    assert isinstance(e.value, OAuthProtocolError) and e.value.error == "invalid_grant"
    assert "unknown-refresh-token" not in str(e.value)


def test_client_authentication_repr_hides_the_secret() -> None:
    auth = ClientAuthentication("client_secret_post", "s3cr3t-value")
    assert "s3cr3t-value" not in repr(auth)
    assert ClientAuthentication.for_secret("") == ClientAuthentication("none")
