"""Warehouse calls made by the broker itself: the sidebar's Test and browse tree.

The same connectors as in kernels, run on worker threads (drivers block), with one
driver session per (user, connection) reused while its credential is valid. The
credential comes from ``token(user, name)``: ``Broker.token`` by default; the hub
service passes its own (``HubBroker.token_for`` with the hub's identity of the user).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from ..connectors import get_connector
from ..connectors.base import ConnectionInfo, Connector, Credential
from ..core.errors import ConnAuthError
from .broker import Broker, TokenGrant
from .flows import FlowStart

REUSE_MARGIN = 60.0
_TEST_SQL = {"snowflake": "SELECT 1 AS OK"}

TokenSource = Callable[[str, str], Awaitable[TokenGrant | FlowStart]]


@dataclass
class _Session:
    connector: Connector
    info: ConnectionInfo
    conn: Any
    credential: Credential


class WarehouseCalls:
    def __init__(
        self, broker: Broker, max_workers: int = 4, *, token: TokenSource | None = None
    ) -> None:
        self.broker = broker
        self.token: TokenSource = token or broker.token
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="connauth-wh")
        self._sessions: dict[tuple[str, str], _Session] = {}

    def close(self) -> None:
        for session in self._sessions.values():
            session.connector.close(session.conn)
        self._sessions.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def forget(self, user: str, name: str) -> None:
        session = self._sessions.pop((user, name), None)
        if session is not None:
            self._pool.submit(session.connector.close, session.conn)

    def forget_connection(self, name: str) -> None:
        """Every user's session of ``name`` (revoked for all, edited or deleted)."""
        for user, conn_name in list(self._sessions):
            if conn_name == name:
                self.forget(user, conn_name)

    async def _session(self, user: str, name: str) -> _Session | FlowStart:
        key = (user, name)
        current = self._sessions.get(key)
        exp = current.credential.expires_at if current else None
        if current is not None and (exp is None or exp - REUSE_MARGIN > time.time()):
            return current
        grant = await self.token(user, name)
        if isinstance(grant, FlowStart):
            return grant
        return await self._open(key, grant, current)

    async def _open(
        self, key: tuple[str, str], grant: TokenGrant, current: _Session | None
    ) -> _Session:
        info = ConnectionInfo.from_json(grant.extra["info"])
        kind: Literal["oauth", "jwt"] = "jwt" if grant.extra.get("kind") == "jwt" else "oauth"
        cred = Credential(grant.access_token, grant.expires_at, kind, grant.identity)
        if current is not None:
            self.forget(*key)
        connector = get_connector(info.connector)
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(self._pool, connector.connect, info, cred)
        except ConnAuthError:
            raise
        except Exception as e:
            raise self._translate(connector, e, info) from None
        session = _Session(connector, info, conn, cred)
        self._sessions[key] = session
        return session

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

    async def call(self, user: str, name: str, what: str, *args: Any) -> Any:
        """Run a connector method; a FlowStart when consent is needed first."""
        key = (user, name)
        for attempt in (1, 2):
            session = await self._session(user, name)
            if isinstance(session, FlowStart):
                return session
            method = getattr(session.connector, what)
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._pool, method, session.conn, *args)
            except ConnAuthError:
                raise
            except Exception as e:
                if attempt == 1 and session.connector.is_auth_error(e):
                    self.forget(user, name)
                    continue
                err = self._translate(session.connector, e, session.info)
                if err.code == "warehouse_unreachable" and self._sessions.get(key) is session:
                    # the session died with the warehouse: reconnect next time (no close
                    # call, which would retry the unreachable host)
                    del self._sessions[key]
                raise err from None
        raise AssertionError("unreachable")

    async def test(self, user: str, name: str) -> dict[str, Any] | FlowStart:
        spec = self.broker.connection(name)
        started = time.perf_counter()
        sql = _TEST_SQL.get(spec.connector, "SELECT 1 AS ok")
        result = await self.call(user, name, "query_arrow", sql)
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
