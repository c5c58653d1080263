"""A warehouse killed (SIGKILL) while a query runs through ``%%sql_connector``: one clear
error naming the warehouse, the kernel still usable, the stored token untouched, and the
next query after the warehouse is back works (no kernel restart, no re-consent)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.idp_fixture import TestIdP, free_port
from tests.servers.databricks.dbx_tls import make_self_signed
from tests.servers.databricks.fixture import DatabricksServer
from tests.test_consent_flow import api
from tests.warehouses import DBX, databricks_at, trusting

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

USERS = {"alice@example.com": {"name": "Alice"}}
SALES = [["EU", "120.50", "alice@example.com"], ["EU", "300.00", "bob@example.com"]]
LONG_QUERY = "SELECT count(*) AS n FROM range(100000000000) t(a) WHERE a % 7 = 3"


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {"resources": {DBX: {"audience": DBX, "scopes": ["sql"]}}, "access_token_ttl": 600}


@pytest.fixture
def warehouse_config(idp: TestIdP, tmp_path: Path) -> dict[str, Any]:
    """Fixed port and certificate, so a restarted warehouse is the same warehouse."""
    (tmp_path / "tls").mkdir()
    cert, key = make_self_signed(str(tmp_path / "tls"))
    return trusting(
        idp,
        DBX,
        users=USERS,
        sales_rows=SALES,
        port=free_port(),
        tls_cert_file=cert,
        tls_key_file=key,
    )


@pytest.fixture
def warehouse(warehouse_config: dict[str, Any]) -> Iterator[list[DatabricksServer]]:
    """A list so the test can swap in the restarted server; all are stopped at the end."""
    servers = [DatabricksServer(warehouse_config).start()]
    try:
        yield servers
    finally:
        for srv in servers:
            srv.stop()


@pytest.fixture
def connections(warehouse_config: dict[str, Any]) -> dict[str, Any]:
    host = f"127.0.0.1:{warehouse_config['port']}"
    lake = databricks_at(
        host, warehouse_config["tls_cert_file"], scopes="sql offline_access", resource=DBX
    )
    return {"lake": lake}


async def first_query(shell: Any, jp_fetch: Any, consent: Any, broker: Any) -> Any:
    """alice consents to ``lake`` and runs a first query; her stored token then."""
    answer = await api(jp_fetch, "connections", "lake", "token", method="POST")
    await consent(answer["authorize_url"], "alice")
    r = await shell.run("%%sql_connector lake\nSELECT 1 AS x")
    assert r.error_in_exec is None, r.error_in_exec
    return broker.store.get_token("alice", "lake")


async def test_warehouse_killed_mid_query(
    warehouse, shell, jp_fetch, consent, broker, warehouse_config
):
    before = await first_query(shell, jp_fetch, consent, broker)

    srv = warehouse[0]
    statements = srv.stats()["statements"]
    running = asyncio.ensure_future(shell.run(f"%%sql_connector lake\n{LONG_QUERY}"))
    deadline = time.monotonic() + 30
    while srv.stats()["statements"] == statements:  # the query is running at the warehouse
        assert time.monotonic() < deadline and not running.done(), "the query never started"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert srv._proc is not None
    os.kill(srv._proc.pid, signal.SIGKILL)
    started = time.monotonic()
    result = await asyncio.wait_for(running, 60)
    failed_after = time.monotonic() - started
    srv.stop()

    err = result.error_in_exec
    assert err is not None, "the query succeeded against a dead warehouse"
    assert hasattr(err, "_render_traceback_"), repr(err)  # one message, not a traceback
    text = str(err)
    host = f"127.0.0.1:{warehouse_config['port']}"
    assert "Databricks" in text and host in text, text
    assert before.record.access_token not in text + shell.text()
    assert failed_after < 30, f"the driver retried for {failed_after:.0f} s"

    # the kernel is still usable
    r = await shell.run("answer = 40 + 2")
    assert r.error_in_exec is None and shell.ip.user_ns["answer"] == 42

    # the stored token is untouched: no refresh, no drop, not rewritten
    after = broker.store.get_token("alice", "lake")
    assert after.record is not None
    assert after.record.access_token == before.record.access_token
    assert after.record.refresh_token == before.record.refresh_token
    assert after.updated_at == before.updated_at

    # the warehouse comes back (same host and port): the next query works
    warehouse.append(DatabricksServer(warehouse_config).start())
    shell.outputs.clear()
    r = await shell.run("%%sql_connector lake -o df\nSELECT owner FROM main.demo.sales")
    assert r.error_in_exec is None, r.error_in_exec
    assert set(shell.ip.user_ns["df"]["owner"]) == {"alice@example.com"}
    assert "Authorize" not in shell.text()


async def test_warehouse_restarted_between_queries(
    warehouse, shell, jp_fetch, consent, broker, warehouse_config
):
    """The warehouse dies and comes back while the kernel is idle: its driver session is
    gone, so the next query reconnects once by itself."""
    before = await first_query(shell, jp_fetch, consent, broker)
    srv = warehouse[0]
    assert srv._proc is not None
    os.kill(srv._proc.pid, signal.SIGKILL)
    srv.stop()
    warehouse.append(DatabricksServer(warehouse_config).start())
    r = await shell.run("%%sql_connector lake -o df\nSELECT owner FROM main.demo.sales")
    assert r.error_in_exec is None, r.error_in_exec
    assert set(shell.ip.user_ns["df"]["owner"]) == {"alice@example.com"}
    assert warehouse[1].stats()["sessions_opened"] == 1
    after = broker.store.get_token("alice", "lake")
    assert after.updated_at == before.updated_at
