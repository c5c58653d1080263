"""Two real Jupyter servers of one user sharing one SQLite token store (two ``jupyter
lab``\\ s, or JupyterLab and a VS Code kernel's broker), an IdP that rotates refresh
tokens: each expiry is refreshed once, by one of them, and neither ever spends a refresh
token the other already used (the IdP would answer invalid_grant and revoke the grant)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.fernet import Fernet

from tests.faults.harness import CONNECTIONS, OWNER, JupyterProc
from tests.idp_fixture import TestIdP, default_client, free_port

TTL = 4  # seconds an access token lives; half of it is the effective leeway
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@dataclass
class SharedStoreServer(JupyterProc):
    shared_store: Path = field(default_factory=Path)
    refresh_leeway: float = 60.0  # the defaults: 60 s leeway, at most half the lifetime
    refresh_leeway_fraction: float = 0.5

    @property
    def store_path(self) -> Path:
        return self.shared_store


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[TestIdP, list[SharedStoreServer]]]:
    ports = [free_port(), free_port()]
    idp = TestIdP(
        workdir=tmp_path / "idp",
        clients=[default_client([f"http://127.0.0.1:{p}/oauth/connector/callback" for p in ports])],
        extra_scopes=["sql"],
        access_token_ttl=TTL,
        rotate_refresh_token=True,
    )
    idp.start()
    store = tmp_path / "shared" / "tokens.sqlite3"
    procs = [
        SharedStoreServer(tmp_path / f"jupyter{i}", idp, port=p, shared_store=store)
        for i, p in enumerate(ports)
    ]
    try:
        yield idp, procs
    finally:
        for p in procs:
            p.kill()
        idp.close()


async def fetch_tokens(procs: list[SharedStoreServer], seconds: float) -> list[dict[str, Any]]:
    """Every 0.1 s, 4 concurrent token requests at each server, for ``seconds``."""
    answers: list[dict[str, Any]] = []
    url = "{}connauth/api/connections/" + CONNECTIONS[0] + "/token"
    async with httpx2.AsyncClient(timeout=60) as client:

        async def one(proc: SharedStoreServer) -> None:
            r = await client.post(
                url.format(proc.base), headers={"X-ConnAuth-Token": proc.kernel_secret}
            )
            answers.append({"http": r.status_code, **r.json()})

        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            await asyncio.gather(*(one(p) for p in procs for _ in range(4)))
            await asyncio.sleep(0.1)
    return answers


def test_two_servers_sharing_a_store_refresh_each_expiry_once(servers):
    idp, (a, b) = servers
    key = Fernet.generate_key().decode()
    a.start(key)
    b.start(key)
    with httpx2.Client(timeout=10, trust_env=False, follow_redirects=False) as http:
        a.consent(OWNER, CONNECTIONS[0], http)
    idp.set_faults(delay_ms=200)  # an IdP round trip long enough for the two to overlap
    seconds = 3.5 * TTL / 2  # about three expiries (refresh every TTL/2)
    answers = asyncio.run(fetch_tokens([a, b], seconds))
    outcome = Counter((x["http"], x.get("status"), x.get("reason")) for x in answers)
    assert outcome == {(200, "ok", None): len(answers)}, outcome
    stats = idp.stats()
    assert stats["token_errors"].get("refresh_token", 0) == 0, stats["token_log"][-5:]
    refreshes = stats["token_requests"]["refresh_token"]
    tokens = {x["access_token"] for x in answers}
    # one refresh per expiry, by one server, and every refreshed token was used
    assert 2 <= refreshes <= 5, refreshes
    assert len(tokens) == refreshes + 1, (len(tokens), refreshes)
    assert stats["authorization_requests"] == 1  # the consent, and no other
    for proc in (a, b):
        proc.stop()
