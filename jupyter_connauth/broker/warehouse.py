"""Warehouse calls made by the broker itself: the sidebar's Test and browse tree.

The same connectors and the same :class:`SessionManager` as in kernels, run on worker
threads (drivers block): one driver session per (user, connection), opened once for
concurrent calls, used by one thread at a time, reopened when the grant changes,
closed after ``warehouse_session_idle_timeout`` and beyond ``warehouse_session_max``.
Every call asks ``token(user, name)`` first: ``Broker.token`` by default; the hub
service passes its own (``HubBroker.token_for`` with the hub's identity of the user).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from ..connectors import get_connector
from ..connectors.base import ConnectionInfo, Connector, Credential
from ..connectors.sessions import Lease, SessionManager, rejection_report, test_sql
from ..core.errors import ConnAuthError
from .broker import Broker
from .flows import FlowStart
from .grants import TokenGrant
from .rejection import Rejection

#: How long a driver's thread waits for the broker's answer when it renews a credential
#: (the broker's own IdP calls time out sooner).
REFETCH_TIMEOUT = 60.0

TokenSource = Callable[[str, str], Awaitable[TokenGrant | FlowStart]]


def lease_of(grant: TokenGrant) -> Lease:
    info = ConnectionInfo.from_json(grant.extra["info"])
    kind: Literal["oauth", "jwt"] = "jwt" if grant.extra.get("kind") == "jwt" else "oauth"
    cred = Credential(grant.access_token, grant.expires_at, kind, grant.identity)
    return Lease(info, cred, grant.grant)


class WarehouseCalls:
    def __init__(
        self, broker: Broker, max_workers: int = 4, *, token: TokenSource | None = None
    ) -> None:
        self.broker = broker
        self.token: TokenSource = token or broker.token
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="connauth-wh")
        config = broker.config
        self.sessions = SessionManager(
            idle_timeout=float(config.warehouse_session_idle_timeout),
            max_sessions=int(config.warehouse_session_max),
            closer=self._pool.submit,
        )
        self._sweeper: asyncio.Task[None] | None = None

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.sessions.close()
        self._pool.shutdown(wait=False)

    def forget(self, user: str, name: str) -> None:
        self.sessions.drop((user, name))

    def forget_connection(self, name: str) -> None:
        """Every user's session of ``name`` (revoked for all, edited or deleted)."""
        self.sessions.drop_where(lambda key: isinstance(key, tuple) and key[1] == name)

    def _sweep_idle(self) -> None:
        """Close idle sessions in the background, not only when the next call comes."""
        if self._sweeper is not None or self.sessions.idle_timeout is None:
            return
        period = max(0.1, min(60.0, self.sessions.idle_timeout / 2))

        async def sweep() -> None:
            while True:
                await asyncio.sleep(period)
                self.sessions.evict()

        self._sweeper = asyncio.ensure_future(sweep())

    @staticmethod
    def _translate(connector: Connector, exc: Exception, info: ConnectionInfo) -> ConnAuthError:
        known = connector.translate_error(exc, info)
        if known is not None:
            known.status = 502 if known.status >= 500 else known.status
            return known
        return ConnAuthError(
            f"The {info.connector} driver failed: {type(exc).__name__}: {str(exc)[:300]}",
            None,
            code="warehouse_error",
        )

    async def _lease(self, user: str, name: str) -> Lease | FlowStart:
        grant = await self.token(user, name)
        if isinstance(grant, FlowStart):
            self.forget(user, name)  # consent required: nothing runs on the old session
            return grant
        return lease_of(grant)

    async def call(self, user: str, name: str, what: str, *args: Any) -> Any:
        """Run a connector method; a FlowStart when consent is needed first."""
        self._sweep_idle()
        lease = await self._lease(user, name)
        if isinstance(lease, FlowStart):
            return lease
        loop = asyncio.get_running_loop()

        def refetch() -> Lease | None:  # on a worker thread: ask the loop
            if loop.is_closed() or not loop.is_running():
                return None  # shutting down: the driver keeps the credential it has
            ask = asyncio.run_coroutine_threadsafe(self._lease(user, name), loop)
            again = ask.result(timeout=REFETCH_TIMEOUT)
            return None if isinstance(again, FlowStart) else again

        def op(connector: Connector, conn: Any) -> Any:
            return getattr(connector, what)(conn, *args)

        def rejected(seen: Lease, err: Exception, retry: bool) -> Lease | None:
            if not seen.grant:
                return refetch() if retry else None
            report = Rejection.from_json(rejection_report(seen, err))
            again = asyncio.run_coroutine_threadsafe(
                self.broker.rejected(user, name, report), loop
            ).result()  # one forced refresh, then the grant marked rejected
            return lease_of(again) if retry and isinstance(again, TokenGrant) else None

        key: Hashable = (user, name)
        run = self.sessions.run
        try:
            return await loop.run_in_executor(
                self._pool, lambda: run(key, lease, op, refetch=refetch, rejected=rejected)
            )
        except ConnAuthError as e:
            e.status = 502 if e.status >= 500 else e.status
            raise
        except Exception as e:  # an unknown driver error: its type and text, no traceback
            raise self._translate(get_connector(lease.info.connector), e, lease.info) from None

    async def test(self, user: str, name: str) -> dict[str, Any] | FlowStart:
        spec = self.broker.connection(name)
        started = time.perf_counter()
        result = await self.call(user, name, "query_arrow", test_sql(spec.connector))
        if isinstance(result, FlowStart):
            return result
        who = await self.call(user, name, "whoami")
        return {
            "status": "ok",
            "connection": name,
            "elapsed": round(time.perf_counter() - started, 3),
            "whoami": who,
        }

    async def browse(self, user: str, name: str, path: list[str]) -> list[Any] | FlowStart:
        if len(path) > 3:
            bad = ConnAuthError(
                "A browse path has at most catalog/schema/table.",
                "browse with path=CATALOG/SCHEMA/TABLE or shorter",
                code="bad_path",
            )
            bad.status = 400  # the client's input, not a server failure
            raise bad
        what = ("list_catalogs", "list_schemas", "list_tables", "list_columns")[len(path)]
        result: list[Any] | FlowStart = await self.call(user, name, what, *path)
        return result
