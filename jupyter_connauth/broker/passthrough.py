"""Pass-through: exchange the user's own token (the subject) for the warehouse's.

- ``on-behalf-of`` (Azure): the jwt-bearer grant with ``requested_token_use=on_behalf_of``
  and ``scope=<resource>/.default``;
- ``token-exchange``: RFC 8693 with the subject as an access token.

Exchanged tokens are kept in memory only, until shortly before they expire.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..core.connections import ConnectionSpec
from ..core.errors import ConnAuthError, SubjectRejected
from .fixes import fix_for
from .idp import IdPClient, OAuthProtocolError, TokenResponse

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN


@dataclass
class _Cached:
    subject: str
    token: TokenResponse


class Exchanger:
    def __init__(self, idp: IdPClient, leeway: float) -> None:
        self.idp = idp
        self.leeway = leeway
        self._cache: dict[tuple[str, str], _Cached] = {}

    def forget(self, user: str, connection: str) -> None:
        self._cache.pop((user, connection), None)

    async def exchange(self, user: str, spec: ConnectionSpec, subject: str) -> TokenResponse:
        key = (user, spec.name)
        cached = self._cache.get(key)
        if (
            cached is not None
            and cached.subject == subject
            and (cached.token.expires_at or 0) - self.leeway > time.time()
        ):
            return cached.token
        scope = " ".join(spec.scopes)
        if spec.auth == "on-behalf-of":
            grant, params = (
                JWT_BEARER,
                {"assertion": subject, "requested_token_use": "on_behalf_of"},
            )
        else:
            grant = TOKEN_EXCHANGE
            params = {
                "subject_token": subject,
                "subject_token_type": ACCESS_TOKEN_TYPE,
                "requested_token_type": ACCESS_TOKEN_TYPE,
            }
            if spec.resource:
                params["resource"] = spec.resource
        if scope:
            params["scope"] = scope
        try:
            token = await self.idp.grant(grant, params)
        except OAuthProtocolError as e:
            fix = fix_for(e.error, e.description, scopes=scope, resource=spec.resource or "")
            if e.error == "invalid_grant":
                raise SubjectRejected(
                    f"The IdP refused to exchange your sign-in for {spec.name!r} (invalid_grant).",
                    "authorize the connection again",
                ) from None
            raise ConnAuthError(
                f"The IdP refused the {spec.auth} exchange for {spec.name!r} ({e.error}"
                + (f": {e.description}" if e.description else "")
                + ").",
                fix
                or (
                    "allow the app to request these scopes on behalf of users (Azure: API "
                    "permissions → add the delegated permission and grant admin consent)"
                    if spec.auth == "on-behalf-of"
                    else "enable token exchange for the app at the IdP and allow the audience"
                ),
                code=e.error if e.error.isidentifier() else "idp_error",
            ) from None
        self._cache[key] = _Cached(subject, token)
        return token
