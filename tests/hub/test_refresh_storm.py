"""A morning refresh storm on PostgreSQL: more users refresh at once, through two
service replicas, than the database has connections. Each user's token is refreshed
once (the replicas share a lease per row) and no connection is held while the IdP
answers, so the storm needs a handful of connections, not one per refreshing user."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography.fernet import Fernet

from jupyter_connauth.broker.broker import Broker, TokenGrant
from jupyter_connauth.broker.config import ConnAuth
from jupyter_connauth.broker.flows import FlowStart
from jupyter_connauth.broker.store import open_store
from jupyter_connauth.core.crypto import CryptKeeper
from tests.hub.hub_fixture import replica_config
from tests.hub.pg import pg_bin, running_postgres
from tests.idp_fixture import TestIdP, default_client, headless_login

REDIRECT = "https://hub.example.com/services/connauth/oauth/connector/callback"
MAX_CONNECTIONS = 20
USERS = 100

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def small_postgres() -> Iterator[str]:
    if not pg_bin("initdb"):
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with running_postgres(f"-c max_connections={MAX_CONNECTIONS}") as url:
        yield url


@pytest.fixture
def storm_idp(tmp_path: Path) -> Iterator[TestIdP]:
    idp = TestIdP(
        workdir=tmp_path / "idp",
        extra_scopes=["sql"],
        access_token_ttl=300,
        clients=[default_client([REDIRECT])],
    )
    idp.start()
    yield idp
    idp.close()


def replica(idp: TestIdP, url: str, key: bytes) -> Broker:
    cfg = replica_config(idp)
    return Broker(ConnAuth(config=cfg), open_store(url, CryptKeeper([key])), redirect_uri=REDIRECT)


async def seed(broker: Broker, users: list[str]) -> None:
    """alice consents once; every user gets a copy of her grant, due for refresh now (the
    IdP does not rotate refresh tokens here, so each copy refreshes for real)."""
    started = await broker.token("alice", "sales")
    assert isinstance(started, FlowStart)
    callback = await asyncio.to_thread(headless_login, started.authorize_url, "alice")
    await broker.callback(dict(parse_qsl(urlsplit(callback).query)), None)
    stored = broker.store.get_token("alice", "sales")
    assert stored is not None and stored.record is not None
    fp = broker.connection("sales").fingerprint
    now = time.time()  # obtained 5 minutes ago, expiring in 30 s
    due = dataclasses.replace(stored.record, expires_at=now + 30, obtained_at=now - 300)
    for user in users:
        broker.store.put_token(user, "sales", fp, due)


async def storm(small_postgres: str, idp: TestIdP) -> dict[str, Any]:
    key = Fernet.generate_key()
    replicas = [replica(idp, small_postgres, key) for _ in range(2)]
    users = [f"user{i:03d}" for i in range(USERS)]
    try:
        await seed(replicas[0], users)
        idp.reset_stats()
        idp.set_faults(delay_ms=500)  # every refresh in flight at once
        t0 = time.monotonic()
        answers = await asyncio.wait_for(
            asyncio.gather(
                *(r.token(u, "sales") for u in users for r in replicas), return_exceptions=True
            ),
            timeout=120,
        )
        return {"answers": answers, "seconds": time.monotonic() - t0}
    finally:
        for r in replicas:
            await r.aclose()


def test_refresh_storm_beyond_max_connections(small_postgres: str, storm_idp: TestIdP) -> None:
    out = asyncio.run(storm(small_postgres, storm_idp))
    kinds = Counter(type(a).__name__ for a in out["answers"])
    assert kinds == {"TokenGrant": 2 * USERS}, [
        repr(a)[:200] for a in out["answers"] if not isinstance(a, TokenGrant)
    ][:3]
    stats = storm_idp.stats()
    assert stats["token_requests"].get("refresh_token") == USERS  # once per user
    assert stats["token_errors"].get("refresh_token", 0) == 0
    # both replicas answered each user with the one refreshed token
    by_user: dict[str, set[str]] = {}
    for i, a in enumerate(out["answers"]):
        assert isinstance(a, TokenGrant)
        by_user.setdefault(f"user{i // 2:03d}", set()).add(a.access_token)
    assert all(len(tokens) == 1 for tokens in by_user.values())
