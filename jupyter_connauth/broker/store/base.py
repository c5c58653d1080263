"""What the broker needs from a token store (no database imports here)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from ...core.tokens import Flow, StoredToken, TokenRecord


class TokenStore(ABC):
    """Tokens, consent flows, API-defined connections and their secrets, per user.

    Every write is one transaction. Rows carry a version, so a refresh and a drop can be
    made conditional on the row being the one that was read (compare-and-set), and a
    refresh lease, so processes sharing the store refresh a token once.
    """

    # tokens
    @abstractmethod
    def get_token(self, user: str, connection: str) -> StoredToken | None: ...

    @abstractmethod
    def put_token(
        self,
        user: str,
        connection: str,
        fingerprint: str,
        record: TokenRecord,
        *,
        expect_version: int | None = None,
    ) -> bool:
        """Store the record and end any refresh lease of the row. With ``expect_version``
        only if the row is still at that version; True if written."""

    @abstractmethod
    def drop_token(
        self, user: str, connection: str, reason: str, *, expect_version: int | None = None
    ) -> bool:
        """Forget the token but remember why, so the user can be told (and, unless the
        user revoked it, whose it was). With ``expect_version`` only if the row is still
        at that version. True if a token was dropped."""

    @abstractmethod
    def drop_connection_tokens(self, connection: str, reason: str) -> int: ...

    @abstractmethod
    def user_tokens(self, user: str) -> dict[str, StoredToken]: ...

    # refresh leases: one refresher per row across every process sharing the store
    @abstractmethod
    def take_lease(
        self, user: str, connection: str, version: int, holder: str, until: float
    ) -> bool:
        """Take the row's refresh lease if the row is at ``version`` and no unexpired
        lease is held (one conditional UPDATE). True if taken."""

    @abstractmethod
    def release_lease(self, user: str, connection: str, holder: str) -> None: ...

    # flows
    @abstractmethod
    def put_flow(self, flow: Flow) -> None: ...

    @abstractmethod
    def take_flow_by_state(self, state_hash: str, now: float) -> Flow | None:
        """Mark the state used and return its flow; None if unknown or already used."""

    @abstractmethod
    def get_flow(self, flow_id: str) -> Flow | None: ...

    @abstractmethod
    def update_flow(self, flow: Flow) -> None: ...

    @abstractmethod
    def purge_flows(self, before: float) -> int: ...

    # connections defined through the API, and their secrets
    @abstractmethod
    def connection_defs(self) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    def put_connection_def(self, name: str, raw: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def delete_connection_def(self, name: str) -> bool: ...

    @abstractmethod
    def put_secret(self, name: str, value: bytes) -> None: ...

    @abstractmethod
    def get_secret(self, name: str) -> bytes | None:
        """The secret, or None when there is none or it cannot be decrypted with the
        configured keys (logged; :meth:`secret_unreadable` tells which)."""

    #: True when a read never waits for the network or for another process (SQLite in
    #: WAL mode: readers do not wait for writers): the broker then reads on the event
    #: loop, which costs less than a hop to a thread. Writes always go to a thread.
    reads_are_local: bool = False

    def secret_unreadable(self, name: str) -> bool:
        """True if a secret of that name is stored but cannot be decrypted."""
        return False

    @abstractmethod
    def delete_secret(self, name: str) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
