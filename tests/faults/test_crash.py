"""SIGKILL of a real Jupyter server during 1,000 concurrent token writes and refreshes,
and encryption-key rotation under load.

Each round fires 1,000 operations at once at a ``python -m jupyter_server`` with the
extension: refreshes at the real IdP (``Broker.token`` for many users through a
test-only extension route, and the owner's token requests through the broker API) and
token writes for many users, then SIGKILLs the server at a random moment. After each
kill the store opens with ``open_store`` and the same key, every token present
decrypts and is complete (synthetic tokens carry their own checksum; refreshed ones are
the IdP's JWT for the right user), and every (user, connection) that had a token before
the round still has one. ``CONNAUTH_FAULTS_FULL=1`` runs 50 rounds (default 8).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from cryptography.fernet import Fernet

from tests.faults.harness import (
    CONNECTIONS,
    OWNER,
    JupyterProc,
    check_store,
    consent_users,
    make_burst,
    new_idp,
    run_burst,
)
from tests.idp_fixture import TestIdP, free_port

FULL = os.environ.get("CONNAUTH_FAULTS_FULL") == "1"
ROUNDS = 50 if FULL else 8
REAL_USERS = [OWNER, "bob", "carol", "dave", "erin", "frank"]
SYNTHETIC_USERS = [f"user{i:04d}" for i in range(400)]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800 if FULL else 240)]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[TestIdP, JupyterProc]]:
    port = free_port()
    idp = new_idp(tmp_path / "idp", port)
    idp.start()
    server = JupyterProc(tmp_path / "jupyter", idp, port=port)
    try:
        yield idp, server
    finally:
        server.kill()
        idp.close()


def seed(server: JupyterProc) -> None:
    """Real consents for a few users (every connection), and a first burst to completion:
    it writes the synthetic users' tokens and checks every operation succeeds."""
    consent_users(server, REAL_USERS)
    burst = make_burst(random.Random(0), REAL_USERS, SYNTHETIC_USERS, round_no=0)
    out = asyncio.run(run_burst(server, burst))
    assert out["churn"] == {"ok": len(burst.refresh), "written": len(burst.writes)}, out
    assert Counter(out["owner"]) == {"ok": len(burst.owner_calls)}, out["owner"][:3]


def test_sigkill_during_concurrent_writes_and_refreshes(stack: tuple[TestIdP, JupyterProc]):
    idp, server = stack
    key = Fernet.generate_key()
    real = set(REAL_USERS)
    server.start(key.decode())
    t0 = time.perf_counter()
    seed(server)
    calibration = time.perf_counter() - t0
    # how long one burst takes when nothing kills it (the kill lands inside that window)
    t0 = time.perf_counter()
    asyncio.run(run_burst(server, make_burst(random.Random(1), REAL_USERS, SYNTHETIC_USERS, 1)))
    burst_seconds = time.perf_counter() - t0
    server.kill()
    before = check_store(server.store_path, [key], real)
    assert len(before) > len(SYNTHETIC_USERS), len(before)
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    refreshes_at_start = idp.token_requests("refresh_token")
    mid_burst = 0
    written_in_kill_rounds = 0
    t_rounds = time.perf_counter()
    for round_no in range(2, ROUNDS + 2):
        server.start(key.decode())
        burst = make_burst(rng, REAL_USERS, SYNTHETIC_USERS, round_no)
        assert burst.ops == 1000
        started = time.time()
        kill_after = rng.uniform(0.05, 0.8 * burst_seconds)  # inside the burst
        out = asyncio.run(run_burst(server, burst, kill_after=kill_after))
        after = check_store(server.store_path, [key], real)
        lost = set(before) - set(after)
        assert not lost, f"round {round_no}: tokens lost by the kill: {sorted(lost)[:10]}"
        written = sum(1 for t in after.values() if t >= started)
        written_in_kill_rounds += written
        mid_burst += not out["completed_before_kill"]
        before = after
    rounds_seconds = time.perf_counter() - t_rounds
    refreshes = idp.token_requests("refresh_token") - refreshes_at_start
    # the kills landed while writes were going on, not only before or after them
    assert written_in_kill_rounds > 0 and refreshes > 0
    assert mid_burst >= ROUNDS * 3 // 4, f"only {mid_burst} of {ROUNDS} kills landed mid-burst"
    # the store still serves the server: it starts, the owner's token refreshes
    server.start(key.decode())
    r = httpx2.post(
        f"{server.base}connauth/api/connections/{CONNECTIONS[0]}/token",
        headers={"X-ConnAuth-Token": server.kernel_secret},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    server.stop()
    print(
        f"\ncrash test: {ROUNDS} rounds of 1,000 ops in {rounds_seconds:.1f} s "
        f"(seed {calibration:.1f} s, one burst {burst_seconds:.2f} s); "
        f"{mid_burst} kills mid-burst; {written_in_kill_rounds} rows committed in kill "
        f"rounds; {refreshes} refreshes at the IdP; {len(before)} tokens present at the end"
    )


def test_key_rotation_under_load(stack: tuple[TestIdP, JupyterProc]):
    """Add a new key in front while tokens are fetched and refreshed, re-encrypt the
    store during the load, then drop the old key: nothing is lost and every token
    decrypts with the new key alone."""
    _idp, server = stack
    old, new = Fernet.generate_key(), Fernet.generate_key()
    real = set(REAL_USERS)
    rng = random.Random(7)
    server.start(old.decode())
    seed(server)
    # an admin restart while the server is busy: load in flight, SIGTERM
    asyncio.run(
        run_burst(server, make_burst(rng, REAL_USERS, SYNTHETIC_USERS, 1), 0.2, graceful=True)
    )
    before = check_store(server.store_path, [old], real)

    server.start(f"{new.decode()};{old.decode()}")
    burst = make_burst(rng, REAL_USERS, SYNTHETIC_USERS, 2)

    async def load_with_reencrypt() -> tuple[dict[str, object], int]:
        from jupyter_connauth.broker.store import open_store
        from jupyter_connauth.core.crypto import CryptKeeper

        def reencrypt() -> int:
            time.sleep(0.05)  # once the burst is under way
            store = open_store(server.store_path, CryptKeeper([new, old]))
            try:
                return store.reencrypt()
            finally:
                store.close()

        out, n = await asyncio.gather(run_burst(server, burst), asyncio.to_thread(reencrypt))
        return out, n

    out, rotated = asyncio.run(load_with_reencrypt())
    assert rotated >= len(before)
    assert out["churn"] == {"ok": len(burst.refresh), "written": len(burst.writes)}, out
    assert Counter(out["owner"]) == {"ok": len(burst.owner_calls)}
    server.stop()

    # the old key dropped: everything decrypts with the new one alone
    after = check_store(server.store_path, [new], real)
    assert set(before) <= set(after)
    server.start(new.decode())
    burst = make_burst(rng, REAL_USERS, SYNTHETIC_USERS, 3)
    out = asyncio.run(run_burst(server, burst))
    # a token the new key could not decrypt would come back as consent_required
    assert out["churn"] == {"ok": len(burst.refresh), "written": len(burst.writes)}, out
    assert Counter(out["owner"]) == {"ok": len(burst.owner_calls)}
    server.stop()
    final = check_store(server.store_path, [new], real)
    assert set(before) <= set(final)
    assert "cannot be decrypted" not in server.log_tail(10**7)
