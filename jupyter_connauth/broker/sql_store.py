"""The token store on SQLAlchemy Core: SQLite by default, PostgreSQL for a hub's replicas.

Same tables and the same encryption as :class:`SQLiteTokenStore` (an existing SQLite
store opens as is). Keys (user, connection, flow id, the state's hash) stay in clear;
every value is a Fernet blob from the :class:`CryptKeeper`. Several broker processes
may share one PostgreSQL database:

- a state is taken with one conditional ``UPDATE``, so exactly one replica wins it;
- :meth:`refresh_lock` is a PostgreSQL advisory lock per (user, connection), so a
  refresh is single-flight across replicas, not just within one process;
- schema migrations run at start under an advisory lock, so replicas starting together
  migrate once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as _pg_insert
from sqlalchemy.dialects.sqlite import insert as _sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from ..core.crypto import CryptKeeper, DecryptionError
from ..core.errors import ConfigError
from ..core.tokens import Flow, StoredToken, TokenRecord
from .store import TokenStore

log = logging.getLogger(__name__)

metadata = sa.MetaData()
meta_t = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
tokens_t = sa.Table(
    "tokens",
    metadata,
    sa.Column("user", sa.String(255), primary_key=True),
    sa.Column("connection", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(255), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=True),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("tokens_by_connection", "connection"),
)
flows_t = sa.Table(
    "flows",
    metadata,
    sa.Column("flow_id", sa.String(64), primary_key=True),
    sa.Column("state_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("used", sa.Integer, nullable=False, server_default="0"),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
connections_t = sa.Table(
    "connections",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
secrets_t = sa.Table(
    "secrets",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


def _create_v1(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=True)


#: Schema migrations: version n is reached by running MIGRATIONS[n - 1]. Append, never edit.
MIGRATIONS: list[Callable[[Connection], None]] = [_create_v1]
SCHEMA_VERSION = len(MIGRATIONS)
_MIGRATION_LOCK = 0x636F6E6E61757468  # "connauth"
LOCK_POLL = 0.05


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for the parts."""
    digest = hashlib.sha256("\0".join(("connauth", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SQLTokenStore(TokenStore):
    """A token store in any SQLAlchemy database; see the module docstring."""

    def __init__(self, db_url: str, crypt: CryptKeeper, **engine_kwargs: Any) -> None:
        self.crypt = crypt
        url = make_url(db_url)
        self.url = url
        self.is_postgres = url.get_backend_name() == "postgresql"
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database and database != ":memory:":
                path = Path(database)
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
                os.chmod(path, 0o600)
            engine_kwargs.setdefault("connect_args", {"check_same_thread": False})
        else:
            engine_kwargs.setdefault("pool_pre_ping", True)
        self.engine: Engine = sa.create_engine(url, **engine_kwargs)
        if url.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        # Single reads need no transaction: autocommit saves the BEGIN/ROLLBACK round trips.
        self._reader: Engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # Refresh locks are held for a whole IdP round trip, by as many coroutines as there
        # are users refreshing at once: they get their own connections, outside the pool
        # the short reads and writes use (sharing it deadlocked the event loop when more
        # refreshes ran at once than the pool had connections).
        self._lock_engine: Engine | None = (
            sa.create_engine(url, poolclass=NullPool) if self.is_postgres else None
        )
        try:
            self.migrate()
        except BaseException:
            self.engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"SQLTokenStore({self.url.render_as_string(hide_password=True)!r})"

    # -- schema ----------------------------------------------------------------
    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("meta"):
                return 0
            value = conn.execute(
                sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")
            ).scalar()
        return int(value) if value is not None else 0

    def migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION; returns the version found before."""
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            found = 0
            if sa.inspect(conn).has_table("meta"):
                value = conn.execute(
                    sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")
                ).scalar()
                found = int(value) if value is not None else 0
            if found > SCHEMA_VERSION:
                raise ConfigError(
                    "c.ConnAuthHub.db_url",
                    f"the token store's schema is version {found}, newer than this "
                    f"jupyter-connauth knows ({SCHEMA_VERSION})",
                    "upgrade jupyter-connauth on every replica to the same version",
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version - 1](conn)
                log.info("jupyter-connauth: token store schema migrated to version %d", version)
            if found != SCHEMA_VERSION:
                self._upsert(
                    conn, meta_t, {"key": "schema_version"}, {"value": str(SCHEMA_VERSION)}
                )
        return found

    def close(self) -> None:
        self.engine.dispose()
        if self._lock_engine is not None:
            self._lock_engine.dispose()

    # -- helpers -----------------------------------------------------------------
    def _upsert(
        self, conn: Connection, table: sa.Table, keys: dict[str, Any], values: dict[str, Any]
    ) -> None:
        dialect = conn.dialect.name
        if dialect == "postgresql":
            pg = _pg_insert(table).values(**keys, **values)
            conn.execute(pg.on_conflict_do_update(index_elements=list(keys), set_=values))
            return
        if dialect == "sqlite":
            lite = _sqlite_insert(table).values(**keys, **values)
            conn.execute(lite.on_conflict_do_update(index_elements=list(keys), set_=values))
            return
        where = sa.and_(*(table.c[k] == v for k, v in keys.items()))
        if conn.execute(sa.update(table).where(where).values(**values)).rowcount == 0:
            conn.execute(sa.insert(table).values(**keys, **values))

    def _stored(self, user: str, connection: str, row: Any) -> StoredToken:
        record = None
        if row.data is not None:
            try:
                record = TokenRecord.loads(self.crypt.decrypt(row.data))
            except DecryptionError:
                log.error(
                    "jupyter-connauth: the stored token of user %s for %s cannot be decrypted "
                    "with the configured keys; treating it as absent (was the key changed?)",
                    user,
                    connection,
                )
                return StoredToken(None, row.fingerprint, "first_use", row.updated_at)
        return StoredToken(record, row.fingerprint, row.reason, row.updated_at)

    # -- tokens ----------------------------------------------------------------
    def get_token(self, user: str, connection: str) -> StoredToken | None:
        t = tokens_t.c
        with self._reader.connect() as conn:
            row = conn.execute(
                sa.select(t.fingerprint, t.data, t.reason, t.updated_at).where(
                    t.user == user, t.connection == connection
                )
            ).first()
        return None if row is None else self._stored(user, connection, row)

    def put_token(self, user: str, connection: str, fingerprint: str, record: TokenRecord) -> None:
        blob = self.crypt.encrypt(record.dumps())
        values = {"fingerprint": fingerprint, "data": blob, "reason": None}
        with self.engine.begin() as conn:
            self._upsert(
                conn,
                tokens_t,
                {"user": user, "connection": connection},
                {**values, "updated_at": time.time()},
            )

    def _drop(self, where: Any, reason: str) -> int:
        with self.engine.begin() as conn:
            stmt = (
                sa.update(tokens_t)
                .where(where, tokens_t.c.data.is_not(None))
                .values(data=None, reason=reason, updated_at=time.time())
            )
            return int(conn.execute(stmt).rowcount)

    def drop_token(self, user: str, connection: str, reason: str) -> bool:
        t = tokens_t.c
        return self._drop(sa.and_(t.user == user, t.connection == connection), reason) > 0

    def drop_connection_tokens(self, connection: str, reason: str) -> int:
        return self._drop(tokens_t.c.connection == connection, reason)

    def drop_all_tokens(self, reason: str) -> int:
        return self._drop(sa.true(), reason)

    def user_tokens(self, user: str) -> dict[str, StoredToken]:
        t = tokens_t.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.connection, t.fingerprint, t.data, t.reason, t.updated_at).where(
                    t.user == user
                )
            ).all()
        return {row.connection: self._stored(user, row.connection, row) for row in rows}

    def users(self) -> list[str]:
        """Every user with a row (current or dropped token), sorted."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tokens_t.c.user).distinct().order_by(tokens_t.c.user))
            return [r[0] for r in rows]

    # -- flows -----------------------------------------------------------------
    def _flow_blob(self, flow: Flow) -> bytes:
        return self.crypt.encrypt(json.dumps(flow.__dict__).encode())

    def _flow(self, blob: bytes) -> Flow:
        return Flow(**json.loads(self.crypt.decrypt(blob)))

    def put_flow(self, flow: Flow) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(flows_t).values(
                    flow_id=flow.flow_id,
                    state_hash=flow.state_hash,
                    used=0,
                    expires_at=flow.expires_at,
                    data=self._flow_blob(flow),
                )
            )

    def take_flow_by_state(self, state_hash: str, now: float) -> Flow | None:
        f = flows_t.c
        with self.engine.begin() as conn:
            # One conditional UPDATE: of two replicas racing for a state, one wins.
            won = conn.execute(
                sa.update(flows_t).where(f.state_hash == state_hash, f.used == 0).values(used=1)
            ).rowcount
            if won != 1:
                return None
            blob = conn.execute(sa.select(f.data).where(f.state_hash == state_hash)).scalar_one()
        return self._flow(blob)

    def get_flow(self, flow_id: str) -> Flow | None:
        with self.engine.connect() as conn:
            blob = conn.execute(
                sa.select(flows_t.c.data).where(flows_t.c.flow_id == flow_id)
            ).scalar()
        return None if blob is None else self._flow(blob)

    def update_flow(self, flow: Flow) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(flows_t)
                .where(flows_t.c.flow_id == flow.flow_id)
                .values(data=self._flow_blob(flow))
            )

    def purge_flows(self, before: float) -> int:
        with self.engine.begin() as conn:
            stmt = sa.delete(flows_t).where(flows_t.c.expires_at < before)
            return int(conn.execute(stmt).rowcount)

    # -- connections and secrets ---------------------------------------------
    def connection_defs(self) -> dict[str, dict[str, Any]]:
        c = connections_t.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.name, c.data).order_by(c.name)).all()
        return {row.name: json.loads(row.data) for row in rows}

    def put_connection_def(self, name: str, raw: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            data = json.dumps(dict(raw)).encode()
            self._upsert(conn, connections_t, {"name": name}, {"data": data})

    def delete_connection_def(self, name: str) -> bool:
        with self.engine.begin() as conn:
            stmt = sa.delete(connections_t).where(connections_t.c.name == name)
            return int(conn.execute(stmt).rowcount) > 0

    def put_secret(self, name: str, value: bytes) -> None:
        with self.engine.begin() as conn:
            self._upsert(conn, secrets_t, {"name": name}, {"data": self.crypt.encrypt(value)})

    def get_secret(self, name: str) -> bytes | None:
        with self.engine.connect() as conn:
            blob = conn.execute(
                sa.select(secrets_t.c.data).where(secrets_t.c.name == name)
            ).scalar()
        return None if blob is None else self.crypt.decrypt(blob)

    def delete_secret(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(secrets_t).where(secrets_t.c.name == name))

    # -- cross-replica single-flight -----------------------------------------
    @asynccontextmanager
    async def refresh_lock(self, user: str, connection: str) -> AsyncIterator[None]:
        if not self.is_postgres:
            yield
            return
        key = lock_key("refresh", user, connection)
        assert self._lock_engine is not None
        conn = await asyncio.to_thread(self._lock_engine.connect)
        try:
            # Poll a try-lock: waiting never ties up a thread or blocks the event loop.
            while not await asyncio.to_thread(_try_lock, conn, key):  # noqa: ASYNC110
                await asyncio.sleep(LOCK_POLL)
            try:
                yield
            finally:
                await asyncio.to_thread(_unlock, conn, key)
        finally:
            await asyncio.to_thread(conn.close)

    # -- maintenance -----------------------------------------------------------
    def reencrypt(self) -> int:
        """Re-encrypt every value with the newest key (after adding a key in front)."""
        n = 0
        with self.engine.begin() as conn:
            for table in (tokens_t, flows_t, secrets_t):
                pk = [c for c in table.primary_key.columns]
                rows = conn.execute(
                    sa.select(*pk, table.c.data).where(table.c.data.is_not(None))
                ).all()
                for row in rows:
                    where = sa.and_(*(c == row._mapping[c.name] for c in pk))
                    rotated = self.crypt.rotate(row.data)
                    conn.execute(sa.update(table).where(where).values(data=rotated))
                    n += 1
        return n


def _try_lock(conn: Connection, key: int) -> bool:
    got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
    conn.commit()
    return bool(got)


def _unlock(conn: Connection, key: int) -> None:
    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    conn.commit()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
