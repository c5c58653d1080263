"""Microsoft Entra ID's on-behalf-of flow: a middle tier's token for a downstream API.

The JWT bearer grant (RFC 7523 2.1) with Entra's extra parameter
``requested_token_use=on_behalf_of``; the assertion is the user's access token for this
app and the scope the downstream resource's (``<resource>/.default`` for everything the
app may use there). See Microsoft identity platform, "OAuth 2.0 On-Behalf-Of flow",
first case (shared secret).
"""

from __future__ import annotations

from .rfc6749 import TokenEndpoint, TokenResponse

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def obo_params(assertion: str, scope: str | None) -> dict[str, str]:
    """The request's parameters besides the grant type and the client's authentication."""
    params = {"assertion": assertion, "requested_token_use": "on_behalf_of"}
    if scope:
        params["scope"] = scope
    return params


async def on_behalf_of(
    client: TokenEndpoint, endpoint: str, assertion: str, scope: str | None
) -> TokenResponse:
    """Exchange the user's token ``assertion`` for one of ``scope``'s resource."""
    return await client.request(endpoint, GRANT_TYPE, obo_params(assertion, scope))
