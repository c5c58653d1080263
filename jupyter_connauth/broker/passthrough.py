"""Pass-through: exchange the user's own token (the subject) for the warehouse's.

- ``on-behalf-of`` (Azure): Entra's on-behalf-of grant (:mod:`..oauth.entra_obo`);
- ``token-exchange``: RFC 8693 with the subject as an access token (:mod:`..oauth.rfc8693`).

Exchanged tokens are kept in memory only, until shortly before they expire.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..core.connections import ConnectionSpec
from ..core.errors import ConnAuthError, SubjectRejected
from ..oauth import entra_obo, rfc8693
from ..oauth.client import IdPClient
from ..oauth.rfc6749 import InvalidGrantError, OAuthProtocolError, TokenResponse
from .fixes import error_code, fix_for


class ClaimsChallenged(SubjectRejected):
    """The IdP wants a new sign-in that satisfies ``claims`` (Entra's Conditional
    Access: ``interaction_required`` with a claims challenge)."""

    def __init__(self, message: str, fix: str, claims: str) -> None:
        super().__init__(message, fix)
        self.claims = claims


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
            grant, params = entra_obo.GRANT_TYPE, entra_obo.obo_params(subject, scope)
        else:
            grant = rfc8693.GRANT_TYPE
            params = self.idp.flavour.exchange_params(
                rfc8693.exchange_params(subject, resource=spec.resource, scope=scope),
                spec.resource,
            )
        try:
            token = await self._grant(spec, grant, params)
        except InvalidGrantError:
            raise SubjectRejected(
                f"The IdP refused to exchange your sign-in for {spec.name!r} (invalid_grant).",
                "authorize the connection again",
            ) from None
        except OAuthProtocolError as e:
            raise _refused(spec, e, scope) from None
        self._cache[key] = _Cached(subject, token)
        return token

    async def _grant(
        self, spec: ConnectionSpec, grant: str, params: dict[str, str]
    ) -> TokenResponse:
        try:
            return await self.idp.grant(grant, params)
        except OAuthProtocolError as e:
            if isinstance(e, InvalidGrantError) and self.idp.flavour.misconfigured(e.description):
                raise _refused(spec, e, " ".join(spec.scopes)) from None
            if e.claims is None:
                raise
            raise ClaimsChallenged(
                f"The IdP asks you to sign in again for {spec.name!r} ({e.error}: an "
                "access policy such as multi-factor authentication).",
                "authorize the connection again",
                e.claims,
            ) from None


def _refused(spec: ConnectionSpec, e: OAuthProtocolError, scope: str) -> ConnAuthError:
    """The error for an exchange the IdP refused because of the app's setup."""
    fix = fix_for(e.error, e.description, scopes=scope, resource=spec.resource or "")
    return ConnAuthError(
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
        code=error_code(e.error),
    )
