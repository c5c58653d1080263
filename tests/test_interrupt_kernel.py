"""Ctrl-C (the notebook's stop button, through the server's interrupt API) in a real
kernel: during the wait for consent and during a query, the cell ends with one line,
never a traceback, and the query is cancelled at the local Databricks warehouse."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.idp_fixture import TestIdP
from tests.kernel_session import KernelSession
from tests.servers.databricks.fixture import DatabricksServer
from tests.warehouses import DBX, SALES, USERS, idp_config, lake, trusting  # noqa: F401

#: Databricks holds ExecuteStatement's answer while it waits for direct results; the
#: interrupt below lands in that wait, before the driver knows the statement's id.
DIRECT_RESULTS_WAIT_S = 3.0

pytestmark = pytest.mark.timeout(240)

# a statement that runs for minutes in the local warehouse (DuckDB) unless cancelled
SLOW = "SELECT count(*) FROM range(200000) a(x), range(200000) b(y) WHERE x + y < 0"


@pytest.fixture
def warehouse(idp: TestIdP) -> Iterator[DatabricksServer]:
    config = trusting(
        idp, DBX, users=USERS, sales_rows=SALES, direct_results_wait_s=DIRECT_RESULTS_WAIT_S
    )
    with DatabricksServer(config) as srv:
        yield srv


@pytest.fixture
def connections(warehouse: DatabricksServer) -> dict[str, Any]:
    return {"lake": lake(warehouse)}


def one_line(cell: Any) -> str:
    assert cell.status == "error" and cell.error is not None
    lines = cell.error["traceback"]
    assert len(lines) == 1, lines
    return str(lines[0])


async def test_ctrl_c_is_one_line(jp_fetch, jp_serverapp, jp_auth_header, warehouse):
    kernel = KernelSession(jp_fetch, jp_serverapp, jp_auth_header)
    async with kernel:
        await kernel.ok("%load_ext jupyter_connauth")
        # 1. waiting for consent: nothing ran
        running = asyncio.ensure_future(
            kernel.run("%%sql_connector lake\nSELECT 1 AS one", consent=False)
        )
        await kernel.interrupt_when(running, "Waiting for you to sign in")
        cell = await running
        assert "cancelled while waiting for consent; nothing ran" in one_line(cell)
        assert warehouse.stats()["statements"] == 0
        assert "/auth?" not in str(cell.outputs[-2:])  # the balloon dropped its link

        # 2. during a query, even before the warehouse has answered ExecuteStatement:
        # cancelled at the warehouse once its answer names the statement
        await kernel.ok("%%sql_connector lake\nSELECT 1 AS one")  # consent (signs in)
        running = asyncio.ensure_future(kernel.run(f"%%sql_connector lake\n{SLOW}"))
        await kernel.interrupt_when(running, "running query", after=1.0)
        cell = await running
        assert "query cancelled at the warehouse" in one_line(cell)
        assert warehouse.stats()["cancels"] >= 1

        # 3. from Python: connect() waiting for consent
        await kernel.ok("%sql_connector revoke lake")
        running = asyncio.ensure_future(
            kernel.run("from jupyter_connauth import connect\nc = connect('lake')", consent=False)
        )
        await kernel.interrupt_when(running, "Waiting for you to sign in")
        cell = await running
        assert cell.status == "error" and "nothing ran" in cell.text
        assert len([t for t in cell.error["traceback"] if "File " in t]) <= 2, cell.text
