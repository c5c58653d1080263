# ruff: noqa: F811 - the fixtures imported from tests.warehouses are parameters
"""The whole path for Databricks SQL: magics → broker → real IdP → the official driver
→ a local warehouse speaking the driver's Thrift protocol and checking tokens."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ipython_shell import run_signed_in
from tests.servers.databricks.fixture import DatabricksServer
from tests.test_consent_flow import api
from tests.warehouses import DBX, databricks_connection, idp_config, warehouse  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def connections(warehouse: DatabricksServer) -> dict[str, Any]:
    base = databricks_connection(warehouse)
    return {
        "lake": {**base, "scopes": "sql offline_access", "resource": DBX},
        "lake_tx": {**base, "auth": "token-exchange", "scopes": "sql", "resource": DBX},
        "lake_obo": {**base, "auth": "on-behalf-of", "scopes": f"{DBX}/.default"},
    }


async def test_cell_waits_for_consent_then_shows_rows(shell, warehouse):
    cell = "%%sql_connector lake -o df\nSELECT region, amount, owner FROM main.demo.sales"
    await run_signed_in(shell, cell)
    df = shell.ip.user_ns["df"]
    assert set(df["owner"]) == {"alice@example.com"} and len(df) == 2
    sessions = warehouse.stats()["sessions_opened"]
    r = await shell.run(
        '%%sql_connector lake -o eu --params \'{"r": "EU"}\'\n'
        "SELECT * FROM main.demo.sales WHERE region = :r"
    )
    assert r.error_in_exec is None, r.error_in_exec
    assert len(shell.ip.user_ns["eu"]) == 1
    assert warehouse.stats()["sessions_opened"] == sessions  # the session is reused


@pytest.mark.parametrize("name", ["lake_tx", "lake_obo"])
async def test_pass_through_reaches_the_warehouse_as_the_user(
    shell,
    jp_fetch,
    consent,
    idp,
    name,
):
    answer = await api(jp_fetch, "connections", name, "token", method="POST")
    await consent(answer["authorize_url"], "bob")
    r = await shell.run(f"%sql_connector whoami {name}")
    assert r.error_in_exec is None, r.error_in_exec
    assert "bob@example.com" in shell.text()
    r = await shell.run(f"%%sql_connector {name} -o mine\nSELECT owner FROM main.demo.sales")
    assert set(shell.ip.user_ns["mine"]["owner"]) == {"bob@example.com"}
    assert "Authorize" not in shell.text()


async def test_a_rejected_token_says_what_to_fix(shell, jp_fetch, consent, broker):
    answer = await api(jp_fetch, "connections", "lake", "token", method="POST")
    await consent(answer["authorize_url"], "carol")  # carol is no user of the workspace
    r = await shell.run("%sql_connector whoami lake")
    err = r.error_in_exec
    assert err is not None and hasattr(err, "_render_traceback_")
    assert "workspace" in str(err)
    token = broker.store.get_token("alice", "lake").record.access_token
    assert token not in str(err)
