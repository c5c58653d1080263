"""Runs a query for a connection: the credential from the broker on every call (its
grant decides whether the driver session can be reused), the session from the shared
:class:`~jupyter_connauth.connectors.sessions.SessionManager` (at most once: a
statement is never sent twice)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..connectors.base import ConnectionInfo, Connector, Credential, Params, Progress
from ..connectors.sessions import Lease, Rejected, SessionManager, rejection_report, test_sql
from ..core.errors import ConsentRequired
from .client import AccessToken, BrokerAPI, ConsentNeeded

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

ConsentHandler = Callable[[ConsentNeeded], None]
T = TypeVar("T")


class Runner:
    """One per kernel: the kernel belongs to one user, so sessions are per connection."""

    def __init__(
        self,
        client: BrokerAPI,
        *,
        idle_timeout: float | None = None,
        max_sessions: int = 16,
        tune: Callable[[ConnectionInfo], ConnectionInfo] | None = None,
    ) -> None:
        """``tune``: applied to the connection info of every lease (query tags)."""
        self.client = client
        self.sessions = SessionManager(idle_timeout=idle_timeout, max_sessions=max_sessions)
        self.tune = tune
        #: The last lease per connection (who ran the last query: the result's footer).
        self.last: dict[str, Lease] = {}

    def close(self) -> None:
        self.sessions.close()

    def drop(self, name: str) -> None:
        self.sessions.drop(name)

    # -- credentials ---------------------------------------------------------------
    @staticmethod
    def _credential(token: AccessToken) -> tuple[ConnectionInfo, Credential]:
        info = ConnectionInfo.from_json(token.extra["info"])
        kind: Literal["oauth", "jwt"] = "jwt" if token.extra.get("kind") == "jwt" else "oauth"
        return info, Credential(token.access_token, token.expires_at, kind, token.identity)

    def lease(self, name: str, on_consent: ConsentHandler | None, *, drop: bool = True) -> Lease:
        """The broker's answer for this call (one round trip when no consent is needed).
        Consent required: the session is closed first (nothing runs under a revoked,
        re-authorized or re-scoped grant). ``drop=False`` when the session manager asks
        while it holds the session (it replaces the session itself)."""
        for _attempt in range(3):
            answer = self.client.token(name)
            if isinstance(answer, AccessToken):
                return self._lease_of(name, answer)
            if drop:
                self.drop(name)
            if on_consent is None:
                raise ConsentRequired(
                    f"{name!r} needs your consent: {answer.reason_text}.",
                    f"run %sql_connector authorize {name}, or open {answer.authorize_url}",
                )
            on_consent(answer)
        raise ConsentRequired(
            f"Authorization of {name!r} did not produce a usable token.",
            f"run %sql_connector authorize {name} and check the IdP's answer",
        )

    def _lease_of(self, name: str, answer: AccessToken) -> Lease:
        info, cred = self._credential(answer)
        if self.tune is not None:
            info = self.tune(info)
        lease = self.last[name] = Lease(info, cred, answer.grant)
        return lease

    def rejected(self, name: str, on_consent: ConsentHandler | None) -> Rejected:
        """The warehouse rejected a lease's token: told to the broker once, which
        refreshes the grant (the new token: retried once at a login), or after a second
        rejection answers consent (shown at the next login) or the admin's fix (raised)."""

        def report(lease: Lease, err: Exception, retry: bool) -> Lease | None:
            if not lease.grant:
                return self.lease(name, on_consent, drop=False) if retry else None
            answer = self.client.rejected(name, rejection_report(lease, err))
            if not retry:
                return None
            if isinstance(answer, AccessToken):
                return self._lease_of(name, answer)
            if on_consent is not None:
                on_consent(answer)  # the Authorize balloon, with the reason
            return self.lease(name, on_consent, drop=False)

        return report

    # -- running ---------------------------------------------------------------------
    def with_session(
        self, name: str, on_consent: ConsentHandler | None, call: Callable[[Connector, Any], T]
    ) -> T:
        """``call(connector, driver_connection)`` on the kernel's session of ``name``; a
        token the warehouse rejects is reported to the broker (:meth:`rejected`)."""
        lease = self.lease(name, on_consent)
        return self.sessions.run(name, lease, call, **self._refetchers(name, on_consent))

    def _refetchers(self, name: str, on_consent: ConsentHandler | None) -> dict[str, Any]:
        """The broker asked again: after a rejected login (consent may be shown), and by
        the drivers renewing their token on their own threads (never a consent prompt,
        never a session closed: that would wait for the call the driver serves)."""
        return {
            "refetch": lambda: self.lease(name, on_consent, drop=False),
            "renew": lambda: self.lease(name, None, drop=False),
            "rejected": self.rejected(name, on_consent),
        }

    def query(
        self,
        name: str,
        sql: str,
        params: Params = None,
        *,
        max_rows: int | None = None,
        output: Literal["pandas", "arrow"] = "pandas",
        on_consent: ConsentHandler | None = None,
        progress: Progress | None = None,
    ) -> pd.DataFrame | pa.Table:
        def call(c: Connector, conn: Any) -> Any:
            if output == "arrow":
                return c.query_arrow(conn, sql, params, max_rows=max_rows, progress=progress)
            return c.query_pandas(conn, sql, params, max_rows=max_rows, progress=progress)

        return self.with_session(name, on_consent, call)

    def whoami(self, name: str, on_consent: ConsentHandler | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.with_session(name, on_consent, lambda c, conn: c.whoami(conn))
        return result

    def test(self, name: str, on_consent: ConsentHandler | None = None) -> float:
        """Run the connection test's statement; the seconds it took."""
        started = time.perf_counter()
        lease = self.lease(name, on_consent)
        sql = test_sql(lease.info.connector)
        self.sessions.run(
            name,
            lease,
            lambda c, conn: c.query_arrow(conn, sql),
            **self._refetchers(name, on_consent),
        )
        return time.perf_counter() - started

    def metadata(
        self, name: str, path: list[str], on_consent: ConsentHandler | None = None
    ) -> list[Any]:
        """Browse: [] → catalogs, [c] → schemas, [c, s] → tables, [c, s, t] → columns."""

        def call(c: Connector, conn: Any) -> list[Any]:
            if not path:
                return list(c.list_catalogs(conn))
            if len(path) == 1:
                return list(c.list_schemas(conn, path[0]))
            if len(path) == 2:
                return list(c.list_tables(conn, path[0], path[1]))
            return list(c.list_columns(conn, path[0], path[1], path[2]))

        result: list[Any] = self.with_session(name, on_consent, call)
        return result
