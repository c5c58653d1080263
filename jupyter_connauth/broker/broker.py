"""The broker: hands each user fresh tokens for their connections.

It puts the parts together: the IdP (:mod:`jupyter_connauth.oauth`), consent flows
(:mod:`.flows`), the stored grants and their refresh (:mod:`.refresh`: brokers are the
only refreshers of the token store, once across every process sharing it),
pass-through exchanges (:mod:`.passthrough`) and Snowflake JWTs (:mod:`.jwt_mint`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2

from ..core.connections import ConnectionSpec
from ..core.errors import AccessDenied, ConfigError, ConnAuthError, SubjectRejected
from ..core.flavours import Flavour
from ..core.tokens import REASON_TEXT, Flow
from ..oauth.google_sts import GoogleToken
from ..oauth.rfc6749 import TokenResponse
from . import rejection
from .config import ConnAuth
from .device import DeviceFlows, DeviceStart
from .federation import Federation
from .flows import ConsentFlows, FlowStart
from .grants import TokenGrant, consent_reason, grant_of, rejection_refusal
from .jwt_mint import JWTMinter, jwt_subject, signing_refusal
from .passthrough import ClaimsChallenged, Exchanger
from .principal import Principal
from .provider import Provider, build_provider, default_settings, provider_settings
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


@dataclass
class Lane:
    """One IdP and the parts of the broker that talk to it."""

    provider: Provider
    flows: ConsentFlows
    refresher: Refresher
    exchanger: Exchanger
    device: DeviceFlows


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
        default = build_provider(
            default_settings(config),
            timeout=config.http_timeout,
            ca_bundle=config.ca_bundle,
            transport=transport,
        )
        self.config_error: ConfigError | None = default.error
        self.provider = default
        self.lanes: dict[str, Lane] = {"": self._lane(default)}
        for pname, raw in config.providers.items():
            try:
                settings = provider_settings(str(pname), raw, config)
            except ConfigError as e:
                log.error("jupyter-connauth: %s", e)
                continue
            p = build_provider(settings, timeout=config.http_timeout, ca_bundle=config.ca_bundle)
            if p.error is not None:
                log.error("jupyter-connauth: %s", p.error)
            self.lanes[settings.name] = self._lane(p)
        main = self.lanes[""]
        self.idp, self.flows = default.idp, main.flows
        self.refresher, self.exchanger = main.refresher, main.exchanger
        self.flavour: Flavour = default.flavour.name  # type: ignore[assignment]
        self.registry = ConnectionRegistry(
            config.connections,
            {
                n: (lane.provider.flavour.name, lane.provider.subject_scopes())  # type: ignore[misc]
                for n, lane in self.lanes.items()
            },
            store,
            allow_api=config.allow_api_connections,
        )
        #: BigQuery through Workforce Identity Federation: Google STS, whatever the IdP.
        self.federation = Federation(
            config.refresh_leeway,
            config.http_timeout,
            transport,
            leeway_fraction=config.refresh_leeway_fraction,
        )
        self.minter = JWTMinter(config.jwt_issuer, self._stored_private_key)

    def _lane(self, provider: Provider) -> Lane:
        config = self.config
        params = dict(provider.settings.authorize_params) or {
            str(k): str(v) for k, v in config.authorize_params.items()
        }
        flows = ConsentFlows(
            provider.idp,
            self.store,
            redirect_uri=self.redirect_uri,
            identity_scopes=list(config.identity_scopes),
            authorize_params=params,
            ttl=config.flow_ttl,
        )
        return Lane(
            provider,
            flows,
            Refresher(config, self.store, provider.idp, flows),
            Exchanger(provider.idp, config.refresh_leeway),
            DeviceFlows(flows, self.connection),
        )

    def forget_exchanged(self, user: str, name: str) -> None:
        """Drop the in-memory exchanged token of ``user`` for ``name`` (any provider)."""
        for lane in self.lanes.values():
            lane.exchanger.forget(user, name)
        self.federation.forget(user, name)

    def lane(self, spec: ConnectionSpec) -> Lane:
        """The IdP, flows, refresher and exchanger of a connection's provider."""
        return self.lanes[spec.provider]

    def set_redirect_uri(self, uri: str) -> None:
        self.redirect_uri = uri
        for lane in self.lanes.values():
            lane.flows.redirect_uri = uri

    def _stored_private_key(self, name: str) -> bytes | None:
        return self.store.get_secret(f"connection:{name}:private_key")

    async def aclose(self) -> None:
        for lane in self.lanes.values():
            lane.device.close()
            await lane.provider.idp.aclose()
            lane.refresher.close()
        await self.federation.aclose()
        self.store.close()

    def _check_config(self, spec: ConnectionSpec | None = None) -> None:
        error = self.lanes[spec.provider].provider.error if spec is not None else None
        if error is None and self.config_error is not None:
            if spec is None or not spec.provider:
                error = self.config_error
        if error is not None:
            raise error

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
        spec = self.connection(name)
        self._check_config(spec)
        if spec.auth == "oauth-jwt" and (refused := self._jwt_refusal()) is not None:
            raise refused  # before any consent: the user could not use it anyway
        lane = self.lane(spec)
        result = await lane.refresher.grant(user, spec, expected_email)
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
                exchanged = await lane.exchanger.exchange(user, spec, result.access_token)
        except ClaimsChallenged as e:
            # The subject must come from a sign-in that passes the claims: a consent
            # with them (the stored grant stays until it completes).
            lane.flows.challenge(user, name, e.claims)
            return await lane.flows.start(
                user, spec, "claims_challenge", expected_email=expected_email
            )
        except SubjectRejected:
            self.store.drop_token(user, name, "grant_revoked")
            self.forget_exchanged(user, name)
            return await lane.flows.start(
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
        spec = self.connection(name)
        self._check_config(spec)
        lane = self.lane(spec)
        starter = lane.device if method == "device" else lane.flows
        return await starter.start(
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

    def cancel_flow(self, user: str, flow_id: str) -> Flow:
        """The user cancelled a pending consent flow (:meth:`.ConsentFlows.cancel`; a
        device code is no longer polled for). A flow already over is answered as is."""
        flow = self.flow_status(user, flow_id)
        if flow.status == "pending" and self.flows.cancel(flow):
            with contextlib.suppress(ConnAuthError):  # a connection gone has no poller
                self.lane(self.connection(flow.connection)).device.cancel(flow)
        return self.store.get_flow(flow_id) or flow

    async def callback(self, params: Mapping[str, str], caller: str | None) -> Flow:
        return await self.flows.callback(
            params,
            caller=caller,
            spec_for=self.connection,
            flows_for=lambda name: self.lane(self.connection(name)).flows,
        )

    async def revoke(self, user: str, name: str) -> dict[str, Any]:
        spec = self.connection(name)
        stored = self.store.get_token(user, name)
        had = stored is not None and stored.record is not None
        revoked_at_idp = False
        if had:
            assert stored is not None and stored.record is not None
            record = stored.record
            self.store.drop_token(user, name, "revoked")
            self.forget_exchanged(user, name)
            lane = self.lane(spec)
            if lane.provider.error is None:
                idp = lane.provider.idp
                try:
                    if record.refresh_token:
                        revoked_at_idp = await idp.revoke(record.refresh_token, "refresh_token")
                    else:
                        revoked_at_idp = await idp.revoke(record.access_token, "access_token")
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
        try:
            self._check_config(spec)
        except ConfigError as e:
            out.update(status="error", **e.to_json())
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
            refresh_expires_at=rec.refresh_expires_at if rec.refresh_token else None,
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
