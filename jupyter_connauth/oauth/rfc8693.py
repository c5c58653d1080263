"""RFC 8693, OAuth 2.0 token exchange: a token for another audience, from a subject token.

:func:`exchange_params` builds the request of section 2.1; :func:`exchange` sends it to
the client's token endpoint, or to ``endpoint`` (a security token service with its own
URL and rules, such as Google's STS, passes its own ``auth`` and extra ``params``).
"""

from __future__ import annotations

from collections.abc import Mapping

from .rfc6749 import ClientAuthentication, TokenEndpoint, TokenResponse

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
#: Token type identifiers (section 3).
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a URN
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a URN


def exchange_params(
    subject_token: str,
    *,
    subject_token_type: str = ACCESS_TOKEN_TYPE,
    requested_token_type: str | None = ACCESS_TOKEN_TYPE,
    resource: str | None = None,
    audience: str | None = None,
    scope: str | None = None,
) -> dict[str, str]:
    """The parameters of a token exchange request (section 2.1), without the grant type."""
    params = {"subject_token": subject_token, "subject_token_type": subject_token_type}
    for name, value in (
        ("requested_token_type", requested_token_type),
        ("resource", resource),
        ("audience", audience),
        ("scope", scope),
    ):
        if value:
            params[name] = value
    return params


async def exchange(
    client: TokenEndpoint,
    endpoint: str,
    params: Mapping[str, str],
    *,
    auth: ClientAuthentication | None = None,
) -> TokenResponse:
    """Send a token exchange request; the answer's ``issued_token_type`` is in
    ``TokenResponse.extra``."""
    return await client.request(endpoint, GRANT_TYPE, params, auth=auth)
