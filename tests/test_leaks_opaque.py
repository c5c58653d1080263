"""Opaque tokens (as Okta, Databricks and Snowflake issue them) that a warehouse quotes in
its error never reach the cell's output, the API's answer or the server's log: the one
redactor (core/redact.py) knows every token value the process handed out or received."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.idp_fixture import TestIdP
from tests.ipython_shell import sign_in_when_asked
from tests.servers.databricks.fixture import DatabricksServer
from tests.warehouses import DBX, opaque_lake, trusting

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def idp_config() -> dict[str, Any]:
    # no default resource: access tokens for the scopes below are opaque strings
    return {"default_resource": None}


@pytest.fixture
def warehouse(idp: TestIdP) -> Iterator[DatabricksServer]:
    config = trusting(
        idp,
        DBX,
        users={"alice@example.com": {"name": "Alice"}},
        echo_rejected_token=True,  # quotes the token it refuses in its 401
    )
    with DatabricksServer(config) as srv:
        yield srv


@pytest.fixture
def connections(warehouse: DatabricksServer) -> dict[str, Any]:
    return {"lake": opaque_lake(warehouse)}


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    jp_server_config["ServerApp"]["log_level"] = "DEBUG"
    return jp_server_config


async def test_opaque_token_quoted_by_the_warehouse_is_redacted_everywhere(
    shell: Any, broker: Any, jp_fetch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = asyncio.ensure_future(shell.run("%%sql_connector lake\nSELECT 1 AS one"))
    await sign_in_when_asked(shell, "alice")
    result = await running
    token = broker.store.get_token("alice", "lake").record.access_token
    assert "." not in token and len(token) >= 20, "the premise: an opaque access token"

    # the kernel: the cell failed with the warehouse's words, without the token
    err = result.error_in_exec
    assert err is not None and "Rejected token [redacted]" in str(err), err
    shown = "\n".join(err._render_traceback_()) + str(err) + shell.text()
    assert token not in shown + repr(shell.outputs)

    # the API: the sidebar's Test runs the same driver in the server. The kernel has
    # reported the rejection by now (one forced refresh, still rejected: the grant is
    # marked), so the answer offers consent, or quotes the warehouse: never the token.
    resp = await jp_fetch(
        "connauth", "api", "connections", "lake", "test", method="POST", body="{}",
        raise_error=False,
    )  # fmt: skip
    answer = resp.body.decode()
    assert "Rejected token" in answer or "warehouse_rejected" in answer, answer
    assert token not in answer, answer

    # the logs of this process (server, broker, kernel side)
    logs = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records) + json.dumps(
        [r.args for r in caplog.records], default=str
    )
    assert "connections/lake/test" in logs
    assert token not in logs


async def test_a_real_kernel_shows_the_warehouse_error_without_the_token(
    jp_fetch: Any, jp_serverapp: Any, consent: Any, broker: Any
) -> None:
    """The kernel's own process: it remembers the token it received from the broker."""
    first = json.loads(
        (
            await jp_fetch(
                "connauth", "api", "connections", "lake", "token", method="POST", body="{}"
            )
        ).body
    )
    await consent(first["authorize_url"], "alice")
    token = broker.store.get_token("alice", "lake").record.access_token
    resp = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(resp.body)["id"]
    kc = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
    kc.start_channels()
    shown: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        shown.append(json.dumps(msg["content"]))

    try:
        await kc.wait_for_ready(timeout=60)
        cell = "%load_ext jupyter_connauth\n%%sql_connector lake\nSELECT 1 AS one"
        await kc.execute_interactive("%load_ext jupyter_connauth", timeout=60)
        reply = await kc.execute_interactive(cell.split("\n", 1)[1], output_hook=hook, timeout=90)
    finally:
        kc.stop_channels()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    text = "\n".join(shown)
    assert reply["content"]["status"] == "error"
    assert "Rejected token [redacted]" in text, text
    assert token not in text + json.dumps(reply["content"])
