"""Runs a query for a connection: credential from the broker, the driver session
reused while its credential is valid, one reconnect when the warehouse rejects it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..connectors import get_connector
from ..connectors.base import ConnectionInfo, Connector, Credential, Params, Progress
from ..core.errors import ConnAuthError, ConsentRequired
from .client import AccessToken, BrokerAPI, ConsentNeeded

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

#: Ask the broker again when the session's credential has less left than this.
REUSE_MARGIN = 60.0
#: The error code of a warehouse that cannot be reached (its sessions are gone).
UNREACHABLE = "warehouse_unreachable"

ConsentHandler = Callable[[ConsentNeeded], None]


@dataclass
class Session:
    info: ConnectionInfo
    connector: Connector
    conn: Any
    credential: Credential
    opened_at: float

    def fresh(self) -> bool:
        exp = self.credential.expires_at
        return exp is None or exp - REUSE_MARGIN > time.time()


class Runner:
    """One per kernel: the kernel belongs to one user, so sessions are per connection."""

    def __init__(self, client: BrokerAPI) -> None:
        self.client = client
        self.sessions: dict[str, Session] = {}

    def close(self) -> None:
        for name in list(self.sessions):
            self.drop(name)

    def drop(self, name: str) -> None:
        session = self.sessions.pop(name, None)
        if session is not None:
            session.connector.close(session.conn)

    def _failed(self, name: str, session: Session, exc: Exception) -> ConnAuthError | None:
        """The known error for a driver failure. When the warehouse became unreachable the
        session died with it (a restarted warehouse does not know it): forget it without
        the close call (which would retry the dead host), so the next query reconnects."""
        known = session.connector.translate_error(exc, session.info)
        if known is not None and known.code == UNREACHABLE and self.sessions.get(name) is session:
            del self.sessions[name]
        return known

    # -- credentials ---------------------------------------------------------------
    def credential(
        self, name: str, on_consent: ConsentHandler | None
    ) -> tuple[ConnectionInfo, Credential]:
        """A credential, running the consent handler (which waits) when needed."""
        for _attempt in range(3):
            answer = self.client.token(name)
            if isinstance(answer, AccessToken):
                return self._credential(answer)
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

    @staticmethod
    def _credential(token: AccessToken) -> tuple[ConnectionInfo, Credential]:
        info = ConnectionInfo.from_json(token.extra["info"])
        kind: Literal["oauth", "jwt"] = "jwt" if token.extra.get("kind") == "jwt" else "oauth"
        return info, Credential(token.access_token, token.expires_at, kind, token.identity)

    def session(self, name: str, on_consent: ConsentHandler | None = None) -> Session:
        current = self.sessions.get(name)
        if current is not None and current.fresh():
            return current
        info, cred = self.credential(name, on_consent)
        if current is not None and current.credential.token == cred.token:
            current.credential = cred
            return current
        self.drop(name)
        connector = get_connector(info.connector)
        try:
            conn = connector.connect(info, cred)
        except Exception as e:
            known = connector.translate_error(e, info)
            if known is not None:
                raise known from None
            raise
        session = Session(info, connector, conn, cred, time.time())
        self.sessions[name] = session
        return session

    # -- running ---------------------------------------------------------------------
    def _with_session(
        self, name: str, on_consent: ConsentHandler | None, call: Callable[[Session], Any]
    ) -> Any:
        session = self.session(name, on_consent)
        try:
            return call(session)
        except Exception as e:
            if session.connector.is_auth_error(e):
                # The warehouse rejected the credential: drop the session, reconnect once
                # with whatever the broker now has (refreshed, or consent).
                self.drop(name)
                session = self.session(name, on_consent)
                try:
                    return call(session)
                except Exception as e2:
                    known = self._failed(name, session, e2)
                    if known is not None:
                        raise known from None
                    raise
            known = self._failed(name, session, e)
            if known is not None:
                raise known from None
            raise

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
        def call(s: Session) -> Any:
            if output == "arrow":
                return s.connector.query_arrow(
                    s.conn, sql, params, max_rows=max_rows, progress=progress
                )
            return s.connector.query_pandas(
                s.conn, sql, params, max_rows=max_rows, progress=progress
            )

        return self._with_session(name, on_consent, call)

    def whoami(self, name: str, on_consent: ConsentHandler | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._with_session(
            name, on_consent, lambda s: s.connector.whoami(s.conn)
        )
        return result

    def metadata(
        self, name: str, path: list[str], on_consent: ConsentHandler | None = None
    ) -> list[Any]:
        """Browse: [] → catalogs, [c] → schemas, [c, s] → tables, [c, s, t] → columns."""

        def call(s: Session) -> list[Any]:
            c = s.connector
            if not path:
                return list(c.list_catalogs(s.conn))
            if len(path) == 1:
                return list(c.list_schemas(s.conn, path[0]))
            if len(path) == 2:
                return list(c.list_tables(s.conn, path[0], path[1]))
            return list(c.list_columns(s.conn, path[0], path[1], path[2]))

        result: list[Any] = self._with_session(name, on_consent, call)
        return result
