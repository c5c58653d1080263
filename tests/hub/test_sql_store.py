"""The token store (SQLAlchemy Core), on SQLite and on PostgreSQL: encryption, users
apart, one winner per state, refresh leases and compare-and-set across processes, and
alembic migrations of the stores made before it (the raw-sqlite3 file, a hub database)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from jupyter_connauth.broker.store import SQLTokenStore, TokenStore, open_store
from jupyter_connauth.broker.store.migrate import SCRIPTS, current_revision
from jupyter_connauth.broker.store.schema import HEAD
from jupyter_connauth.core.crypto import CryptKeeper
from jupyter_connauth.core.errors import ConfigError
from jupyter_connauth.core.tokens import Flow
from tests.test_store import SECRET_ACCESS, SECRET_REFRESH, record

Opener = Callable[[CryptKeeper], SQLTokenStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores on one database (each call: a new store object, like a new replica)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub' / 'tokens.sqlite3'}"
    else:
        url = request.getfixturevalue("new_pg_database")()
    opened: list[SQLTokenStore] = []

    def opener(crypt: CryptKeeper) -> SQLTokenStore:
        store = open_store(url, crypt)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def keeper() -> CryptKeeper:
    return CryptKeeper([Fernet.generate_key()])


def raw_bytes(store: SQLTokenStore) -> bytes:
    """Everything in the database's tables, as the DBA would see it."""
    out = b""
    with store.engine.connect() as conn:
        for table in ("tokens", "flows", "secrets", "connections", "meta"):
            for row in conn.execute(sa.text(f"SELECT * FROM {table}")):
                for v in row:
                    out += bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
    return out


def flow(n: int, user: str = "alice") -> Flow:
    now = time.time()
    return Flow(
        flow_id=f"flow{n}",
        state_hash=f"hash{n}",
        user=user,
        connection="sales",
        fingerprint="fp",
        code_verifier=f"verifier-secret-{n}",
        nonce=f"nonce-{n}",
        redirect_uri="https://hub.example.com/services/connauth/oauth/connector/callback",
        created_at=now,
        expires_at=now + 600,
    )


def test_encrypted_at_rest_and_users_apart(backend: Opener, keeper: CryptKeeper) -> None:
    store = backend(keeper)
    store.put_token("alice", "sales", "fp", record(1))
    store.put_token("bob", "sales", "fp", record(2))
    store.put_flow(flow(1))
    store.put_secret("connection:sf:private_key", b"-----BEGIN PRIVATE KEY-----zzz")
    raw = raw_bytes(store)
    for secret in (SECRET_ACCESS, SECRET_REFRESH, "alice@example.com", "verifier-secret", "zzz"):
        assert secret.encode() not in raw
    alice, bob = store.get_token("alice", "sales"), store.get_token("bob", "sales")
    assert alice and alice.record and alice.record.access_token.endswith("-1")
    assert bob and bob.record and bob.record.access_token.endswith("-2")
    assert store.drop_token("alice", "sales", "revoked")
    assert not store.drop_token("alice", "sales", "revoked")
    dropped = store.get_token("alice", "sales")
    assert dropped is not None and dropped.record is None and dropped.reason == "revoked"
    assert store.user_tokens("bob")["sales"].record is not None
    assert store.drop_connection_tokens("sales", "scopes_changed") == 1
    assert store.users() == ["alice", "bob"]
    assert store.get_token("carol", "sales") is None


def test_survives_restart_and_a_second_replica_sees_writes(
    backend: Opener, keeper: CryptKeeper
) -> None:
    first = backend(keeper)
    first.put_token("alice", "sales", "fp", record(1))
    first.put_connection_def("api-conn", {"connector": "bigquery", "project": "p"})
    first.close()
    second = backend(keeper)
    got = second.get_token("alice", "sales")
    assert got is not None and got.record is not None and got.record.scope == ("sql",)
    assert second.connection_defs() == {"api-conn": {"connector": "bigquery", "project": "p"}}
    assert second.delete_connection_def("api-conn") and not second.delete_connection_def("x")
    second.put_secret("s", b"one")
    second.put_secret("s", b"two")
    assert second.get_secret("s") == b"two"
    second.delete_secret("s")
    assert second.get_secret("s") is None


def test_state_is_one_shot_even_across_replicas(backend: Opener, keeper: CryptKeeper) -> None:
    replicas = [backend(keeper) for _ in range(4)]
    replicas[0].put_flow(flow(1))
    winners: list[Flow] = []
    barrier = threading.Barrier(len(replicas))

    def take(store: TokenStore) -> None:
        barrier.wait()
        got = store.take_flow_by_state("hash1", time.time())
        if got is not None:
            winners.append(got)

    threads = [threading.Thread(target=take, args=(s,)) for s in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and winners[0].code_verifier == "verifier-secret-1"
    f = replicas[1].get_flow("flow1")
    assert f is not None
    f.status = "complete"
    replicas[2].update_flow(f)
    assert replicas[3].get_flow("flow1").status == "complete"  # type: ignore[union-attr]
    assert replicas[0].purge_flows(time.time() + 3600) == 1


def test_key_rotation_and_wrong_key(backend: Opener, caplog: pytest.LogCaptureFixture) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    backend(CryptKeeper([old])).put_token("alice", "sales", "fp", record())
    rotated = backend(CryptKeeper([new, old]))
    assert rotated.reencrypt() >= 1
    only_new = backend(CryptKeeper([new]))
    got = only_new.get_token("alice", "sales")
    assert got is not None and got.record is not None
    stranger = backend(CryptKeeper([Fernet.generate_key()]))
    lost = stranger.get_token("alice", "sales")
    assert lost is not None and lost.record is None
    assert "cannot be decrypted" in caplog.text


def test_schema_at_head_and_newer_schema_refused(backend: Opener, keeper: CryptKeeper) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD
    store = backend(keeper)
    with store.engine.connect() as conn:
        assert current_revision(conn) == HEAD
    backend(keeper)  # opening again migrates nothing
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(ConfigError, match="newer than this"):
        backend(keeper)


# The schema both stores wrote before alembic (``meta.schema_version`` 1), verbatim.
V1_SQLITE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    user TEXT NOT NULL, connection TEXT NOT NULL, fingerprint TEXT NOT NULL, data BLOB,
    reason TEXT, updated_at REAL NOT NULL, PRIMARY KEY (user, connection)
);
CREATE INDEX IF NOT EXISTS tokens_by_connection ON tokens (connection);
CREATE TABLE IF NOT EXISTS flows (
    flow_id TEXT PRIMARY KEY, state_hash TEXT NOT NULL UNIQUE,
    used INTEGER NOT NULL DEFAULT 0, expires_at REAL NOT NULL, data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS connections (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, data BLOB NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
"""
V1_POSTGRES = """
CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tokens (
    "user" VARCHAR(255) NOT NULL, connection VARCHAR(255) NOT NULL,
    fingerprint VARCHAR(255) NOT NULL, data BYTEA, reason VARCHAR(64),
    updated_at FLOAT NOT NULL, PRIMARY KEY ("user", connection)
);
CREATE INDEX tokens_by_connection ON tokens (connection);
CREATE TABLE flows (
    flow_id VARCHAR(64) PRIMARY KEY, state_hash VARCHAR(64) NOT NULL UNIQUE,
    used INTEGER NOT NULL DEFAULT 0, expires_at FLOAT NOT NULL, data BYTEA NOT NULL
);
CREATE TABLE connections (name VARCHAR(255) PRIMARY KEY, data BYTEA NOT NULL);
CREATE TABLE secrets (name VARCHAR(255) PRIMARY KEY, data BYTEA NOT NULL);
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
"""


def _v1_rows(keeper: CryptKeeper) -> list[tuple[str, dict[str, object]]]:
    return [
        (
            "INSERT INTO tokens (user, connection, fingerprint, data, reason, updated_at) "
            "VALUES (:u, 'sales', 'fp', :d, NULL, 1.0)",
            {"u": "alice", "d": keeper.encrypt(record(7).dumps())},
        ),
        (
            "INSERT INTO connections (name, data) VALUES ('c', :d)",
            {"d": b'{"connector": "bigquery", "project": "p"}'},
        ),
        ("INSERT INTO secrets (name, data) VALUES ('s', :d)", {"d": keeper.encrypt(b"pem")}),
    ]


def _check_migrated(store: SQLTokenStore) -> None:
    got = store.get_token("alice", "sales")
    assert got is not None and got.record is not None and got.version == 0
    assert got.record.access_token.endswith("-7")
    assert store.connection_defs() == {"c": {"connector": "bigquery", "project": "p"}}
    assert store.get_secret("s") == b"pem"
    # the new columns work on the old rows: a lease, compare-and-set, the kept identity
    assert store.take_lease("alice", "sales", 0, "me", time.time() + 30)
    assert store.put_token("alice", "sales", "fp", record(8), expect_version=0)
    assert store.drop_token("alice", "sales", "grant_revoked", expect_version=1)
    dropped = store.get_token("alice", "sales")
    assert dropped is not None and dropped.previous_identity == {"email": "alice@example.com"}
    with store.engine.connect() as conn:
        assert current_revision(conn) == HEAD
        assert conn.execute(sa.text("SELECT value FROM meta")).scalar() == "2"


def test_a_v1_sqlite_file_of_the_raw_store_migrates_in_place(
    tmp_path: Path, keeper: CryptKeeper
) -> None:
    path = tmp_path / "tokens.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(V1_SQLITE)
    for sql, params in _v1_rows(keeper):
        db.execute(sql, params)
    db.commit()
    db.close()
    store = open_store(path, keeper)
    _check_migrated(store)
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_a_v1_hub_database_migrates_in_place(
    new_pg_database: Callable[[], str], keeper: CryptKeeper
) -> None:
    url = new_pg_database()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for stmt in V1_POSTGRES.strip().split(";"):
            if stmt.strip():
                conn.execute(sa.text(stmt))
        for sql, params in _v1_rows(keeper):
            conn.execute(sa.text(sql.replace("(user,", '("user",')), params)
    engine.dispose()
    stores = []
    barrier = threading.Barrier(3)

    def start() -> None:  # replicas starting together migrate once
        barrier.wait()
        stores.append(open_store(url, keeper))

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stores) == 3
    _check_migrated(stores[0])
    for s in stores:
        s.close()


def test_lease_is_one_holder_at_a_time_across_processes(
    backend: Opener, keeper: CryptKeeper
) -> None:
    a, b = backend(keeper), backend(keeper)
    a.put_token("alice", "sales", "fp", record(1))
    v = a.get_token("alice", "sales").version  # type: ignore[union-attr]
    now = time.time()
    assert a.take_lease("alice", "sales", v, "a", now + 30)
    assert not b.take_lease("alice", "sales", v, "b", now + 30)
    seen = b.get_token("alice", "sales")
    assert seen is not None and seen.lease_until == pytest.approx(now + 30)
    b.release_lease("alice", "sales", "b")  # not b's: nothing happens
    assert not b.take_lease("alice", "sales", v, "b", now + 30)
    a.release_lease("alice", "sales", "a")
    assert b.take_lease("alice", "sales", v, "b", time.time() - 1)  # taken, already expired
    assert a.take_lease("alice", "sales", v, "a", now + 30)  # an expired lease is free
    # the holder stores its result only if the row is still the one it refreshed
    assert b.put_token("alice", "sales", "fp", record(2))  # e.g. a new consent meanwhile
    assert not a.put_token("alice", "sales", "fp", record(3), expect_version=v)
    assert not a.drop_token("alice", "sales", "grant_revoked", expect_version=v)
    now_stored = a.get_token("alice", "sales")
    assert now_stored is not None and now_stored.record is not None
    assert now_stored.record.access_token.endswith("-2") and now_stored.lease_until is None


def test_previous_identity_kept_unless_the_user_revoked(
    backend: Opener, keeper: CryptKeeper
) -> None:
    store = backend(keeper)
    for user in ("alice", "bob"):
        store.put_token(user, "sales", "fp", record(1))
    assert store.drop_token("alice", "sales", "grant_revoked")
    assert store.drop_connection_tokens("sales", "revoked") == 1  # bob's
    alice, bob = store.get_token("alice", "sales"), store.get_token("bob", "sales")
    assert alice is not None and alice.previous_identity == {"email": "alice@example.com"}
    assert bob is not None and bob.record is None and bob.previous_identity is None
    assert b"alice@example.com" not in raw_bytes(store)  # encrypted in the row
    store.put_token("alice", "sales", "fp", record(2))
    assert store.get_token("alice", "sales").previous_identity is None  # type: ignore[union-attr]
