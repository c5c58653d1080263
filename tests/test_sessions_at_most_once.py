"""A statement is never sent twice: when the warehouse rejects the credential after the
statement was submitted, the error is reported (with its fix) and nothing is retried.

The IdP issues 3-second access tokens; the local Databricks warehouse checks the bearer
on every request, so a statement that runs longer than that gets HTTP 401 while the
driver polls for its result, after the warehouse has started it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.idp_fixture import TestIdP
from tests.servers.databricks.fixture import DatabricksServer
from tests.test_sessions_kernel import authorize, lake
from tests.test_stack_databricks import DBX, SALES, USERS

pytestmark = pytest.mark.timeout(240)

#: Seconds of DuckDB work (md5 of 60M rows: ~10 s here), well past the 3-s token.
SLOW = "SELECT max(md5(CAST(i AS VARCHAR))) AS m FROM range(60000000) t(i)"


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {"resources": {DBX: {"audience": DBX, "scopes": ["sql"]}}, "access_token_ttl": 3}


@pytest.fixture
def warehouse(idp: TestIdP) -> Iterator[DatabricksServer]:
    config = {
        "jwks_url": idp.discovery()["jwks_uri"],
        "issuer": idp.issuer,
        "audience": DBX,
        "users": USERS,
        "sales_rows": SALES,
    }
    with DatabricksServer(config) as srv:
        yield srv


@pytest.fixture
def connections(warehouse: DatabricksServer) -> dict[str, Any]:
    return {"lake": lake(warehouse)}


async def test_auth_error_after_submission_is_not_retried(shell, jp_fetch, consent, warehouse):
    await authorize(jp_fetch, consent, "lake", "alice")
    before = warehouse.stats()
    r = await shell.run(f"%%sql_connector lake -o slow\n{SLOW}")
    after = warehouse.stats()
    assert after["auth_401"] > before["auth_401"], "the token did not expire mid-statement"
    assert after["statements"] == before["statements"] + 1  # ran once, not again
    err = r.error_in_exec
    assert err is not None and hasattr(err, "_render_traceback_"), err
    assert "not run again" in str(err)
    assert "slow" not in shell.ip.user_ns

    # the session was dropped: the next query reconnects with a fresh token and works
    r = await shell.run("%%sql_connector lake -o df\nSELECT owner FROM main.demo.sales")
    assert r.error_in_exec is None, r.error_in_exec
    assert set(shell.ip.user_ns["df"]["owner"]) == {"alice@example.com"}
    assert warehouse.stats()["sessions_opened"] == after["sessions_opened"] + 1
