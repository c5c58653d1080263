"""The token store interface and its embedded SQLite implementation.

Every secret value is encrypted with the :class:`CryptKeeper` before it reaches the
database; keys (user, connection, flow id, a hash of the state) stay in clear so rows
can be found. Each write is one SQLite transaction, so a crash leaves either the old
or the new row, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from ..core.crypto import CryptKeeper, DecryptionError
from ..core.tokens import Flow, StoredToken, TokenRecord

log = logging.getLogger(__name__)


class TokenStore(ABC):
    """What the broker needs from a store; the JupyterHub service adds PostgreSQL."""

    # tokens
    @abstractmethod
    def get_token(self, user: str, connection: str) -> StoredToken | None: ...

    @abstractmethod
    def put_token(
        self, user: str, connection: str, fingerprint: str, record: TokenRecord
    ) -> None: ...

    @abstractmethod
    def drop_token(self, user: str, connection: str, reason: str) -> bool:
        """Forget the token but remember why, so the user can be told. True if one existed."""

    @abstractmethod
    def drop_connection_tokens(self, connection: str, reason: str) -> int: ...

    @abstractmethod
    def user_tokens(self, user: str) -> dict[str, StoredToken]: ...

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
    def get_secret(self, name: str) -> bytes | None: ...

    @abstractmethod
    def delete_secret(self, name: str) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    @asynccontextmanager
    async def refresh_lock(self, user: str, connection: str) -> AsyncIterator[None]:
        """Held around a refresh of (user, connection). In-process single-flight is the
        broker's; a store shared by several broker processes (PostgreSQL behind replicas)
        overrides this with a cross-process lock."""
        yield


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    user TEXT NOT NULL,
    connection TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    data BLOB,
    reason TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (user, connection)
);
CREATE INDEX IF NOT EXISTS tokens_by_connection ON tokens (connection);
CREATE TABLE IF NOT EXISTS flows (
    flow_id TEXT PRIMARY KEY,
    state_hash TEXT NOT NULL UNIQUE,
    used INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS connections (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, data BLOB NOT NULL);
"""
SCHEMA_VERSION = "1"


class SQLiteTokenStore(TokenStore):
    """One SQLite file (mode 0600) in the Jupyter data dir, WAL journal."""

    def __init__(self, path: str | os.PathLike[str], crypt: CryptKeeper) -> None:
        self.path = Path(path)
        self.crypt = crypt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        os.chmod(self.path, 0o600)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for stmt in _SCHEMA.strip().split(";"):
            if stmt.strip():
                self._db.execute(stmt)
        self._db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (SCHEMA_VERSION,),
        )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers -------------------------------------------------------------
    def _enc(self, data: bytes) -> bytes:
        return self.crypt.encrypt(data)

    def _dec(self, blob: bytes) -> bytes:
        return self.crypt.decrypt(blob)

    def _row_to_stored(
        self, user: str, connection: str, row: tuple[Any, ...]
    ) -> StoredToken | None:
        fingerprint, data, reason, updated_at = row
        record = None
        if data is not None:
            try:
                record = TokenRecord.loads(self._dec(data))
            except DecryptionError:
                log.error(
                    "jupyter-connauth: the stored token of user %s for %s cannot be decrypted "
                    "with the configured keys; treating it as absent (was the key changed?)",
                    user,
                    connection,
                )
                return StoredToken(None, fingerprint, "first_use", updated_at)
        return StoredToken(record, fingerprint, reason, updated_at)

    # -- tokens ----------------------------------------------------------------
    def get_token(self, user: str, connection: str) -> StoredToken | None:
        with self._lock:
            row = self._db.execute(
                "SELECT fingerprint, data, reason, updated_at FROM tokens "
                "WHERE user = ? AND connection = ?",
                (user, connection),
            ).fetchone()
        return None if row is None else self._row_to_stored(user, connection, row)

    def put_token(self, user: str, connection: str, fingerprint: str, record: TokenRecord) -> None:
        blob = self._enc(record.dumps())
        with self._tx() as db:
            db.execute(
                "INSERT INTO tokens (user, connection, fingerprint, data, reason, updated_at) "
                "VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT (user, connection) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, data = excluded.data, reason = NULL, "
                "updated_at = excluded.updated_at",
                (user, connection, fingerprint, blob, time.time()),
            )

    def drop_token(self, user: str, connection: str, reason: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tokens SET data = NULL, reason = ?, updated_at = ? "
                "WHERE user = ? AND connection = ? AND data IS NOT NULL",
                (reason, time.time(), user, connection),
            )
            return cur.rowcount > 0

    def drop_connection_tokens(self, connection: str, reason: str) -> int:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tokens SET data = NULL, reason = ?, updated_at = ? "
                "WHERE connection = ? AND data IS NOT NULL",
                (reason, time.time(), connection),
            )
            return cur.rowcount

    def user_tokens(self, user: str) -> dict[str, StoredToken]:
        with self._lock:
            rows = self._db.execute(
                "SELECT connection, fingerprint, data, reason, updated_at FROM tokens "
                "WHERE user = ?",
                (user,),
            ).fetchall()
        out: dict[str, StoredToken] = {}
        for conn, *rest in rows:
            stored = self._row_to_stored(user, conn, tuple(rest))
            if stored is not None:
                out[conn] = stored
        return out

    # -- flows -----------------------------------------------------------------
    def _flow_blob(self, flow: Flow) -> bytes:
        return self._enc(json.dumps(flow.__dict__).encode())

    def _flow_from_blob(self, blob: bytes) -> Flow:
        return Flow(**json.loads(self._dec(blob)))

    def put_flow(self, flow: Flow) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO flows (flow_id, state_hash, used, expires_at, data) "
                "VALUES (?, ?, 0, ?, ?)",
                (flow.flow_id, flow.state_hash, flow.expires_at, self._flow_blob(flow)),
            )

    def take_flow_by_state(self, state_hash: str, now: float) -> Flow | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT data FROM flows WHERE state_hash = ? AND used = 0", (state_hash,)
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE flows SET used = 1 WHERE state_hash = ?", (state_hash,))
        return self._flow_from_blob(row[0])

    def get_flow(self, flow_id: str) -> Flow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM flows WHERE flow_id = ?", (flow_id,)
            ).fetchone()
        return None if row is None else self._flow_from_blob(row[0])

    def update_flow(self, flow: Flow) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE flows SET data = ? WHERE flow_id = ?", (self._flow_blob(flow), flow.flow_id)
            )

    def purge_flows(self, before: float) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM flows WHERE expires_at < ?", (before,)).rowcount

    # -- connections and secrets ---------------------------------------------
    def connection_defs(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT name, data FROM connections ORDER BY name").fetchall()
        return {name: json.loads(data) for name, data in rows}

    def put_connection_def(self, name: str, raw: Mapping[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO connections (name, data) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                (name, json.dumps(dict(raw))),
            )

    def delete_connection_def(self, name: str) -> bool:
        with self._tx() as db:
            found = db.execute("DELETE FROM connections WHERE name = ?", (name,)).rowcount > 0
            db.execute("DELETE FROM tokens WHERE connection = ?", (name,))
            return found

    def put_secret(self, name: str, value: bytes) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO secrets (name, data) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                (name, self._enc(value)),
            )

    def get_secret(self, name: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM secrets WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._dec(row[0])

    def delete_secret(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM secrets WHERE name = ?", (name,))

    # -- maintenance -----------------------------------------------------------
    def reencrypt(self) -> int:
        """Re-encrypt every value with the newest key (after adding a key in front)."""
        n = 0
        with self._tx() as db:
            for table, key in (("tokens", "rowid"), ("flows", "rowid"), ("secrets", "rowid")):
                rows = db.execute(
                    f"SELECT {key}, data FROM {table} WHERE data IS NOT NULL"  # noqa: S608
                ).fetchall()
                for rowid, blob in rows:
                    db.execute(
                        f"UPDATE {table} SET data = ? WHERE {key} = ?",  # noqa: S608
                        (self.crypt.rotate(blob), rowid),
                    )
                    n += 1
        return n
