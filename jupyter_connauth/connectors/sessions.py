"""Warehouse driver sessions, for the kernel's runner and the server's Test and browse.

One :class:`SessionManager` keeps a driver connection per (user, connection) and
applies the rules both places need:

- **The grant is checked on every call.** The caller asks the broker for the
  credential first (a :class:`Lease`); a session opened under another grant (revoked,
  re-authorized, possibly as another account, scopes edited), with other connection
  info, or whose credential is about to expire and has been replaced, is closed and
  reopened before anything runs.
- **Single flight, one thread per driver connection.** Each key has a lock held while
  the session is opened and while a call runs on it: concurrent calls of one user and
  connection open one session and take turns on it (drivers are not thread-safe).
- **At most once.** A call is retried (with a reconnect) only when it provably did not
  run: the login failed, or the warehouse said it no longer knows the session. Once
  a statement is submitted an error is reported, never retried; when the warehouse
  rejected the credential the session is dropped so the next call reconnects.
- **Forget on unreachable**: a session whose warehouse is gone is forgotten without a
  close call (which would retry the dead host).
- **Eviction**: sessions idle longer than ``idle_timeout`` and the least recently used
  ones beyond ``max_sessions`` are closed.

No Jupyter imports: the kernel and the server both use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..core.errors import ConnAuthError
from . import get_connector
from .base import ConnectionInfo, Connector, Credential

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Reconnect with the broker's newer credential when the session's has less left.
REUSE_MARGIN = 60.0
#: The error code of a warehouse that cannot be reached (its sessions are gone).
UNREACHABLE = "warehouse_unreachable"

#: ``op(connector, driver_connection)``: the call to run on a session.
Op = Callable[[Connector, Any], T]
#: Runs a close call somewhere (the caller's thread, or a worker pool).
Closer = Callable[[Callable[[], None]], object]


@dataclass(frozen=True)
class Lease:
    """What the broker answered for this call: where to connect, with what, under
    which grant."""

    info: ConnectionInfo
    credential: Credential
    grant: str | None


def test_sql(connector: str) -> str:
    """The statement of a connection test (Snowflake folds unquoted names to upper case)."""
    return "SELECT 1 AS OK" if connector == "snowflake" else "SELECT 1 AS ok"


@dataclass
class _Session:
    lease: Lease
    connector: Connector
    conn: Any

    def serves(self, lease: Lease, now: float) -> bool:
        mine = self.lease
        if mine.grant != lease.grant or mine.info != lease.info:
            return False
        if mine.credential.token == lease.credential.token:
            return True
        exp = mine.credential.expires_at
        return exp is None or exp - REUSE_MARGIN > now


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    session: _Session | None = None
    last_used: float = field(default_factory=time.monotonic)


def _close(session: _Session) -> None:
    session.connector.close(session.conn)


class SessionManager:
    def __init__(
        self,
        *,
        idle_timeout: float | None = None,
        max_sessions: int = 64,
        closer: Closer | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._closer: Closer = closer or (lambda f: f())
        self._slots: dict[Hashable, _Slot] = {}
        self._lock = threading.Lock()

    # -- bookkeeping -----------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return sum(1 for s in self._slots.values() if s.session is not None)

    def _slot(self, key: Hashable) -> _Slot:
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            slot.last_used = time.monotonic()
            return slot

    def _retire(self, slot: _Slot) -> None:
        """Close the slot's session once no call runs on it (never blocks the caller)."""

        def close() -> None:
            with slot.lock:
                session, slot.session = slot.session, None
            if session is not None:
                _close(session)

        self._closer(close)

    def drop(self, key: Hashable) -> None:
        """Close the session of ``key`` (revoked, re-authorized, consent required).
        Not from inside ``op`` or ``refetch`` with the inline closer: the close waits
        for the call to finish."""
        with self._lock:
            slot = self._slots.pop(key, None)
        if slot is not None:
            self._retire(slot)

    def drop_where(self, match: Callable[[Hashable], bool]) -> None:
        with self._lock:
            keys = [k for k in self._slots if match(k)]
            slots = [self._slots.pop(k) for k in keys]
        for slot in slots:
            self._retire(slot)

    def close(self) -> None:
        self.drop_where(lambda _k: True)

    def evict(self) -> int:
        """Close sessions idle past ``idle_timeout`` and the least recently used beyond
        ``max_sessions``; a session in use is left alone. Returns how many went."""
        now = time.monotonic()
        with self._lock:
            items = sorted(self._slots.items(), key=lambda kv: kv[1].last_used)
            idle = self.idle_timeout
            victims = [k for k, s in items if idle is not None and now - s.last_used > idle]
            extra = len(items) - len(victims) - self.max_sessions
            if extra > 0:
                victims += [k for k, _s in items if k not in victims][:extra]
            gone = []
            for key in victims:
                slot = self._slots[key]
                if slot.lock.locked():
                    continue  # in use right now: not idle
                gone.append(self._slots.pop(key))
        for slot in gone:
            self._retire(slot)
        if gone:
            log.debug("jupyter-connauth: evicted %d warehouse session(s)", len(gone))
        return len(gone)

    # -- running -----------------------------------------------------------------------
    def run(
        self,
        key: Hashable,
        lease: Lease,
        op: Op[T],
        *,
        refetch: Callable[[], Lease | None] | None = None,
    ) -> T:
        """Run ``op`` on the session of ``key`` for ``lease`` (opened or reopened as
        needed). Known driver errors come back as :class:`ConnAuthError` with the fix."""
        self.evict()
        slot = self._locked_slot(key)
        try:
            session = self._current(slot, lease)
            for attempt in (1, 2):
                try:
                    return op(session.connector, session.conn)
                except Exception as e:
                    slot.session = None
                    if attempt == 2 or not session.connector.session_gone(e):
                        known = self._after_submit(slot, session, e)
                        if known is None:
                            raise
                        raise known from None
                # The warehouse no longer knows the session: nothing ran. Reconnect once.
                log.info("jupyter-connauth: %s session gone; reconnecting", lease.info.name)
                session = self._open(slot, lease, refetch)
            raise AssertionError("unreachable")
        finally:
            slot.last_used = time.monotonic()
            slot.lock.release()

    def _locked_slot(self, key: Hashable) -> _Slot:
        """The slot of ``key``, locked, and still the registered one (not evicted or
        dropped meanwhile, which would leave a session nobody closes)."""
        while True:
            slot = self._slot(key)
            slot.lock.acquire()
            with self._lock:
                if self._slots.get(key) is slot:
                    return slot
            slot.lock.release()

    def _current(self, slot: _Slot, lease: Lease) -> _Session:
        """The slot's session when it serves ``lease``, else a new one (lock held)."""
        session = slot.session
        if session is not None and session.serves(lease, time.time()):
            if session.lease.credential.token != lease.credential.token:
                session.lease = lease  # same grant, newer token: keep the session
            return session
        if session is not None:
            slot.session = None
            _close(session)
        return self._open(slot, lease, None)

    def _open(
        self, slot: _Slot, lease: Lease, refetch: Callable[[], Lease | None] | None
    ) -> _Session:
        connector = get_connector(lease.info.connector)
        for attempt in (1, 2):
            try:
                conn = connector.connect(lease.info, lease.credential)
            except ConnAuthError:
                raise
            except Exception as e:
                # Rejected at login: nothing ran. Once, with what the broker now has.
                if attempt == 1 and refetch is not None and connector.is_auth_error(e):
                    newer = refetch()
                    if newer is not None:
                        lease = newer
                        connector = get_connector(lease.info.connector)
                        continue
                raise _known(connector, e, lease.info) from None
            slot.session = _Session(lease, connector, conn)
            return slot.session
        raise AssertionError("unreachable")

    @staticmethod
    def _after_submit(slot: _Slot, session: _Session, exc: Exception) -> ConnAuthError | None:
        """The error of a call that may have run (the slot's session already unset);
        None for an unknown error (raised as it is)."""
        connector, info = session.connector, session.lease.info
        known = connector.translate_error(exc, info)
        if known is not None and known.code == UNREACHABLE:
            return known  # the session died with the warehouse: forget it, no close call
        if connector.is_auth_error(exc):
            _close(session)  # the next call reconnects with what the broker has then
            err = known or ConnAuthError(
                f"The warehouse rejected the credential of {info.name!r}.",
                None,
                code="token_rejected",
            )
            note = (
                "the statement had been sent and was not run again: check whether it "
                "took effect before you run it again"
            )
            err.fix = f"{err.fix}; {note}" if err.fix else note
            return err
        slot.session = session  # an ordinary failure (SQL error, too many rows): keep it
        return known


def _known(connector: Connector, exc: Exception, info: ConnectionInfo) -> Exception:
    known = connector.translate_error(exc, info)
    return known if known is not None else exc
