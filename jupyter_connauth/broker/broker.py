"""The broker: hands each user fresh tokens for their connections.

It puts the parts together: the IdP (:mod:`jupyter_connauth.oauth`), consent flows
(:mod:`.flows`), the stored grants and their refresh (:mod:`.refresh`: brokers are the
only refreshers of the token store, once across every process sharing it),
pass-through exchanges (:mod:`.passthrough`) and Snowflake JWTs (:mod:`.jwt_mint`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx2

from ..core.connections import ConnectionSpec
from ..core.errors import AccessDenied, ConfigError, ConnAuthError, SubjectRejected
from ..core.flavours import Flavour, detect_flavour
from ..core.tokens import REASON_TEXT, Flow
from ..oauth.client import IdPClient
from ..oauth.google_sts import GoogleToken
from ..oauth.rfc6749 import TokenResponse
from . import rejection
from .config import ConnAuth
from .device import DeviceFlows, DeviceStart
from .federation import Federation
from .flows import ConsentFlows, FlowStart
from .grants import TokenGrant, consent_reason, grant_of, rejection_refusal
from .jwt_mint import JWTMinter, jwt_subject, signing_refusal
from .passthrough import Exchanger
from .principal import Principal
from .refresh import Refresher
from .registry import ConnectionRegistry
from .rejection import Rejection
from .store import TokenStore

__all__ = ["CALLBACK_SUFFIX", "Broker", "TokenGrant"]

log = logging.getLogger(__name__)

CALLBACK_SUFFIX = "oauth/connector/callback"

KEY_CHANGED = ConnAuthError(
    "The connection's stored private key cannot be decrypted with the configured keys.",
    "upload the private key again, or put the old key back in JUPYTER_CONNAUTH_CRYPT_KEY "
    "(after the new one: 'new;old')",
    code="key_changed",
)


class Broker:
    #: True where notebook users cannot read this process's files (the hub service):
    #: only there may it hold a Snowflake signing key without an admin's opt-in.
    jwt_signing_isolated = False

    def __init__(
        self,
        config: ConnAuth,
        store: TokenStore,
        *,
        redirect_uri: str,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.redirect_uri = redirect_uri
        if not config.discovery_url:
            self.config_error: ConfigError | None = ConfigError(
                "c.ConnAuth.discovery_url",
                "not set",
                "set it (or JUPYTER_CONNAUTH_DISCOVERY_URL) to your IdP's "
                "/.well-known/openid-configuration URL",
            )
        elif not config.client_id:
            self.config_error = ConfigError(
                "c.ConnAuth.client_id",
                "not set",
                "set it (or JUPYTER_CONNAUTH_CLIENT_ID) to the IdP app's client id",
            )
        else:
            self.config_error = None
        self.flavour: Flavour = detect_flavour(config.discovery_url)
        self.idp = IdPClient(
            config.discovery_url,
            config.client_id,
            config.client_secret,
            timeout=config.http_timeout,
            transport=transport,
        )
        self.registry = ConnectionRegistry(
            config.connections, self.flavour, store, allow_api=config.allow_api_connections
        )
        self.flows = ConsentFlows(
            self.idp,
            store,
            redirect_uri=redirect_uri,
            identity_scopes=list(config.identity_scopes),
            authorize_params={str(k): str(v) for k, v in config.authorize_params.items()},
            ttl=config.flow_ttl,
        )
        self.device_flows = DeviceFlows(self.flows, self.connection)
        self.refresher = Refresher(config, store, self.idp, self.flows)
        self.exchanger = Exchanger(self.idp, config.refresh_leeway)
        self.federation = Federation(
            config.refresh_leeway,
            config.http_timeout,
            transport,
            leeway_fraction=config.refresh_leeway_fraction,
        )
        self.minter = JWTMinter(config.jwt_issuer, self._stored_private_key)

    def set_redirect_uri(self, uri: str) -> None:
        self.redirect_uri = self.flows.redirect_uri = uri

    def _stored_private_key(self, name: str) -> bytes | None:
        return self.store.get_secret(f"connection:{name}:private_key")

    async def aclose(self) -> None:
        self.device_flows.close()
        await self.idp.aclose()
        await self.federation.aclose()
        self.refresher.close()
        self.store.close()

    def _check_config(self) -> None:
        if self.config_error is not None:
            raise self.config_error

    def connection(self, name: str) -> ConnectionSpec:
        return self.registry.get(name)

    # -- tokens ------------------------------------------------------------------
    async def token(
        self, user: str, name: str, *, expected_email: str | None = None
    ) -> TokenGrant | FlowStart:
        """A fresh credential, or a started consent flow saying why consent is needed.

        ``oauth``: the user's access token. ``oauth-jwt``: a JWT minted for the user's
        verified email. Pass-through modes: the user's token exchanged for the
        warehouse's. In every case the stored grant is refreshed first when due.
        """
        self._check_config()
        spec = self.connection(name)
        if spec.auth == "oauth-jwt" and (refused := self._jwt_refusal()) is not None:
            raise refused  # before any consent: the user could not use it anyway
        result = await self.refresher.grant(user, spec, expected_email)
        if isinstance(result, FlowStart) or spec.auth == "oauth":
            return result
        try:
            if spec.auth == "oauth-jwt":
                return await self._mint(spec, result)
            exchanged: TokenResponse | GoogleToken
            if spec.federated:  # BigQuery through Workforce Identity Federation
                id_token = result.extra.get("id_token")
                exchanged = await self.federation.exchange(
                    user, spec, result.access_token, id_token
                )
            else:
                exchanged = await self.exchanger.exchange(user, spec, result.access_token)
        except SubjectRejected:
            self.store.drop_token(user, name, "grant_revoked")
            self.exchanger.forget(user, name)
            self.federation.forget(user, name)
            return await self.flows.start(
                user, spec, "grant_revoked", expected_email=expected_email
            )
        return grant_of(
            spec, exchanged, identity=result.identity, grant=result.grant, warning=result.warning
        )

    def _jwt_refusal(self) -> ConnAuthError | None:
        return signing_refusal(self.config, self.jwt_signing_isolated)

    async def _mint(self, spec: ConnectionSpec, grant: TokenGrant) -> TokenGrant:
        refused = self._jwt_refusal()
        if refused is not None:
            raise refused
        claims = grant.extra.get("claims") or {}
        subject = jwt_subject(claims, self.config.jwt_subject_claim, spec.name)
        return await self.mint_grant(
            spec, subject, identity=grant.identity, grant=grant.grant, warning=grant.warning
        )

    async def mint_grant(
        self,
        spec: ConnectionSpec,
        subject: str,
        *,
        identity: str | None,
        grant: str,
        warning: str | None = None,
    ) -> TokenGrant:
        """The token answer for a Snowflake JWT freshly minted for ``subject``."""
        jwt = await self.minter.amint(spec, subject)
        return TokenGrant(
            connection=spec.name,
            access_token=jwt.token,
            expires_at=jwt.expires_at,
            token_type="Bearer",  # noqa: S106 - the token type
            identity=identity,
            warning=warning,
            extra={"info": spec.kernel_info(), "kind": "jwt"},
            grant=grant,
        )

    async def authorize(
        self,
        user: str,
        name: str,
        reason: str = "user_request",
        *,
        expected_email: str | None = None,
        switch_account: bool = False,
        method: str = "browser",
    ) -> FlowStart | DeviceStart:
        """A consent flow: ``method`` ``"browser"`` (the authorization code) or
        ``"device"`` (RFC 8628's user code, which the broker then polls for)."""
        self._check_config()
        spec = self.connection(name)
        if method == "device":
            return await self.device_flows.start(
                user, spec, reason, expected_email=expected_email, switch_account=switch_account
            )
        return await self.flows.start(
            user, spec, reason, expected_email=expected_email, switch_account=switch_account
        )

    # -- what the HTTP handlers call, with the host's principal ----------------------
    async def token_for(self, who: Principal, name: str) -> TokenGrant | FlowStart:
        """:meth:`token` for a principal: its email, when the host knows one, binds
        every consent flow this starts (the refresh and pass-through paths included)."""
        return await self.token(who.name, name, expected_email=who.email)

    async def rejected(
        self, user: str, name: str, seen: Rejection, *, expected_email: str | None = None
    ) -> TokenGrant | FlowStart:
        """A warehouse rejected the token of a grant :meth:`token` gave
        (:mod:`.rejection`): one forced refresh, then the grant marked rejected."""
        self._check_config()
        spec = self.connection(name)
        if spec.auth != "oauth":  # minted or exchanged: not the stored token
            return await self.token(user, name, expected_email=expected_email)
        return await rejection.report(self.refresher, user, spec, seen, expected_email)

    async def rejected_for(
        self, who: Principal, name: str, seen: Rejection
    ) -> TokenGrant | FlowStart:
        return await self.rejected(who.name, name, seen, expected_email=who.email)

    def status_for(self, who: Principal, name: str) -> dict[str, Any]:
        return self.status(who.name, name)

    async def authorize_for(
        self, who: Principal, name: str, *, switch_account: bool = False, method: str = "browser"
    ) -> FlowStart | DeviceStart:
        """A consent flow the user asked for; ``switch_account`` lets it store a grant
        of another IdP account than the current one's."""
        return await self.authorize(
            who.name, name, expected_email=who.email, switch_account=switch_account, method=method
        )

    def flow_status(self, user: str, flow_id: str) -> Flow:
        flow = self.store.get_flow(flow_id)
        if flow is None or flow.user != user:
            raise AccessDenied(
                "No such consent flow for you.",
                "start the authorization again",
                code="unknown_flow",
            )
        if flow.status == "pending" and flow.expires_at < time.time():
            flow.status = "failed"
            flow.error = "expired_state"
            flow.message = "The consent flow expired before it was completed."
            flow.fix = "start the authorization again and finish it within the time limit"
        return flow

    async def callback(self, params: Mapping[str, str], caller: str | None) -> Flow:
        return await self.flows.callback(params, caller=caller, spec_for=self.connection)

    async def revoke(self, user: str, name: str) -> dict[str, Any]:
        spec = self.connection(name)
        stored = self.store.get_token(user, name)
        had = stored is not None and stored.record is not None
        revoked_at_idp = False
        if had:
            assert stored is not None and stored.record is not None
            record = stored.record
            self.store.drop_token(user, name, "revoked")
            self.exchanger.forget(user, name)
            self.federation.forget(user, name)
            if self.config_error is None:
                try:
                    if record.refresh_token:
                        revoked_at_idp = await self.idp.revoke(
                            record.refresh_token, "refresh_token"
                        )
                    else:
                        revoked_at_idp = await self.idp.revoke(record.access_token, "access_token")
                except ConnAuthError as e:
                    log.warning("jupyter-connauth: revocation at the IdP failed: %s", e.message)
        return {"connection": spec.name, "revoked": had, "revoked_at_idp": revoked_at_idp}

    # -- status ------------------------------------------------------------------
    def status(self, user: str, name: str) -> dict[str, Any]:
        try:
            spec = self.connection(name)
        except ConfigError as e:
            return {
                "name": name,
                "status": "error",
                "error": e.code,
                "message": e.message,
                "fix": e.fix,
            }
        out = spec.public_dict()
        if spec.auth == "oauth-jwt" and not out.get("private_key_configured"):
            out["private_key_configured"] = self._stored_private_key(name) is not None
            if self.store.secret_unreadable(f"connection:{name}:private_key"):
                out.update(status="error", **KEY_CHANGED.to_json())
                return out
        if spec.auth == "oauth-jwt" and (refused := self._jwt_refusal()) is not None:
            out.update(status="error", **refused.to_json())
            return out
        stored = self.store.get_token(user, name)
        if self.config_error is not None:
            out.update(status="error", **self.config_error.to_json())
            return out
        reason = consent_reason(spec, stored)
        if reason is not None:
            out.update(
                status="consent_required",
                reason=reason,
                reason_text=REASON_TEXT.get(reason, reason),
            )
            return out
        assert stored is not None and stored.record is not None
        rec = stored.record
        if (refused := rejection_refusal(spec, rec)) is not None:
            out.update(status="error", **refused.to_json())
            return out
        out.update(
            status="authorized",
            authorized_as=rec.display_identity,
            expires_at=rec.expires_at,
            granted_scopes=list(rec.scope) if rec.scope is not None else None,
            refreshable=bool(rec.refresh_token),
        )
        return out

    def statuses(self, user: str) -> list[dict[str, Any]]:
        return [self.status(user, name) for name in self.registry.names()]

    # -- connections defined through the API -------------------------------------
    def create_connection(self, name: str, raw: Mapping[str, Any]) -> ConnectionSpec:
        return self.registry.create(name, raw)

    def update_connection(self, name: str, raw: Mapping[str, Any]) -> tuple[ConnectionSpec, int]:
        spec, changed = self.registry.update(name, raw)
        dropped = self.store.drop_connection_tokens(name, "scopes_changed") if changed else 0
        return spec, dropped

    def delete_connection(self, name: str) -> None:
        self.registry.delete(name)

    def store_private_key(self, name: str, pem: bytes) -> None:
        spec = self.connection(name)
        if spec.source != "api":
            raise AccessDenied(
                f"Connection {name!r} is configured by the admin; its key comes from the config.",
                "set private_key_path or private_key_env in c.ConnAuth.connections",
            )
        self.store.put_secret(f"connection:{name}:private_key", pem)
