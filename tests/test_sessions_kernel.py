# ruff: noqa: F811 - the fixtures imported from tests.warehouses are parameters
"""Revoke, re-authorize and scope edits reach a running kernel: every query asks the
broker for the grant, and a driver session opened under another grant is closed.
Driven through a real IPython shell, the real server, the real IdP and the local
Databricks warehouse (which counts sessions and statements)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_consent_flow import api
from tests.warehouses import connections, idp_config, lake, warehouse  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(180)

QUERY = "SELECT region, amount, owner FROM main.demo.sales"


async def authorize(
    jp_fetch: Any, consent: Any, name: str, login: str, *, switch_account: bool = False
) -> None:
    body = {"switch_account": True} if switch_account else None
    answer = await api(jp_fetch, "connections", name, "authorize", method="POST", body=body)
    page = await consent(answer["authorize_url"], login)
    assert page.status_code == 200, page.text


async def rows(shell: Any, name: str = "lake") -> Any:
    shell.ip.user_ns.pop("df", None)
    r = await shell.run(f"%%sql_connector {name} -o df\n{QUERY}")
    return r.error_in_exec, shell.ip.user_ns.get("df")


async def test_revoke_in_the_sidebar_stops_the_next_cell(shell, jp_fetch, consent, warehouse):
    await authorize(jp_fetch, consent, "lake", "alice")
    for _ in range(2):  # the grant is checked on every cell; unchanged, it keeps the session
        err, df = await rows(shell)
        assert err is None and len(df) == 2
    assert warehouse.stats()["sessions_opened"] == 1
    statements = warehouse.stats()["statements"]

    await api(jp_fetch, "connections", "lake", "revoke", method="POST")  # the sidebar's call
    shell.outputs.clear()
    await shell.run("%config ConnAuthMagics.wait_timeout = 1.5")
    err, df = await rows(shell)
    assert df is None, "the revoked grant still returned rows"
    assert err is not None and hasattr(err, "_render_traceback_"), err
    assert "Authorize" in shell.text()  # the consent balloon
    assert warehouse.stats()["statements"] == statements  # nothing ran at the warehouse


async def test_reauthorize_as_another_account_changes_whoami(shell, jp_fetch, consent, warehouse):
    await authorize(jp_fetch, consent, "lake", "alice")
    r = await shell.run("%sql_connector whoami lake")
    assert r.error_in_exec is None and "alice@example.com" in shell.text()
    # Switch account in the sidebar
    await authorize(jp_fetch, consent, "lake", "bob", switch_account=True)
    shell.outputs.clear()
    r = await shell.run("%sql_connector whoami lake")
    assert r.error_in_exec is None, r.error_in_exec
    assert "bob@example.com" in shell.text() and "alice" not in shell.text()
    assert warehouse.stats()["sessions_closed"] >= 1  # alice's session was closed


async def test_scope_edit_asks_the_kernel_for_consent(shell, jp_fetch, consent, warehouse):
    await api(jp_fetch, "connections", method="POST", body={"name": "adhoc", **lake(warehouse)})
    await authorize(jp_fetch, consent, "adhoc", "alice")
    err, df = await rows(shell, "adhoc")
    assert err is None and len(df) == 2
    statements = warehouse.stats()["statements"]

    edited = await api(
        jp_fetch,
        "connections",
        "adhoc",
        method="PUT",
        body={"name": "adhoc", **lake(warehouse, "sql offline_access warehouse:read")},
    )
    assert edited["tokens_invalidated"] == 1
    shell.outputs.clear()
    await shell.run("%config ConnAuthMagics.wait_timeout = 1.5")
    err, df = await rows(shell, "adhoc")
    assert df is None and err is not None
    assert "Authorize" in shell.text() and "changed the connection's scopes" in shell.text()
    assert warehouse.stats()["statements"] == statements
