# ruff: noqa: F811 - the fixtures imported from test_sessions_kernel are parameters
"""The Python API meets a warehouse that rejects the user's token (its federation
policy changed, the token revoked at the IdP) and tells the broker, as the magic does
(``POST connections/NAME/rejected``): one forced refresh and the connection opens with
the new token, silently; rejected again, the grant is marked and the status says why.
Through a real IPython shell, the real server, the real IdP and the local Databricks
warehouse (its runtime knob rejects tokens issued before a time); the fixtures of
tests/test_warehouse_rejected_kernel.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.test_consent_flow import api
from tests.test_sessions_kernel import (  # noqa: F401 - fixtures
    QUERY,
    authorize,
    connections,
    idp_config,
    warehouse,
)

pytestmark = pytest.mark.timeout(180)

CONNECT = f"""
from jupyter_connauth import connect
with connect("lake") as c, c.cursor() as cur:
    cur.execute("{QUERY}")
    got = cur.fetchall()
"""

ENGINE = f"""
import pandas as pd
from jupyter_connauth import engine
e = engine("lake")
got = pd.read_sql("{QUERY}", e)
e.dispose()
"""


@pytest.mark.parametrize("code", [CONNECT, ENGINE], ids=["connect", "engine"])
async def test_the_api_reports_a_rejected_token_and_one_refresh_fixes_it(
    shell, jp_fetch, consent, warehouse, idp, code
):
    await authorize(jp_fetch, consent, "lake", "alice")
    await asyncio.sleep(1.1)  # iat is in whole seconds
    warehouse.reject_issued_before(int(time.time()))  # the next token is accepted
    refreshes, statements = idp.token_requests("refresh_token"), warehouse.stats()["statements"]
    r = await shell.run(code)
    assert r.error_in_exec is None, (r.error_in_exec, shell.text())
    assert len(shell.ip.user_ns["got"]) == 2
    assert idp.token_requests("refresh_token") == refreshes + 1  # the broker was told
    ran = warehouse.stats()["statements"] - statements
    assert ran == 1 if code == CONNECT else ran >= 1  # SQLAlchemy's dialect adds its own
    status = await api(jp_fetch, "connections", "lake")
    assert status["status"] == "authorized"


async def test_the_api_still_rejected_marks_the_grant(shell, jp_fetch, consent, warehouse, idp):
    await authorize(jp_fetch, consent, "lake", "alice")
    warehouse.reject_issued_before(time.time() + 3600)  # every token of the IdP
    refreshes, statements = idp.token_requests("refresh_token"), warehouse.stats()["statements"]
    await shell.run("%config ConnAuthMagics.wait_timeout = 1.5")
    r = await shell.run(CONNECT)
    assert r.error_in_exec is not None
    assert idp.token_requests("refresh_token") == refreshes + 1  # once, no loop
    assert warehouse.stats()["statements"] == statements  # nothing ran
    status = await api(jp_fetch, "connections", "lake")
    assert status["status"] == "consent_required", status
    assert status["reason"] == "warehouse_rejected"
