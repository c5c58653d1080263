# ruff: noqa: F811 - the fixtures imported from test_sessions_kernel are parameters
"""The Authorize balloon where no widget manager renders widgets, and the broker's side
of its Cancel button.

- nbclient (what papermill runs) executes a notebook in a real kernel started by the
  test's Jupyter server: the balloon's output offers the widget view and, for
  frontends like this one, the HTML balloon with the Authorize link and the text;
  signing in at the real IdP finishes the cell ("Authorized as", the rows), and the
  saved notebook holds neither the authorize URL nor widget state.
- ``DELETE flows/FLOW_ID`` (what Cancel calls): the IdP's redirect for a cancelled flow
  stores nothing; a cancelled device code is no longer polled for.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests import test_sessions_kernel
from tests.idp_fixture import headless_device
from tests.kernel_session import AUTH_URL, KernelSession
from tests.test_consent_flow import api
from tests.test_device_flow import INTERVAL, device_polls, start, wait_flow
from tests.test_sessions_kernel import QUERY, connections, warehouse  # noqa: F401

pytestmark = pytest.mark.timeout(180)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {**test_sessions_kernel.idp_config.__wrapped__(), "device_interval": INTERVAL}


class RecordingClient(NotebookClient):
    """nbclient as papermill uses it; every output message is also recorded (the live
    balloon is replaced by the end of the cell), and the user signs in when a balloon
    shows a link."""

    def __init__(self, nb: Any, sign_in: Any, **kw: Any) -> None:
        super().__init__(nb, **kw)
        self.seen: list[dict[str, Any]] = []
        self.sign_in = sign_in
        self.sign_ins: list[asyncio.Task[None]] = []

    def output(self, outs: Any, msg: dict[str, Any], display_id: Any, cell_index: int) -> Any:
        data = msg["content"].get("data") or {}
        self.seen.append(dict(data))
        urls = AUTH_URL.findall(str(data.get("text/plain", "")))
        if urls and not self.sign_ins:
            self.sign_ins.append(asyncio.ensure_future(self.sign_in(urls[0])))
        return super().output(outs, msg, display_id, cell_index)


async def test_nbclient_gets_the_html_balloon_and_saves_no_link(
    jp_fetch, jp_serverapp, consent, warehouse, tmp_path: Path
):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_connauth"),
        nbformat.v4.new_code_cell(f"%%sql_connector lake\n{QUERY}"),
    ]
    resp = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(resp.body)["id"]
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)  # its env points at the broker

    async def sign_in(url: str) -> None:
        page = await consent(url, "alice")
        assert page.status_code == 200, page.text

    client = RecordingClient(nb, sign_in, km=km, timeout=120)
    try:
        await client.async_execute()
        await asyncio.gather(*client.sign_ins)
    finally:
        if client.kc is not None:  # nbclient leaves a kernel it does not own running
            client.kc.stop_channels()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")

    balloons = [d for d in client.seen if "connauth-balloon" in str(d.get("text/html", ""))]
    assert balloons, client.seen
    first = balloons[0]
    assert WIDGET_VIEW in first  # a widget manager would show the widget ...
    page = first["text/html"]  # ... this frontend the HTML balloon: the link, the wait
    assert 'class="connauth-authorize"' in page and "/auth?" in page
    assert "Waiting for you to sign in" in page
    assert AUTH_URL.search(first["text/plain"])  # and a terminal the text

    outputs = nb.cells[1].outputs
    text = json.dumps(outputs)
    assert "Authorized as alice@example.com for lake" in text, text
    assert any(
        "text/html" in o.get("data", {}) and "<table" in o["data"]["text/html"] for o in outputs
    ), text
    path = tmp_path / "ran.ipynb"
    nbformat.write(nb, str(path))
    saved = path.read_text()
    assert "/auth?" not in saved and "code_challenge" not in saved
    assert WIDGET_VIEW not in saved  # the view was replaced by the result
    # nbclient saves the state of every widget it saw, closed ones too: emptied
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    html = [m["state"] for m in state.values() if m["model_name"] == "HTMLModel"]
    assert len(html) >= 3 and all(m["value"] == "" for m in html), html


async def test_a_cancelled_flow_stores_nothing(jp_fetch, consent):
    answer = await api(jp_fetch, "connections", "lake", "authorize", method="POST")
    flow = await api(jp_fetch, "flows", answer["flow_id"], method="DELETE")
    assert flow["status"] == "failed" and flow["error"] == "cancelled", flow
    assert "run the cell again" in flow["fix"]
    again = await api(jp_fetch, "flows", answer["flow_id"], method="DELETE")  # idempotent
    assert again["error"] == "cancelled"
    page = await consent(answer["authorize_url"], "alice")  # the IdP's redirect, too late
    assert page.status_code >= 400 and "unknown or was already used" in page.text, page.text
    status = await api(jp_fetch, "connections", "lake")
    assert status["status"] == "consent_required", status


async def test_a_cancelled_device_code_is_no_longer_polled(jp_fetch, idp):
    answer = await start(jp_fetch, "lake")
    for _ in range(50):  # the broker is polling
        if device_polls(idp):
            break
        await asyncio.sleep(0.1)
    flow = await api(jp_fetch, "flows", answer["flow_id"], method="DELETE")
    assert flow["status"] == "failed" and flow["error"] == "cancelled", flow
    polled = len(device_polls(idp))
    await asyncio.to_thread(headless_device, answer["verification_uri"], answer["user_code"])
    await asyncio.sleep(3 * INTERVAL)
    assert len(device_polls(idp)) == polled  # the user's code confirmed: nobody asks
    assert (await wait_flow(jp_fetch, answer["flow_id"]))["error"] == "cancelled"
    token = await api(jp_fetch, "connections", "lake", "token", method="POST")
    assert token["status"] == "consent_required"


async def test_a_kernel_without_ipywidgets_shows_the_html_balloon(
    jp_fetch, jp_serverapp, jp_auth_header, warehouse
):
    kernel = KernelSession(jp_fetch, jp_serverapp, jp_auth_header)
    async with kernel:
        await kernel.ok("import sys\nsys.modules['ipywidgets'] = None  # cannot be imported")
        await kernel.ok("%load_ext jupyter_connauth")
        cell = await kernel.ok(f"%%sql_connector lake\n{QUERY}")
        shown = [o["data"] for o in cell.outputs if "data" in o]
        assert "connauth-balloon" in shown[0]["text/html"] and WIDGET_VIEW not in shown[0]
        assert kernel.consents == 1 and "Authorized as alice@example.com" in cell.text
        assert "alice@example.com" in cell.text and "2 rows" in cell.text
