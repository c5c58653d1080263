"""Two service replicas sharing PostgreSQL: a state works on either replica, and a refresh
is single-flight across them (the store's advisory lock), against the real test IdP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography.fernet import Fernet

from jupyter_connauth.broker.broker import TokenGrant
from jupyter_connauth.broker.config import ConnAuth
from jupyter_connauth.broker.flows import FlowStart
from jupyter_connauth.broker.store import SQLTokenStore
from jupyter_connauth.core.crypto import CryptKeeper
from jupyter_connauth.hub.broker import HubBroker
from tests.hub.hub_fixture import replica_config
from tests.idp_fixture import TestIdP, default_client, headless_login

REDIRECT = "https://hub.example.com/services/connauth/oauth/connector/callback"
TTL, LEEWAY = 6, 5


@pytest.fixture
def replica_idp(tmp_path: Path) -> Any:
    idp = TestIdP(
        workdir=tmp_path / "idp",
        extra_scopes=["sql"],
        access_token_ttl=TTL,
        rotate_refresh_token=True,
        clients=[default_client([REDIRECT])],
    )
    idp.start()
    yield idp
    idp.close()


@pytest.fixture
def replica_db(new_pg_database: Callable[[], str]) -> str:
    return new_pg_database()


@asynccontextmanager
async def two_replicas(replica_idp: TestIdP, url: str) -> AsyncIterator[list[HubBroker]]:
    key = Fernet.generate_key()
    # refresh due LEEWAY s before expiry, whatever the TTL
    cfg = replica_config(replica_idp, refresh_leeway=LEEWAY, refresh_leeway_fraction=1.0)
    brokers = [
        HubBroker(
            ConnAuth(config=cfg), SQLTokenStore(url, CryptKeeper([key])), redirect_uri=REDIRECT
        )
        for _ in range(2)
    ]
    try:
        yield brokers
    finally:
        for b in brokers:
            await b.aclose()


async def test_state_from_one_replica_completes_on_the_other_once(
    replica_idp: TestIdP, replica_db: str
) -> None:
    async with two_replicas(replica_idp, replica_db) as replicas:
        await _state_on_either(*replicas)


async def _state_on_either(a: HubBroker, b: HubBroker) -> None:
    started = await a.token("alice", "sales")
    assert isinstance(started, FlowStart)
    callback = await asyncio.to_thread(headless_login, started.authorize_url, "alice")
    params = dict(parse_qsl(urlsplit(callback).query))
    flow = await b.callback(params, None)
    assert flow.status == "complete" and flow.user == "alice"
    assert a.flow_status("alice", flow.flow_id).status == "complete"
    with pytest.raises(Exception, match="unknown or was already used"):
        await a.callback(params, None)
    grant = await a.token("alice", "sales")
    assert isinstance(grant, TokenGrant) and grant.identity == "alice@example.com"
    other = await b.token("bob", "sales")
    assert isinstance(other, FlowStart)  # bob does not get alice's grant


async def test_refresh_is_single_flight_across_replicas(
    replica_idp: TestIdP, replica_db: str
) -> None:
    async with two_replicas(replica_idp, replica_db) as replicas:
        await _single_flight(replica_idp, *replicas)


async def _single_flight(replica_idp: TestIdP, a: HubBroker, b: HubBroker) -> None:
    replicas = [a, b]
    started = await a.token("alice", "sales")
    assert isinstance(started, FlowStart)
    callback = await asyncio.to_thread(headless_login, started.authorize_url, "alice")
    await a.callback(dict(parse_qsl(urlsplit(callback).query)), None)
    first = await b.token("alice", "sales")
    assert isinstance(first, TokenGrant) and first.expires_at is not None
    replica_idp.set_faults(delay_ms=300)  # widen the race window
    for _round in range(2):  # twice: the second uses the rotated refresh token
        await asyncio.sleep(max(0.0, first.expires_at - LEEWAY - time.time() + 0.2))
        answers = await asyncio.gather(
            *(r.token("alice", "sales") for r in replicas for _ in range(10))
        )
        assert all(isinstance(x, TokenGrant) for x in answers)
        tokens = {x.access_token for x in answers if isinstance(x, TokenGrant)}
        assert len(tokens) == 1 and first.access_token not in tokens
        first = answers[0]  # type: ignore[assignment]
    assert replica_idp.token_requests("refresh_token") == 2
    assert replica_idp.stats()["token_errors"].get("refresh_token", 0) == 0


async def test_more_refreshes_at_once_than_pool_connections(
    replica_idp: TestIdP, replica_db: str
) -> None:
    """Refresh locks hold a connection for an IdP round trip: with more users refreshing
    at once than the pool has connections, reads and writes must still get theirs."""
    from jupyter_connauth.core.tokens import TokenRecord

    async with two_replicas(replica_idp, replica_db) as (a, _b):
        small = SQLTokenStore(replica_db, a.store.crypt, pool_size=1, max_overflow=1)  # type: ignore[attr-defined]
        a.store.close()
        a.store = a.registry.store = a.flows.store = a.refresher.store = small
        spec = a.connection("sales")
        users = [f"user{i}" for i in range(6)]
        for user in users:  # due now; the IdP does not know these refresh tokens
            small.put_token(user, "sales", spec.fingerprint, TokenRecord("x", time.time(), "r"))
        replica_idp.set_faults(delay_ms=300)
        answers = await asyncio.wait_for(
            asyncio.gather(*(a.token(u, "sales") for u in users)), timeout=30
        )
        assert all(isinstance(x, FlowStart) and x.flow.reason == "grant_revoked" for x in answers)
