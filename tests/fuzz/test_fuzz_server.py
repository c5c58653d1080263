"""Fuzzing the Jupyter server extension: the broker API and the OAuth callback.

A real Jupyter server with the extension, the real test IdP and a local Databricks
warehouse (so Test and browse run real driver calls). The owner (alice) has consented
to ``lake`` first, so there is a real access token, refresh token and client secret to
look for. Then schemathesis (from docs/openapi.yaml) and hypothesis send generated
requests with the kernel token, Jupyter's token, bogus credentials and none. Checks:
no 5xx; no refresh token, client secret, kernel token or Jupyter token in any response,
and the access token only in the owner's own ``POST connections/lake/token``; the store
holds no new token afterwards (the fuzzer cannot complete a consent without a real IdP
code); the server still answers.

~1,500 requests by default; ``CONNAUTH_FUZZ_FULL=1`` sends 10,000.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.engine import (
    FULL,
    Auth,
    Checker,
    Sender,
    api_requests,
    budget,
    callback_requests,
    run_list,
    run_raw,
    run_schemathesis,
    seed_requests,
    timed,
)
from tests.idp_fixture import TestIdP
from tests.servers.databricks.fixture import DatabricksServer
from tests.test_consent_flow import api
from tests.warehouses import DBX, databricks_connection, trusting

pytest.importorskip("schemathesis")
pytestmark = pytest.mark.timeout(1800 if FULL else 240)

TOTAL = budget(1_500, 10_000)


@pytest.fixture
def idp_config() -> dict[str, Any]:
    # Long-lived access tokens: no refresh during the run, so any change of the stored
    # token is the fuzzer's doing.
    return {"resources": {DBX: {"audience": DBX, "scopes": ["sql"]}}, "access_token_ttl": 7200}


@pytest.fixture
def warehouse(idp: TestIdP) -> Iterator[DatabricksServer]:
    users = {"alice@example.com": {"name": "Alice"}}
    sales = [["EU", "120.50", "alice@example.com"]]
    with DatabricksServer(trusting(idp, DBX, users=users, sales_rows=sales)) as srv:
        yield srv


@pytest.fixture
def connections(warehouse: DatabricksServer) -> dict[str, Any]:
    return {
        "lake": databricks_connection(
            warehouse,
            scopes="sql offline_access",
            resource=DBX,
            driver_options={"_retry_stop_after_attempts_count": 1},
        ),
        "sales": {
            "connector": "databricks",
            "server_hostname": "127.0.0.1:9",
            "http_path": "/sql/1.0/warehouses/abc",
            "scopes": "sql offline_access",
        },
    }


def token_rows(store_path: Path) -> dict[tuple[str, str], tuple[str, bytes | None]]:
    db = sqlite3.connect(store_path)
    try:
        rows = db.execute("SELECT user, connection, fingerprint, data FROM tokens").fetchall()
    finally:
        db.close()
    return {(u, c): (f, d) for u, c, f, d in rows}


async def test_fuzz_server(
    jp_fetch: Any,
    jp_serverapp: Any,
    jp_auth_header: dict[str, str],
    server_url: str,
    consent: Any,
    broker: Any,
    idp: TestIdP,
    store_path: Path,
    kernel_env: dict[str, str],
) -> None:
    # A real grant for the owner first.
    first = await api(jp_fetch, "connections", "lake", "token", method="POST")
    page = await consent(first["authorize_url"], "alice")
    assert page.status_code == 200, page.text
    grant = await api(jp_fetch, "connections", "lake", "token", method="POST")
    assert grant["status"] == "ok"
    record = broker.store.get_token("alice", "lake").record
    assert record.refresh_token
    created = await jp_fetch(
        "connauth",
        "api",
        "connections",
        method="POST",
        body=json.dumps({"name": "fz-1", "connector": "bigquery", "project": "p"}),
    )
    assert created.code == 201  # an API connection, so edits reach real code
    before = token_rows(store_path)

    kernel = kernel_env["token"]
    jupyter = jp_auth_header["Authorization"].split(" ", 1)[1]
    checker = Checker(
        forbidden={
            "refresh_token": record.refresh_token,
            "client_secret": str(idp.client_secret),
            "kernel_token": kernel,
            "jupyter_token": jupyter,
        },
        echoed_ok={"jupyter_token": {"jupyter"}},
        access_tokens={"access_token": record.access_token},
        token_owner={"access_token": "alice"},
        token_routes=[("alice", "POST", r"/connauth/api/connections/lake/(token|rejected)$")],
    )
    auths = [
        Auth("kernel", {"X-ConnAuth-Token": kernel}, True, "alice"),
        Auth("jupyter", {"Authorization": f"token {jupyter}"}, True, "alice"),
        Auth("none", {}, False),
        Auth("bad-kernel", {"X-ConnAuth-Token": kernel[:-2] + "xx"}, False),
        Auth("bad-jupyter", {"Authorization": f"token {jupyter[:-2]}xx"}, False),
        Auth("empty-kernel", {"X-ConnAuth-Token": ""}, False),
        Auth("kernel-as-bearer", {"Authorization": f"Bearer {kernel}"}, False),
        Auth("cookie-junk", {"Cookie": "_xsrf=x; username-127-0-0-1=forged"}, False),
    ]

    weighted = [a for a in auths if a.valid] * 3 + auths

    def guard(auth: Auth, method: str, path: str) -> str:
        # Keep the seeded grant for the whole run (revoking it is covered elsewhere);
        # every other revoke, including of other names, is fuzzed.
        # The owner is the admin of a single-user server: the admin revokes (of every
        # user, or of alice) would drop it too, so they aim at nobody's grant here (the
        # hub's fuzz test covers them against other users' grants).
        if auth.valid and method == "POST":
            bare = path.split("?", 1)[0].rstrip("/")
            if bare.endswith("/lake/revoke"):
                return path.replace("/lake/revoke", "/lake-x/revoke")
            if bare.endswith("/admin/revoke"):
                return path.replace("/admin/revoke", "/admin/revoke-x")
            if "/admin/users/" in bare and bare.endswith("/revoke"):
                return path.replace("/admin/users/", "/admin/users/x-", 1)
        return path

    sender = Sender(server_url, checker, guard)
    known = ["lake", "sales", "nope", "LAKE", "lake.", "fz-1"]
    api_root = "/connauth/api/"

    def fuzz() -> dict[str, Any]:
        try:

            def spec_part() -> int:
                n = run_schemathesis(sender, weighted, TOTAL // 5)
                for name in ("lake", "sales"):  # existing connections, not only 404s
                    n += run_schemathesis(
                        sender, weighted, TOTAL // 10, path_parameters={"name": name}
                    )
                return n

            seeds = seed_requests(auths[:3], api_root, ["fz-1", "lake"], "lake")
            seed_n, seed_t = timed(lambda: run_list(sender, seeds))
            spec_n, spec_t = timed(spec_part)
            raw_n, raw_t = timed(
                lambda: run_raw(sender, api_requests(weighted, known, api_root), TOTAL * 2 // 5)
            )
            # Real states (harvested from the answers above) with forged codes, forged
            # states, bad UTF-8, repeated and oversized parameters.
            cb = callback_requests(
                auths, lambda: list(checker.states), idp.issuer, "/oauth/connector/callback"
            )
            cb_n, cb_t = timed(lambda: run_raw(sender, cb, TOTAL - checker.requests))
            # hypothesis stops early when a strategy is exhausted: top up to the budget.
            while checker.requests < TOTAL:
                run_raw(sender, api_requests(auths, known, api_root), TOTAL - checker.requests)
            return {
                "seeds": (seed_n, round(seed_t, 1)),
                "schemathesis": (spec_n, round(spec_t, 1)),
                "callback": (cb_n, round(cb_t, 1)),
                "raw_api": (raw_n, round(raw_t, 1)),
            }
        finally:
            sender.close()

    started = time.perf_counter()
    parts = await asyncio.to_thread(fuzz)
    elapsed = time.perf_counter() - started
    summary = f"{checker.report()}\nparts (requests, s): {parts}\ntotal {elapsed:.1f} s"
    print(summary)  # the numbers, with pytest -s

    assert checker.requests >= TOTAL
    assert not checker.findings, summary

    # The server still answers, and the grant is the one the consent stored.
    info = await jp_fetch("connauth", "api", "info")
    assert info.code == 200 and json.loads(info.body)["user"] == "alice"
    after = token_rows(store_path)
    for key, (fingerprint, data) in after.items():
        if data is not None:  # a live token: it must be one that existed, unchanged
            assert before.get(key) == (fingerprint, data), key
    assert after[("alice", "lake")] == before[("alice", "lake")]
    still = await api(jp_fetch, "connections", "lake", "token", method="POST")
    assert still["status"] == "ok" and still["access_token"] == record.access_token
