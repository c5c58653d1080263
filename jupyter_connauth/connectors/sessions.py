"""Warehouse driver sessions, for the kernel's runner and the server's Test and browse.

One :class:`SessionManager` keeps a driver connection per (user, connection) and
applies the rules both places need:

- **The grant is checked on every call.** The caller asks the broker for the
  credential first (a :class:`Lease`); a session opened under another grant (revoked,
  re-authorized, possibly as another account, scopes edited) or with other connection
  info is closed and reopened before anything runs.
- **A session outlives its token.** A newer token of the same grant keeps the session;
  the driver asks the session's :class:`Renewer` for a token whenever it needs one
  (Databricks per request, BigQuery when google-auth finds it about to expire), and it
  asks the broker only when the last one is about to expire. Snowflake sessions live on
  Snowflake's own session and master tokens after login and are reopened only when
  Snowflake says they expired (390112/390114): no reconnect on a timer.
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
from .base import ConnectionInfo, Connector, Credential, Renew

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R", bound=Renew)

#: A driver's token is renewed this long before it expires: a quarter of its lifetime,
#: between RENEW_MIN (clock skew, ``exp`` in whole seconds) and RENEW_LEEWAY; less than
#: the broker's refresh leeway (60 s, half the lifetime), so the broker then hands out a
#: token it has refreshed.
RENEW_LEEWAY = 30.0
RENEW_FRACTION = 0.25
RENEW_MIN = 1.5
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


#: ``rejected(lease, error, retry)``: the warehouse rejected the lease's credential; the
#: caller reports it to the broker and, when ``retry`` (a login: nothing ran), answers
#: what to retry with once (None: nothing).
Rejected = Callable[[Lease, Exception, bool], Lease | None]


#: Translated warehouse errors whose fix is the admin's (the warehouse does not trust
#: the IdP's tokens at all, e.g. Snowflake 390303 issuer mismatch): a new consent would
#: not help (broker/rejection.py).
ADMIN_FIX_CODES = frozenset(
    {"snowflake_invalid_token", "snowflake_oauth_not_enabled", "snowflake_role_not_in_token"}
)


def rejection_report(lease: Lease, err: Exception) -> dict[str, Any]:
    """The body of ``POST connections/NAME/rejected`` for a rejected lease (no secret:
    translated errors' texts, else the error's type)."""
    return {
        "grant": lease.grant,
        "expires_at": lease.credential.expires_at,
        "message": getattr(err, "message", type(err).__name__),
        "fix": getattr(err, "fix", None),
        "admin_fix": getattr(err, "code", None) in ADMIN_FIX_CODES,
    }


def test_sql(connector: str) -> str:
    """The statement of a connection test (Snowflake folds unquoted names to upper case)."""
    return "SELECT 1 AS OK" if connector == "snowflake" else "SELECT 1 AS ok"


class Renewer:
    """The credential a session's driver sends, asked for on the driver's threads.

    Answers the session's newest credential (the manager replaces it when a call brings a
    newer one of the same grant); when that is about to expire, asks the broker through
    ``fetch`` (single flight, under a lock of its own, never the session's: the call
    that holds the session's lock is what the driver is serving). A broker that cannot
    renew (consent needed, another grant, down) leaves the last credential in place: the
    warehouse rejects it and the call reports that with its fix. No token is logged."""

    def __init__(self, lease: Lease, fetch: Callable[[], Lease | None] | None) -> None:
        self.lease = lease
        self._fetch = fetch
        self._lock = threading.Lock()
        self._seen = (lease.credential.token, time.time())
        self.renewals = 0

    def update(self, lease: Lease) -> None:
        """A call brought a newer credential of the same grant."""
        self.lease = lease

    def freeze(self) -> None:
        """Ask the broker no more (the session is closing: its last requests, such as
        the driver's close call, go with the credential it has)."""
        self._fetch = None

    def _due(self, cred: Credential, now: float) -> bool:
        if cred.expires_at is None:
            return False
        token, seen = self._seen
        if token != cred.token:
            self._seen = (cred.token, now)
            seen = now
        lifetime = max(0.0, cred.expires_at - seen)
        leeway = min(RENEW_LEEWAY, max(RENEW_MIN, RENEW_FRACTION * lifetime))
        return cred.expires_at - leeway <= now

    def __call__(self) -> Credential:
        cred = self.lease.credential
        if self._fetch is None or not self._due(cred, time.time()):
            return cred
        with self._lock:
            cred = self.lease.credential
            if not self._due(cred, time.time()):
                return cred  # another driver thread renewed it meanwhile
            try:
                newer = self._fetch()
            except Exception as e:  # consent needed, broker down: the warehouse decides
                name = self.lease.info.name
                log.info("jupyter-connauth: renewing %s failed (%s)", name, type(e).__name__)
                return cred
            mine = self.lease
            if newer is None or newer.grant != mine.grant or newer.info != mine.info:
                return cred  # the next call's grant check closes this session
            self.lease = newer
            self.renewals += 1
            return newer.credential


@dataclass
class _Session:
    renewer: Renewer
    connector: Connector
    conn: Any

    @property
    def lease(self) -> Lease:
        return self.renewer.lease

    def serves(self, lease: Lease) -> bool:
        """Same grant and connection info: the session stays, whatever the token."""
        mine = self.lease
        return mine.grant == lease.grant and mine.info == lease.info


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    session: _Session | None = None
    last_used: float = field(default_factory=time.monotonic)


def _close(session: _Session) -> None:
    session.renewer.freeze()
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
        renew: Callable[[], Lease | None] | None = None,
        rejected: Rejected | None = None,
    ) -> T:
        """Run ``op`` on the session of ``key`` for ``lease`` (opened or reopened as
        needed). Known driver errors come back as :class:`ConnAuthError` with the fix.

        ``refetch``: the broker's answer again, when a login was rejected. ``renew``
        (default ``refetch``): the same for a session's driver renewing its token on its
        own threads: it must not prompt for consent nor close sessions. ``rejected``
        (instead of ``refetch`` after a rejected login, and told of a rejection after
        submit, with no retry: at most once): the broker refreshes the grant."""
        self.evict()
        slot = self._locked_slot(key)
        fetch = renew if renew is not None else refetch
        try:
            session = self._current(slot, lease, fetch, rejected)
            for attempt in (1, 2):
                try:
                    return op(session.connector, session.conn)
                except Exception as e:
                    slot.session = None
                    if attempt == 2 or not session.connector.session_gone(e):
                        known = self._after_submit(slot, session, e)
                        if rejected is not None and session.connector.is_auth_error(e):
                            _tell(rejected, session.renewer.lease, known or e)
                        if known is None:
                            raise
                        raise known from None
                # The warehouse no longer knows the session: nothing ran. Reconnect once,
                # closing the old one first: the warehouse's answer does not matter, the
                # driver's side (its HTTP pool, its exit hook, our renewer) goes with it.
                log.info("jupyter-connauth: %s session gone; reconnecting", lease.info.name)
                _close(session)
                session = self._open(slot, lease, refetch, fetch, rejected)
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

    def _current(
        self,
        slot: _Slot,
        lease: Lease,
        fetch: Callable[[], Lease | None] | None,
        rejected: Rejected | None = None,
    ) -> _Session:
        """The slot's session when it serves ``lease``, else a new one (lock held)."""
        session = slot.session
        if session is not None and session.serves(lease):
            if _newer(lease, session.lease):
                session.renewer.update(lease)  # same grant, newer token: keep the session
            return session
        if session is not None:
            slot.session = None
            _close(session)
        return self._open(slot, lease, None, fetch, rejected)

    def _open(
        self,
        slot: _Slot,
        lease: Lease,
        refetch: Callable[[], Lease | None] | None,
        fetch: Callable[[], Lease | None] | None,
        rejected: Rejected | None = None,
    ) -> _Session:
        renewer, connector, conn = login(lease, lambda ls: Renewer(ls, fetch), refetch, rejected)
        slot.session = _Session(renewer, connector, conn)
        return slot.session

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


def login(
    lease: Lease,
    renewer: Callable[[Lease], R],
    refetch: Callable[[], Lease | None] | None,
    rejected: Rejected | None,
) -> tuple[R, Connector, Any]:
    """Connect with ``lease``'s credential (the driver renews it through
    ``renewer(lease)``). Rejected at login, nothing ran: once more with what the broker
    has then (``rejected`` reports the rejection and the broker refreshes the grant once;
    without it, ``refetch``); the refreshed token rejected too: reported (the broker
    marks the grant). Known driver errors come back as :class:`ConnAuthError`."""
    connector = get_connector(lease.info.connector)
    for attempt in (1, 2):
        renew = renewer(lease)
        try:
            return renew, connector, connector.connect(lease.info, lease.credential, renew)
        except ConnAuthError:
            raise
        except Exception as e:
            if attempt == 1 and connector.is_auth_error(e):
                newer = None
                if rejected is not None:  # the broker refreshes the grant once
                    newer = rejected(lease, _known(connector, e, lease.info), True)
                elif refetch is not None:
                    newer = refetch()
                if newer is not None:
                    lease = newer
                    connector = get_connector(lease.info.connector)
                    continue
            known = _known(connector, e, lease.info)
            if attempt == 2 and rejected is not None and connector.is_auth_error(e):
                _tell(rejected, lease, known)  # the refreshed token too: marked
            raise known from None
    raise AssertionError("unreachable")


def _tell(rejected: Rejected, lease: Lease, err: Exception) -> None:
    """Report a rejection after submit (the next call gets what the broker has then)."""
    try:
        rejected(lease, err, False)
    except Exception as e:  # consent needed, the admin's fix: the next call says it
        log.info("jupyter-connauth: reporting the rejection: %s", type(e).__name__)


def _newer(lease: Lease, than: Lease) -> bool:
    """``lease`` carries a later-expiring token than ``than`` (the renewer may already
    hold a newer one than the caller's)."""
    if lease.credential.token == than.credential.token:
        return False
    mine, theirs = than.credential.expires_at, lease.credential.expires_at
    return mine is not None and (theirs is None or theirs >= mine)


def _known(connector: Connector, exc: Exception, info: ConnectionInfo) -> Exception:
    known = connector.translate_error(exc, info)
    return known if known is not None else exc
