"""The SQLAlchemy token store: the SQLite store's behaviours, on SQLite and on PostgreSQL,
plus what several replicas sharing PostgreSQL need (one winner per state, a refresh lock)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from jupyter_connauth.broker.sql_store import SCHEMA_VERSION, SQLTokenStore
from jupyter_connauth.broker.store import SQLiteTokenStore, TokenStore
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

    def open_store(crypt: CryptKeeper) -> SQLTokenStore:
        store = SQLTokenStore(url, crypt)
        opened.append(store)
        return store

    yield open_store
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


def test_schema_version_and_newer_schema_refused(backend: Opener, keeper: CryptKeeper) -> None:
    store = backend(keeper)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION  # idempotent
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE meta SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(ConfigError, match="newer than this"):
        backend(keeper)


def test_opens_a_single_user_sqlite_store(tmp_path: Path, keeper: CryptKeeper) -> None:
    path = tmp_path / "tokens.sqlite3"
    legacy = SQLiteTokenStore(path, keeper)
    legacy.put_token("alice", "sales", "fp", record(7))
    legacy.put_connection_def("c", {"connector": "bigquery", "project": "p"})
    legacy.close()
    store = SQLTokenStore(f"sqlite:///{path}", keeper)
    got = store.get_token("alice", "sales")
    assert got is not None and got.record is not None
    assert got.record.access_token.endswith("-7")
    assert store.connection_defs() == {"c": {"connector": "bigquery", "project": "p"}}
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


async def test_refresh_lock_is_exclusive_across_replicas(
    new_pg_database: Callable[[], str], keeper: CryptKeeper
) -> None:
    url = new_pg_database()
    a, b = SQLTokenStore(url, keeper), SQLTokenStore(url, keeper)
    inside: list[str] = []
    overlap = False

    async def hold(store: SQLTokenStore, who: str) -> None:
        nonlocal overlap
        async with store.refresh_lock("alice", "sales"):
            overlap = overlap or bool(inside)
            inside.append(who)
            await asyncio.sleep(0.2)
            inside.remove(who)

    t0 = time.monotonic()
    await asyncio.gather(hold(a, "a"), hold(b, "b"), hold(a, "a2"))
    assert not overlap and time.monotonic() - t0 >= 0.6
    # Another (user, connection) is not blocked by it.
    async with a.refresh_lock("alice", "sales"):
        await asyncio.wait_for(_enter(b, "bob", "sales"), 2)
    a.close()
    b.close()


async def _enter(store: SQLTokenStore, user: str, connection: str) -> None:
    async with store.refresh_lock(user, connection):
        pass
