"""The broker: hands each user fresh tokens for their connections.

Brokers are the only refreshers of the token store. A refresh is single-flight per
(user, connection) within a process (one task) and across every process sharing the
store (the row's lease, see :meth:`Broker._refresh`), so rotating refresh tokens never
race.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2

from ..core.connections import ConnectionSpec
from ..core.errors import (
    AccessDenied,
    ConfigError,
    ConnAuthError,
    IdPUnavailable,
    SubjectRejected,
)
from ..core.flavours import Flavour, detect_flavour
from ..core.redact import remember
from ..core.tokens import REASON_TEXT, Flow, StoredToken, TokenRecord
from ..oauth.google_sts import GoogleToken
from .config import ConnAuth
from .federation import Federation, grant_expiry
from .fixes import fix_for
from .flows import ConsentFlows, FlowStart
from .idp import IdPClient, OAuthProtocolError, TokenResponse
from .jwt_mint import JWTMinter, jwt_subject, signing_refusal
from .passthrough import Exchanger
from .principal import Principal
from .registry import ConnectionRegistry
from .store import TokenStore

log = logging.getLogger(__name__)

CALLBACK_SUFFIX = "oauth/connector/callback"
LEASE_POLL, LEASE_POLL_MAX = 0.05, 0.5  # seconds between looks at another's refresh
LEASE_SLACK = 5.0  # a refresh lease lasts 3 IdP timeouts and this
T = TypeVar("T")


KEY_CHANGED = ConnAuthError(
    "The connection's stored private key cannot be decrypted with the configured keys.",
    "upload the private key again, or put the old key back in JUPYTER_CONNAUTH_CRYPT_KEY "
    "(after the new one: 'new;old')",
    code="key_changed",
)


@dataclass
class TokenGrant:
    """A usable access token for one user and connection."""

    connection: str
    access_token: str
    expires_at: float | None
    token_type: str
    identity: str | None
    warning: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Which grant the token comes from: changes on revoke, re-authorize, scope edits.
    grant: str = ""

    def __post_init__(self) -> None:
        remember(self.access_token)  # masked wherever it shows up in a text from now on

    def __repr__(self) -> str:
        return f"TokenGrant(connection={self.connection!r}, expires_at={self.expires_at!r})"

    def to_json(self) -> dict[str, Any]:
        out = {
            "status": "ok",
            "connection": self.connection,
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "identity": self.identity,
            "warning": self.warning,
            "grant": self.grant,
        }
        private = ("email", "claims", "id_token")
        out.update((k, v) for k, v in self.extra.items() if k not in private)
        return out


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
        self._inflight: dict[tuple[str, str], asyncio.Task[TokenGrant | FlowStart]] = {}
        self._store_io = ThreadPoolExecutor(4, thread_name_prefix="connauth-store")
        self._holder = f"{socket.gethostname()[:32]}:{os.getpid()}"
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
        await self.idp.aclose()
        await self.federation.aclose()
        self._store_io.shutdown(wait=True)
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
        result = await self._stored_grant(user, spec, expected_email)
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
        return TokenGrant(
            connection=name,
            access_token=exchanged.access_token,
            expires_at=exchanged.expires_at,
            token_type=exchanged.token_type,
            identity=result.identity,
            warning=result.warning,
            extra={"info": spec.kernel_info(), "kind": "oauth"},
            grant=result.grant,
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

    async def _stored_grant(
        self, user: str, spec: ConnectionSpec, expected_email: str | None = None
    ) -> TokenGrant | FlowStart:
        """The stored grant, refreshed (single-flight) when it is due."""
        name = spec.name
        stored = await self._read(self.store.get_token, user, name)
        reason = await self._consent_reason(user, spec, stored)
        if reason is not None:
            return await self.flows.start(user, spec, reason, expected_email=expected_email)
        assert stored is not None and stored.record is not None
        record = stored.record
        if not self._due(record):
            return self._grant(spec, record)
        key = (user, name)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._refresh(user, spec, expected_email))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A store call (a database round trip, a write that may wait for a lock,
        decryption) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._store_io, functools.partial(fn, *args, **kwargs))

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """A store read: on the loop where reads are local (a SQLite read and its
        decryption take tens of microseconds, a thread hop more), else :meth:`_io`."""
        if self.store.reads_are_local:
            return fn(*args)
        return await self._io(fn, *args)

    def _due(self, record: TokenRecord) -> bool:
        """Due for refresh: within the leeway of its expiry, where the leeway is at most
        ``refresh_leeway_fraction`` of the token's lifetime (a 5-second token is not
        refreshed on every request)."""
        leeway = float(self.config.refresh_leeway)
        if record.expires_at is not None and record.expires_at > record.obtained_at:
            lifetime = record.expires_at - record.obtained_at
            leeway = min(leeway, float(self.config.refresh_leeway_fraction) * lifetime)
        return record.expires_within(leeway)

    @staticmethod
    def consent_reason(spec: ConnectionSpec, stored: StoredToken | None) -> str | None:
        """Why the user must consent again, or None when the stored grant is usable."""
        if stored is None:
            return "first_use"
        if stored.fingerprint != spec.fingerprint:
            return "scopes_changed"
        if stored.record is None:
            return stored.reason or "first_use"
        if stored.record.expires_within(0) and not stored.record.refresh_token:
            return "refresh_expired"
        return None

    async def _consent_reason(
        self, user: str, spec: ConnectionSpec, stored: StoredToken | None
    ) -> str | None:
        """:meth:`consent_reason`, dropping a stored token that can no longer be used."""
        reason = self.consent_reason(spec, stored)
        if reason in ("scopes_changed", "refresh_expired") and stored and stored.record:
            await self._io(self.store.drop_token, user, spec.name, reason)
        return reason

    def _grant(
        self, spec: ConnectionSpec, record: TokenRecord, warning: str | None = None
    ) -> TokenGrant:
        return TokenGrant(
            connection=spec.name,
            access_token=record.access_token,
            expires_at=record.expires_at,
            token_type=record.token_type,
            identity=record.display_identity,
            warning=warning,
            extra={
                "info": spec.kernel_info(),
                "kind": "oauth",
                "email": record.identity.get("email"),
                "claims": record.identity,  # the JWT subject's source; never sent
                "id_token": record.id_token,  # a federation subject; never sent
            },
            grant=record.grant_id,
        )

    async def _refresh(
        self, user: str, spec: ConnectionSpec, expected_email: str | None
    ) -> TokenGrant | FlowStart:
        """Refresh once across every process sharing the store (two servers, a server
        and an in-kernel broker, hub replicas): the one that takes the row's lease asks
        the IdP, the others poll the row until the new token is stored (as waiters in
        this process wait for the task), handing out the current token if it is still
        valid once an IdP timeout has passed (the holder is slow or gone). No database
        connection is held meanwhile."""
        holder = f"{self._holder}:{secrets.token_hex(4)}"
        poll, waiting_since = LEASE_POLL, time.monotonic()
        while True:
            stored = await self._read(self.store.get_token, user, spec.name)
            reason = await self._consent_reason(user, spec, stored)
            if reason is not None:
                return await self.flows.start(user, spec, reason, expected_email=expected_email)
            assert stored is not None and stored.record is not None
            old = stored.record
            if not self._due(old) or not old.refresh_token:
                return self._grant(spec, old)  # refreshed meanwhile, or no way to renew
            now = time.time()
            if stored.lease_until is not None and stored.lease_until > now:
                waited = time.monotonic() - waiting_since
                if waited > float(self.config.http_timeout) and not old.expires_within(0):
                    return self._grant(spec, old)
                await asyncio.sleep(poll)
                poll = min(2 * poll, LEASE_POLL_MAX)
                continue
            until = now + 3 * float(self.config.http_timeout) + LEASE_SLACK
            args = (user, spec.name, stored.version, holder, until)
            if not await self._io(self.store.take_lease, *args):
                continue  # another process took it, or the row changed: read again
            try:
                result = await self._refresh_locked(user, spec, stored, expected_email)
            finally:
                await self._io(self.store.release_lease, user, spec.name, holder)
            if result is not None:
                return result

    async def _refresh_locked(
        self, user: str, spec: ConnectionSpec, stored: StoredToken, expected_email: str | None
    ) -> TokenGrant | FlowStart | None:
        """The IdP round trip, under the row's lease. None: the row changed meanwhile
        (another process stored a token or dropped it); the caller reads it again."""
        old = stored.record
        assert old is not None and old.refresh_token is not None
        scope = list(old.scope) if old.scope else list(self.flows.requested_scopes(spec))
        extra = {"resource": spec.consent_resource} if spec.consent_resource else {}
        try:
            resp = await self.idp.refresh(refresh_token=old.refresh_token, scope=scope, extra=extra)
        except OAuthProtocolError as e:
            if e.error == "invalid_grant":
                why = "refresh_expired" if "expir" in (e.description or "") else "grant_revoked"
                # Compare-and-drop: only the token whose refresh token was refused.
                drop = self.store.drop_token
                if not await self._io(drop, user, spec.name, why, expect_version=stored.version):
                    log.info(
                        "jupyter-connauth: %s for %s of user %s, but another process has "
                        "stored a new token meanwhile: using that one",
                        e.error,
                        spec.name,
                        user,
                    )
                    return None
                log.info(
                    "jupyter-connauth: %s for %s of user %s: consent needed",
                    e.error,
                    spec.name,
                    user,
                )
                return await self.flows.start(user, spec, why, expected_email=expected_email)
            fix = fix_for(e.error, e.description, redirect_uri=self.redirect_uri)
            return self._refresh_failed(
                spec,
                old,
                ConnAuthError(
                    f"The IdP refused to refresh the token for {spec.name!r} ({e.error}).",
                    fix or "check the IdP app's configuration",
                    code=e.error if e.error.isidentifier() else "idp_error",
                ),
            )
        except IdPUnavailable as e:
            return self._refresh_failed(spec, old, e)
        id_token = (resp.id_token or old.id_token) if spec.federated else None
        record = dataclasses.replace(
            old,
            access_token=resp.access_token,
            expires_at=grant_expiry(spec, resp.expires_at, id_token),
            id_token=id_token,
            refresh_token=resp.refresh_token or old.refresh_token,
            token_type=resp.token_type,
            scope=resp.scope or old.scope,
            obtained_at=time.time(),
        )
        put = self.store.put_token
        args = (user, spec.name, spec.fingerprint, record)
        if not await self._io(put, *args, expect_version=stored.version):
            log.info(
                "jupyter-connauth: the token of %s for user %s changed during its refresh; "
                "using the stored one",
                spec.name,
                user,
            )
            return None
        log.debug("jupyter-connauth: refreshed %s for user %s", spec.name, user)
        return self._grant(spec, record)

    def _refresh_failed(
        self, spec: ConnectionSpec, old: TokenRecord, err: ConnAuthError
    ) -> TokenGrant:
        """Keep the stored token. Hand it out while it is still valid, else raise."""
        log.warning("jupyter-connauth: refresh of %s failed: %s", spec.name, err.message)
        if not old.expires_within(0):
            return self._grant(
                spec, old, warning=f"{err.message} Using the current token until it expires."
            )
        raise err

    async def authorize(
        self,
        user: str,
        name: str,
        reason: str = "user_request",
        *,
        expected_email: str | None = None,
        switch_account: bool = False,
    ) -> FlowStart:
        self._check_config()
        spec = self.connection(name)
        return await self.flows.start(
            user, spec, reason, expected_email=expected_email, switch_account=switch_account
        )

    # -- what the HTTP handlers call, with the host's principal ----------------------
    async def token_for(self, who: Principal, name: str) -> TokenGrant | FlowStart:
        """:meth:`token` for a principal: its email, when the host knows one, binds
        every consent flow this starts (the refresh and pass-through paths included)."""
        return await self.token(who.name, name, expected_email=who.email)

    def status_for(self, who: Principal, name: str) -> dict[str, Any]:
        return self.status(who.name, name)

    async def authorize_for(
        self, who: Principal, name: str, *, switch_account: bool = False
    ) -> FlowStart:
        """A consent flow the user asked for; ``switch_account`` lets it store a grant
        of another IdP account than the current one's."""
        return await self.authorize(
            who.name, name, expected_email=who.email, switch_account=switch_account
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
        reason = self.consent_reason(spec, stored)
        if reason is not None:
            out.update(
                status="consent_required",
                reason=reason,
                reason_text=REASON_TEXT.get(reason, reason),
            )
            return out
        assert stored is not None and stored.record is not None
        rec = stored.record
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
