"""The broker as the hub service runs it: the same :class:`Broker`, with the hub's identity.

Two things change when the broker knows the user from JupyterHub:

- ``oauth-jwt`` (Snowflake): the JWT's email is the hub's verified email of the user
  (auth_state's email claim, or the configured name → email mapping), so no consent
  is needed; the private key stays in this process.
- ``on-behalf-of`` / ``token-exchange``: when the user logged in to the hub with
  OAuthenticator against the same IdP (``enable_auth_state``), their login access token
  is the subject: a warehouse token with no popup. The service never spends the hub's
  refresh token (which would break the hub's copy when the IdP rotates it): the hub
  refreshes the login token itself (OAuthenticator's ``refresh_user``); without a
  valid login token the broker falls back to its own consent grant as the subject.
  When the IdP answers the login token with a claims challenge (Entra's Conditional
  Access), that login token is not offered again: the broker's own grant, from a
  consent that passes the claims, is the subject until the user's login changes.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from ..broker.broker import Broker
from ..broker.flows import FlowStart
from ..broker.grants import TokenGrant, consent_reason, grant_of
from ..broker.jwt_mint import jwt_subject
from ..broker.passthrough import ClaimsChallenged
from ..core.connections import ConnectionSpec
from ..core.errors import ConnAuthError, SubjectRejected
from .identity import HubIdentity

log = logging.getLogger(__name__)

PASS_THROUGH = ("on-behalf-of", "token-exchange")


class HubBroker(Broker):
    jwt_signing_isolated = True  # a service process: users' servers cannot read its key

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (user, connection) → digest of a login token the IdP met with a claims challenge
        self._challenged: dict[tuple[str, str], str] = {}

    def _login_usable(self, ident: HubIdentity, name: str) -> bool:
        if not ident.login_token_valid(self.config.refresh_leeway):
            return False
        assert ident.login_token is not None
        return self._challenged.get((ident.name, name)) != _digest(ident.login_token)

    async def token_for(self, ident: HubIdentity, name: str) -> TokenGrant | FlowStart:
        spec = self.connection(name)
        self._check_config(spec)
        if spec.auth == "oauth-jwt":
            return await self._mint_for(spec, ident)
        lane = self.lane(spec)
        # (a federated BigQuery connection exchanges its own consent at Google STS)
        passes = spec.auth in PASS_THROUGH and not spec.federated
        if passes and self._login_usable(ident, name):
            assert ident.login_token is not None
            try:
                exchanged = await lane.exchanger.exchange(ident.name, spec, ident.login_token)
            except ClaimsChallenged as e:
                # Never the login token again (the hub cannot pass claims to its login):
                # a consent of the broker's own with the claims.
                log.info(
                    "jupyter-connauth: claims challenge for %s's login token for %s; "
                    "consent with the claims",
                    ident.name,
                    name,
                )
                self._challenged[(ident.name, name)] = _digest(ident.login_token)
                lane.flows.challenge(ident.name, name, e.claims)
                lane.exchanger.forget(ident.name, name)
                if consent_reason(spec, self.store.get_token(ident.name, name)) is not None:
                    return await lane.flows.start(
                        ident.name, spec, "claims_challenge", expected_email=ident.email
                    )
            except SubjectRejected:
                log.info(
                    "jupyter-connauth: the IdP refused %s's login token for %s; "
                    "falling back to consent",
                    ident.name,
                    name,
                )
                lane.exchanger.forget(ident.name, name)
            else:
                return grant_of(
                    spec,
                    exchanged,
                    identity=ident.email or ident.name,
                    grant=_hub_grant("login", ident),
                    via="login",
                )
        return await self.token(ident.name, name, expected_email=ident.email)

    def _jwt_claims(self, ident: HubIdentity) -> dict[str, Any]:
        """The claims the JWT subject is taken from (c.ConnAuth.jwt_subject_claim)."""
        if self.config.jwt_subject_claim == "email":  # verified, or email_map / _template
            return {"email": ident.email} if ident.email else {}
        return ident.claims  # auth_state's user info, as the authenticator got it

    async def _mint_for(self, spec: ConnectionSpec, ident: HubIdentity) -> TokenGrant:
        subject = jwt_subject(self._jwt_claims(ident), self.config.jwt_subject_claim, spec.name)
        return await self.mint_grant(
            spec, subject, identity=subject, grant=_hub_grant("hub", ident)
        )

    def status_for(self, ident: HubIdentity, name: str) -> dict[str, Any]:
        out = self.status(ident.name, name)
        if out.get("status") != "consent_required":
            return out
        try:
            spec = self.connection(name)
        except ConnAuthError:
            return out
        subject = self._jwt_claims(ident).get(self.config.jwt_subject_claim)
        if spec.auth == "oauth-jwt" and isinstance(subject, str) and subject:
            out.update(status="authorized", authorized_as=subject, via="hub")
        elif (
            spec.auth in PASS_THROUGH
            and ident.login_token_valid(0)
            and self._login_usable(ident, name)
        ):
            out.update(status="authorized", authorized_as=ident.email or ident.name, via="login")
        else:
            return out
        for key in ("reason", "reason_text"):
            out.pop(key, None)
        return out


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _hub_grant(via: str, ident: HubIdentity) -> str:
    """A stable grant value for tokens that come from the hub login, not a consent:
    it changes when the login identity the token is issued for changes."""
    digest = hashlib.sha256(f"{ident.name}\0{ident.email or ''}".encode()).hexdigest()
    return f"{via}:{digest[:16]}"
