"""The stored grant of a user and connection, refreshed once when it is due.

A refresh is single-flight per (user, connection) within a process (one task that
every caller awaits) and across every process sharing the store (the row's lease,
see :meth:`Refresher._refresh`), so rotating refresh tokens never race. Store calls
that may block run on a small thread pool, off the event loop.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..core.connections import ConnectionSpec
from ..core.errors import ConnAuthError, IdPUnavailable
from ..core.tokens import StoredToken, TokenRecord
from ..oauth.client import IdPClient
from ..oauth.rfc6749 import InvalidGrantError, OAuthProtocolError
from .config import ConnAuth
from .federation import grant_expiry
from .fixes import error_code, fix_for
from .flows import ConsentFlows, FlowStart
from .grants import TokenGrant, consent_reason, rejection_refusal, stored_grant
from .store import TokenStore

log = logging.getLogger(__name__)

LEASE_POLL, LEASE_POLL_MAX = 0.05, 0.5  # seconds between looks at another's refresh
LEASE_SLACK = 5.0  # a refresh lease lasts 3 IdP timeouts and this
T = TypeVar("T")


class Refresher:
    """The only refresher of the tokens in ``store`` within this process."""

    def __init__(
        self, config: ConnAuth, store: TokenStore, idp: IdPClient, flows: ConsentFlows
    ) -> None:
        self.config = config
        self.store = store
        self.idp = idp
        self.flows = flows
        self._inflight: dict[tuple[str, str], asyncio.Task[TokenGrant | FlowStart]] = {}
        self._store_io = ThreadPoolExecutor(4, thread_name_prefix="connauth-store")
        self._holder = f"{socket.gethostname()[:32]}:{os.getpid()}"

    def close(self) -> None:
        self._store_io.shutdown(wait=True)

    async def io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A store call (a database round trip, a write that may wait for a lock,
        decryption) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._store_io, functools.partial(fn, *args, **kwargs))

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """A store read: on the loop where reads are local (a SQLite read and its
        decryption take tens of microseconds, a thread hop more), else :meth:`io`."""
        if self.store.reads_are_local:
            return fn(*args)
        return await self.io(fn, *args)

    def due(self, record: TokenRecord) -> bool:
        """Due for refresh: within the leeway of its expiry, where the leeway is at most
        ``refresh_leeway_fraction`` of the token's lifetime (a 5-second token is not
        refreshed on every request)."""
        leeway = float(self.config.refresh_leeway)
        if record.expires_at is not None and record.expires_at > record.obtained_at:
            lifetime = record.expires_at - record.obtained_at
            leeway = min(leeway, float(self.config.refresh_leeway_fraction) * lifetime)
        return record.expires_within(leeway)

    async def consent_reason(
        self, user: str, spec: ConnectionSpec, stored: StoredToken | None
    ) -> str | None:
        """:func:`.grants.consent_reason`, dropping a stored token that can no longer
        be used."""
        reason = consent_reason(spec, stored)
        if reason in ("scopes_changed", "refresh_expired") and stored and stored.record:
            await self.io(self.store.drop_token, user, spec.name, reason)
        return reason

    async def grant(
        self, user: str, spec: ConnectionSpec, expected_email: str | None = None
    ) -> TokenGrant | FlowStart:
        """The stored grant, refreshed (single-flight) when it is due, or a consent flow."""
        name = spec.name
        stored = await self.read(self.store.get_token, user, name)
        reason = await self.consent_reason(user, spec, stored)
        if reason is not None:
            return await self.flows.start(user, spec, reason, expected_email=expected_email)
        assert stored is not None and stored.record is not None
        record = stored.record
        if (refused := rejection_refusal(spec, record)) is not None:
            raise refused  # the warehouse's admin fix: consent would not help
        if not self.due(record):
            return stored_grant(spec, record)
        return await self.single_flight(user, spec, expected_email)

    async def single_flight(
        self,
        user: str,
        spec: ConnectionSpec,
        expected_email: str | None,
        force: float | None = None,
    ) -> TokenGrant | FlowStart:
        """The one refresh under way for (user, connection), or a new one."""
        key = (user, spec.name)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._refresh(user, spec, expected_email, force))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _refresh(
        self,
        user: str,
        spec: ConnectionSpec,
        expected_email: str | None,
        force: float | None = None,
    ) -> TokenGrant | FlowStart:
        """Refresh once across every process sharing the store (two servers, a server
        and an in-kernel broker, hub replicas): the one that takes the row's lease asks
        the IdP, the others poll the row until the new token is stored (as waiters in
        this process wait for the task), handing out the current token if it is still
        valid once an IdP timeout has passed (the holder is slow or gone). No database
        connection is held meanwhile. ``force``: the ``expires_at`` of a token a
        warehouse rejected; refreshed even though not due while it is the stored one
        (see :mod:`.rejection`)."""
        holder = f"{self._holder}:{secrets.token_hex(4)}"
        poll, waiting_since = LEASE_POLL, time.monotonic()
        while True:
            stored = await self.read(self.store.get_token, user, spec.name)
            reason = await self.consent_reason(user, spec, stored)
            if reason is not None:
                return await self.flows.start(user, spec, reason, expected_email=expected_email)
            assert stored is not None and stored.record is not None
            old = stored.record
            forced = force is not None and old.expires_at == force and old.rejection is None
            if not (self.due(old) or forced) or not old.refresh_token:
                return stored_grant(spec, old)  # refreshed meanwhile, or no way to renew
            now = time.time()
            if stored.lease_until is not None and stored.lease_until > now:
                waited = time.monotonic() - waiting_since
                if waited > float(self.config.http_timeout) and not old.expires_within(0):
                    return stored_grant(spec, old)
                await asyncio.sleep(poll)
                poll = min(2 * poll, LEASE_POLL_MAX)
                continue
            until = now + 3 * float(self.config.http_timeout) + LEASE_SLACK
            args = (user, spec.name, stored.version, holder, until)
            if not await self.io(self.store.take_lease, *args):
                continue  # another process took it, or the row changed: read again
            try:
                mark = {"state": "refreshed"} if forced else None
                result = await self._refresh_locked(user, spec, stored, expected_email, mark)
            finally:
                await self.io(self.store.release_lease, user, spec.name, holder)
            if result is not None:
                return result

    async def _refresh_locked(
        self,
        user: str,
        spec: ConnectionSpec,
        stored: StoredToken,
        expected_email: str | None,
        mark: dict[str, Any] | None = None,
    ) -> TokenGrant | FlowStart | None:
        """The IdP round trip, under the row's lease. None: the row changed meanwhile
        (another process stored a token or dropped it); the caller reads it again."""
        old = stored.record
        assert old is not None and old.refresh_token is not None
        scope: list[str] | None = None
        if self.idp.flavour.refresh_scope:
            scope = list(old.scope) if old.scope else list(self.flows.requested_scopes(spec))
        extra = self.idp.flavour.refresh_params()
        if spec.consent_resource:
            extra["resource"] = spec.consent_resource
        try:
            resp = await self.idp.refresh(refresh_token=old.refresh_token, scope=scope, extra=extra)
        except OAuthProtocolError as e:
            return await self._refused(user, spec, stored, expected_email, e)
        except IdPUnavailable as e:
            return self._failed(spec, old, e)
        id_token = (resp.id_token or old.id_token) if spec.federated else None
        record = dataclasses.replace(
            old,
            access_token=resp.access_token,
            expires_at=grant_expiry(spec, resp.expires_at, id_token),
            id_token=id_token,
            refresh_token=resp.refresh_token or old.refresh_token,
            # a new refresh token brings its own expiry (or none); the old one keeps its
            refresh_expires_at=resp.refresh_expires_at
            if resp.refresh_token
            else old.refresh_expires_at,
            token_type=resp.token_type,
            scope=resp.scope or old.scope,
            obtained_at=time.time(),
            rejection=mark,
        )
        put = self.store.put_token
        args = (user, spec.name, spec.fingerprint, record)
        if not await self.io(put, *args, expect_version=stored.version):
            log.info(
                "jupyter-connauth: the token of %s for user %s changed during its refresh; "
                "using the stored one",
                spec.name,
                user,
            )
            return None
        log.debug("jupyter-connauth: refreshed %s for user %s", spec.name, user)
        return stored_grant(spec, record)

    async def _refused(
        self,
        user: str,
        spec: ConnectionSpec,
        stored: StoredToken,
        expected_email: str | None,
        e: OAuthProtocolError,
    ) -> TokenGrant | FlowStart | None:
        """The IdP refused the refresh: a claims challenge or a dead grant start a
        consent; other errors keep the stored token (:meth:`_failed`)."""
        old = stored.record
        assert old is not None
        if e.claims is not None:
            # Conditional Access: a consent that passes the claims (never one without,
            # which would be challenged again). The stored token stays until it completes.
            log.info(
                "jupyter-connauth: %s with a claims challenge for %s of user %s: consent "
                "with the claims",
                e.error,
                spec.name,
                user,
            )
            self.flows.challenge(user, spec.name, e.claims)
            return await self.flows.start(
                user, spec, "claims_challenge", expected_email=expected_email
            )
        if isinstance(e, InvalidGrantError):
            why = "refresh_expired" if "expir" in (e.description or "") else "grant_revoked"
            # Compare-and-drop: only the token whose refresh token was refused.
            drop = self.store.drop_token
            if not await self.io(drop, user, spec.name, why, expect_version=stored.version):
                log.info(
                    "jupyter-connauth: %s for %s of user %s, but another process has "
                    "stored a new token meanwhile: using that one",
                    e.error,
                    spec.name,
                    user,
                )
                return None
            log.info(
                "jupyter-connauth: %s for %s of user %s: consent needed", e.error, spec.name, user
            )
            return await self.flows.start(user, spec, why, expected_email=expected_email)
        fix = fix_for(e.error, e.description, redirect_uri=self.flows.redirect_uri)
        return self._failed(
            spec,
            old,
            ConnAuthError(
                f"The IdP refused to refresh the token for {spec.name!r} ({e.error}).",
                fix or "check the IdP app's configuration",
                code=error_code(e.error),
            ),
        )

    @staticmethod
    def _failed(spec: ConnectionSpec, old: TokenRecord, err: ConnAuthError) -> TokenGrant:
        """Keep the stored token. Hand it out while it is still valid, else raise."""
        log.warning("jupyter-connauth: refresh of %s failed: %s", spec.name, err.message)
        if not old.expires_within(0):
            return stored_grant(
                spec, old, warning=f"{err.message} Using the current token until it expires."
            )
        raise err
