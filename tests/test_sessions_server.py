# ruff: noqa: F811 - the fixtures imported from tests.warehouses are parameters
"""The server's own warehouse sessions (the sidebar's Test and browse), through the HTTP
API of a real Jupyter server against the local Databricks warehouse: concurrent calls
open one session, idle sessions are closed, and a revoke closes the user's session."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.test_consent_flow import api
from tests.test_sessions_kernel import authorize
from tests.warehouses import connections, idp_config, warehouse  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(180)

IDLE = 2.0


@pytest.fixture
def connauth_config() -> dict[str, Any]:
    return {"warehouse_session_idle_timeout": IDLE}


async def wait_for(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.1)
    return bool(check())


async def test_concurrent_browse_opens_one_session_and_idle_ones_close(
    jp_fetch, consent, warehouse
):
    await authorize(jp_fetch, consent, "lake", "alice")
    before = warehouse.stats()
    answers = await asyncio.gather(
        *(api(jp_fetch, "connections", "lake", "browse") for _ in range(4))
    )
    assert all(a["status"] == "ok" and "main" in a["items"] for a in answers), answers
    opened = warehouse.stats()
    assert opened["sessions_opened"] == before["sessions_opened"] + 1
    assert opened["metadata_calls"] >= before["metadata_calls"] + 4

    # idle for longer than the configured timeout: the session is closed at the warehouse
    assert await wait_for(
        lambda: warehouse.stats()["sessions_closed"] == opened["sessions_closed"] + 1,
        IDLE * 4 + 5,
    ), warehouse.stats()
    test = await api(jp_fetch, "connections", "lake", "test", method="POST")
    assert test["status"] == "ok" and test["whoami"]["user"] == "alice@example.com"
    assert warehouse.stats()["sessions_opened"] == opened["sessions_opened"] + 1


async def test_reauthorize_as_another_account_reaches_the_sidebars_session(
    jp_fetch, consent, warehouse
):
    await authorize(jp_fetch, consent, "lake", "alice")
    first = await api(jp_fetch, "connections", "lake", "test", method="POST")
    assert first["whoami"]["user"] == "alice@example.com"
    # a consent completed in another tab: the server is not told, the grant changes
    await authorize(jp_fetch, consent, "lake", "bob", switch_account=True)
    second = await api(jp_fetch, "connections", "lake", "test", method="POST")
    assert second["whoami"]["user"] == "bob@example.com"
