"""Real tokens from the test IdP for driver-level tests (no broker involved).

token = user_token(idp, "alice", scopes="sql", resource="https://dbx.local")
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from authlib.integrations.httpx_client import OAuth2Client

from tests.idp_fixture import DEFAULT_REDIRECT_URI, TestIdP, headless_login


def user_tokens(
    idp: TestIdP,
    login: str,
    *,
    scopes: str = "openid email",
    resource: str | None = None,
    redirect_uri: str = DEFAULT_REDIRECT_URI,
) -> dict[str, Any]:
    """The IdP's whole token response for ``login`` (access, refresh, id token)."""
    meta = idp.discovery()
    client = OAuth2Client(
        idp.client_id,
        idp.client_secret,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_post",
    )
    verifier = secrets.token_urlsafe(48)
    extra = {"resource": resource} if resource else {}
    if "offline_access" in scopes.split():
        extra["prompt"] = "consent"
    url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, scope=scopes, **extra
    )
    callback = headless_login(url, login)
    params = dict(parse_qsl(urlsplit(callback).query))
    assert params.get("state") == state, callback
    token = client.fetch_token(
        meta["token_endpoint"], code=params["code"], code_verifier=verifier, **extra
    )
    client.close()
    return dict(token)


def user_token(idp: TestIdP, login: str, **kw: Any) -> str:
    return str(user_tokens(idp, login, **kw)["access_token"])
