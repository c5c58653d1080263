"""The token store on SQLAlchemy Core: one SQLite file by default, PostgreSQL for a hub.

Keys (user, connection, flow id, the state's hash) stay in clear; every value is a
Fernet blob from the :class:`CryptKeeper`. Each write is one transaction (on SQLite
``BEGIN IMMEDIATE``, WAL journal, file mode 0600), so a crash leaves either the old or
the new row. Several processes may share the store:

- a state is taken with one conditional ``UPDATE``, so exactly one process wins it;
- a refresh takes the row's lease with one conditional ``UPDATE`` (holder, expiry) and
  stores its result only if the row is still the version it refreshed: no connection or
  transaction is held while the IdP answers;
- migrations run under a lock when the store opens (:mod:`.migrate`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as _pg_insert
from sqlalchemy.dialects.sqlite import insert as _sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url

from ...core.crypto import CryptKeeper, DecryptionError
from ...core.tokens import Flow, StoredToken, TokenRecord
from .base import TokenStore
from .migrate import upgrade
from .schema import connections_t, flows_t, secrets_t, tokens_t

log = logging.getLogger(__name__)

_TOKEN_COLUMNS = (
    tokens_t.c.fingerprint,
    tokens_t.c.data,
    tokens_t.c.reason,
    tokens_t.c.updated_at,
    tokens_t.c.version,
    tokens_t.c.lease_until,
    tokens_t.c.previous_identity,
)
#: The warm path's one query, built once.
_GET_TOKEN = sa.select(*_TOKEN_COLUMNS).where(
    tokens_t.c.user == sa.bindparam("u"), tokens_t.c.connection == sa.bindparam("c")
)


class _TokenRow(NamedTuple):
    fingerprint: str
    data: bytes | None
    reason: str | None
    updated_at: float
    version: int
    lease_until: float | None
    previous_identity: bytes | None


def sqlite_file(path: str | os.PathLike[str]) -> str:
    """A private (0600) SQLite file, created if missing; returns its SQLAlchemy URL."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists():
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(p, 0o600)
    return f"sqlite:///{p}"


class SQLTokenStore(TokenStore):
    """A token store in any SQLAlchemy database; see the module docstring."""

    def __init__(
        self,
        db_url: str,
        crypt: CryptKeeper,
        *,
        setting: str = "c.ConnAuth.store_path",
        **engine_kwargs: Any,
    ) -> None:
        self.crypt = crypt
        url = make_url(db_url)
        self.url = url
        self.is_sqlite = url.get_backend_name() == "sqlite"
        self.reads_are_local = self.is_sqlite
        self.path: Path | None = None
        if self.is_sqlite:
            database = url.database or ""
            if database and database != ":memory:":
                self.path = Path(database)
                sqlite_file(self.path)
            engine_kwargs.setdefault("connect_args", {"check_same_thread": False})
        else:
            engine_kwargs.setdefault("pool_pre_ping", True)
        self.engine: Engine = sa.create_engine(url, **engine_kwargs)
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        # Single reads need no transaction: autocommit saves the BEGIN/ROLLBACK round trips
        # (on SQLite the driver is in autocommit mode already and the begin hook skips
        # these connections: switching the isolation level per checkout costs more).
        self._reader: Engine = self.engine.execution_options(
            **({"connauth_read": True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"})
        )
        try:
            upgrade(self.engine, setting)
        except BaseException:
            self.engine.dispose()
            raise
        # Every SQLAlchemy execute costs ~50 µs: the warm token read on SQLite (where
        # that is most of its time) runs its compiled SQL on the pooled driver connection.
        compiled = _GET_TOKEN.compile(dialect=self.engine.dialect)
        positional = (
            compiled.positiontup == ["u", "c"] and self.engine.dialect.paramstyle == "qmark"
        )
        self._get_sql: str | None = str(compiled) if self.is_sqlite and positional else None

    def __repr__(self) -> str:
        return f"SQLTokenStore({self.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    # -- helpers -----------------------------------------------------------------
    def _upsert(
        self, conn: Connection, table: sa.Table, keys: dict[str, Any], values: dict[str, Any]
    ) -> None:
        insert = _pg_insert if conn.dialect.name == "postgresql" else _sqlite_insert
        stmt = insert(table).values(**keys, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=values))

    def _decrypt_json(self, blob: bytes | None) -> Any:
        return None if blob is None else json.loads(self.crypt.decrypt(blob))

    def _stored(self, user: str, connection: str, row: Any) -> StoredToken:
        record = None
        reason = row.reason
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
                reason = "key_changed"
        previous = None
        if record is None and row.previous_identity is not None:
            try:
                previous = self._decrypt_json(row.previous_identity)
            except DecryptionError:
                previous = None
        return StoredToken(
            record,
            row.fingerprint,
            reason,
            row.updated_at,
            version=row.version,
            lease_until=row.lease_until,
            previous_identity=previous,
        )

    # -- tokens ----------------------------------------------------------------
    def get_token(self, user: str, connection: str) -> StoredToken | None:
        if self._get_sql is not None:  # SQLite: the driver directly, the hot path
            dbapi = self.engine.raw_connection()
            try:
                found = dbapi.execute(self._get_sql, (user, connection)).fetchone()
            finally:
                dbapi.close()  # back to the pool
            row: Any = None if found is None else _TokenRow(*found)
        else:
            with self._reader.connect() as conn:
                row = conn.execute(_GET_TOKEN, {"u": user, "c": connection}).first()
        return None if row is None else self._stored(user, connection, row)

    def put_token(
        self,
        user: str,
        connection: str,
        fingerprint: str,
        record: TokenRecord,
        *,
        expect_version: int | None = None,
    ) -> bool:
        t = tokens_t.c
        values = {
            "fingerprint": fingerprint,
            "data": self.crypt.encrypt(record.dumps()),
            "reason": None,
            "updated_at": time.time(),
            "lease_holder": None,
            "lease_until": None,
            "previous_identity": None,
        }
        with self.engine.begin() as conn:
            if expect_version is not None:
                stmt = (
                    sa.update(tokens_t)
                    .where(t.user == user, t.connection == connection)
                    .where(t.version == expect_version)
                    .values(**values, version=t.version + 1)
                )
                return int(conn.execute(stmt).rowcount) == 1
            insert = _pg_insert if conn.dialect.name == "postgresql" else _sqlite_insert
            stmt_i = insert(tokens_t).values(user=user, connection=connection, version=1, **values)
            conn.execute(
                stmt_i.on_conflict_do_update(
                    index_elements=["user", "connection"],
                    set_={**values, "version": t.version + 1},
                )
            )
        return True

    def _drop(self, where: Any, reason: str) -> int:
        """Drop the matching tokens in one transaction; keep each one's identity unless
        the user revoked it."""
        t = tokens_t.c
        n = 0
        with self.engine.begin() as conn:
            query = sa.select(t.user, t.connection, t.data).where(where, t.data.is_not(None))
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            for row in conn.execute(query).all():
                previous = None
                if reason != "revoked":
                    try:
                        identity = TokenRecord.loads(self.crypt.decrypt(row.data)).identity
                        previous = self.crypt.encrypt(json.dumps(identity).encode())
                    except DecryptionError:
                        previous = None
                n += conn.execute(
                    sa.update(tokens_t)
                    .where(t.user == row.user, t.connection == row.connection)
                    .values(
                        data=None,
                        reason=reason,
                        updated_at=time.time(),
                        version=t.version + 1,
                        lease_holder=None,
                        lease_until=None,
                        previous_identity=previous,
                    )
                ).rowcount
        return n

    def drop_token(
        self, user: str, connection: str, reason: str, *, expect_version: int | None = None
    ) -> bool:
        t = tokens_t.c
        where = sa.and_(t.user == user, t.connection == connection)
        if expect_version is not None:
            where = sa.and_(where, t.version == expect_version)
        return self._drop(where, reason) > 0

    def drop_connection_tokens(self, connection: str, reason: str) -> int:
        return self._drop(tokens_t.c.connection == connection, reason)

    def drop_all_tokens(self, reason: str) -> int:
        return self._drop(sa.true(), reason)

    def user_tokens(self, user: str) -> dict[str, StoredToken]:
        t = tokens_t.c
        with self._reader.connect() as conn:
            rows = conn.execute(sa.select(t.connection, *_TOKEN_COLUMNS).where(t.user == user))
            return {row.connection: self._stored(user, row.connection, row) for row in rows}

    def users(self) -> list[str]:
        """Every user with a row (current or dropped token), sorted."""
        with self._reader.connect() as conn:
            rows = conn.execute(sa.select(tokens_t.c.user).distinct().order_by(tokens_t.c.user))
            return [r[0] for r in rows]

    # -- refresh leases ----------------------------------------------------------
    def take_lease(
        self, user: str, connection: str, version: int, holder: str, until: float
    ) -> bool:
        t = tokens_t.c
        stmt = (
            sa.update(tokens_t)
            .where(t.user == user, t.connection == connection, t.version == version)
            .where(sa.or_(t.lease_until.is_(None), t.lease_until < time.time()))
            .values(lease_holder=holder, lease_until=until)
        )
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount) == 1

    def release_lease(self, user: str, connection: str, holder: str) -> None:
        t = tokens_t.c
        stmt = (
            sa.update(tokens_t)
            .where(t.user == user, t.connection == connection, t.lease_holder == holder)
            .values(lease_holder=None, lease_until=None)
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    # -- flows -----------------------------------------------------------------
    def _flow_blob(self, flow: Flow) -> bytes:
        return self.crypt.encrypt(json.dumps(flow.__dict__).encode())

    def _flow(self, blob: bytes) -> Flow:
        return Flow(**self._decrypt_json(blob))

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
            # One conditional UPDATE: of two processes racing for a state, one wins.
            won = conn.execute(
                sa.update(flows_t).where(f.state_hash == state_hash, f.used == 0).values(used=1)
            ).rowcount
            if won != 1:
                return None
            blob = conn.execute(sa.select(f.data).where(f.state_hash == state_hash)).scalar_one()
        return self._flow(blob)

    def get_flow(self, flow_id: str) -> Flow | None:
        with self._reader.connect() as conn:
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
        with self._reader.connect() as conn:
            rows = conn.execute(sa.select(c.name, c.data).order_by(c.name)).all()
        return {row.name: json.loads(row.data) for row in rows}

    def put_connection_def(self, name: str, raw: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            data = json.dumps(dict(raw)).encode()
            self._upsert(conn, connections_t, {"name": name}, {"data": data})

    def delete_connection_def(self, name: str) -> bool:
        with self.engine.begin() as conn:
            stmt = sa.delete(connections_t).where(connections_t.c.name == name)
            found = int(conn.execute(stmt).rowcount) > 0
            conn.execute(sa.delete(tokens_t).where(tokens_t.c.connection == name))
            return found

    def put_secret(self, name: str, value: bytes) -> None:
        with self.engine.begin() as conn:
            self._upsert(conn, secrets_t, {"name": name}, {"data": self.crypt.encrypt(value)})

    def _secret_blob(self, name: str) -> bytes | None:
        with self._reader.connect() as conn:
            blob: bytes | None = conn.execute(
                sa.select(secrets_t.c.data).where(secrets_t.c.name == name)
            ).scalar()
        return blob

    def get_secret(self, name: str) -> bytes | None:
        blob = self._secret_blob(name)
        if blob is None:
            return None
        try:
            return self.crypt.decrypt(blob)
        except DecryptionError:
            log.warning(
                "jupyter-connauth: the stored secret %s cannot be decrypted with the configured "
                "keys; treating it as missing (was the key changed?)",
                name,
            )
            return None

    def secret_unreadable(self, name: str) -> bool:
        blob = self._secret_blob(name)
        if blob is None:
            return False
        try:
            self.crypt.decrypt(blob)
        except DecryptionError:
            return True
        return False

    def delete_secret(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(secrets_t).where(secrets_t.c.name == name))

    # -- maintenance -----------------------------------------------------------
    def reencrypt(self) -> int:
        """Re-encrypt every value with the newest key (after adding a key in front)."""
        n = 0
        with self.engine.begin() as conn:
            for table, column in (
                (tokens_t, "data"),
                (tokens_t, "previous_identity"),
                (flows_t, "data"),
                (secrets_t, "data"),
            ):
                pk = list(table.primary_key.columns)
                col = table.c[column]
                rows = conn.execute(sa.select(*pk, col).where(col.is_not(None))).all()
                for row in rows:
                    where = sa.and_(*(c == row._mapping[c.name] for c in pk))
                    rotated = self.crypt.rotate(row._mapping[column])
                    conn.execute(sa.update(table).where(where).values({column: rotated}))
                    n += column == "data"
        return n


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling off: SQLAlchemy's "begin" event below emits
    # BEGIN IMMEDIATE, so DDL is transactional and a write takes the lock at its start.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    if not conn.get_execution_options().get("connauth_read"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
