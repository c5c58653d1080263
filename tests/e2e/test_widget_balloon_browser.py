"""The Authorize balloon as an ipywidgets widget in JupyterLab (jupyterlab-widgets), in
headless Chromium: its live countdown, Cancel clicked while the cell waits for consent
(one line, nothing ran, the flow cancelled at the broker), then the Authorize link:
the IdP in the popup, "Authorized as" and the rows in the same cell; the saved
notebook holds no authorize URL, state, code or widget view. One JupyterLab session.
The real parts of tests/e2e/test_notebook_browser.py (its fixtures and page helpers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.e2e.lab import (
    CONNECTION,
    EMAIL,
    WAIT_MS,
    JupyterLab,
    Notebook,
    authorize_in_popup,
    step,
    wait_until,
    write_notebook,
)
from tests.idp_fixture import TestIdP
from tests.servers.snowflake.fixture import SnowflakeServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]


def test_widget_balloon_cancel_then_authorize(
    browser: Any, lab: JupyterLab, idp: TestIdP, snowflake: SnowflakeServer, artifacts: Path
) -> None:
    nb_path = lab.notebooks / "widget.ipynb"
    write_notebook(nb_path)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    nb = Notebook(page, artifacts)
    codes: list[str] = []
    try:
        with step(nb, "open-notebook", lab):
            page.goto(f"{lab.url}lab/tree/widget.ipynb?token={lab.token}", timeout=WAIT_MS)
            page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()
            wait_until("the kernel to be started and idle", lab.kernels_idle)

        with step(nb, "widget-balloon", lab):
            nb.menu("Run", "Run All Cells")
            widget = nb.cell(1).locator(".connauth-widget")
            widget.wait_for(state="visible")
            assert "Authorize sales" in widget.inner_text()
            link = widget.locator("a.connauth-authorize")
            assert link.is_visible()
            flow_id = link.get_attribute("data-flow")
            auth_url = str(link.get_attribute("href"))
            assert flow_id and "/auth?" in auth_url
            status = widget.locator(".connauth-status")
            first = status.inner_text()
            assert "left" in first, first
            wait_until("the countdown to tick", lambda: status.inner_text() != first, 5)
            nb.shot("widget-balloon")

        with step(nb, "cancel-while-waiting", lab):
            widget.locator("button.connauth-cancel").click()
            out = nb.output(1)
            out.get_by_text("cancelled; nothing ran").wait_for()
            wait_until("the kernel to be idle after Cancel", lab.kernels_idle)
            lines = [ln for ln in nb.output_text(1).splitlines() if ln.strip()]
            assert lines == ["Cancelled: cancelled; nothing ran"], lines
            assert out.locator(".connauth-balloon").count() == 0
            assert snowflake.stats()["queries"] == 0  # nothing ran at the warehouse
            flow = lab.api(f"connauth/api/flows/{flow_id}")
            assert flow["status"] == "failed" and flow["error"] == "cancelled", flow
            nb.shot("cancelled")

        with step(nb, "authorize-through-the-widget", lab):
            nb.run_cell(1)
            widget = nb.cell(1).locator(".connauth-widget")
            widget.wait_for(state="visible")
            popup = authorize_in_popup(nb, codes)
            assert f"Authorized as {EMAIL}" in popup.locator("body").inner_text()
            popup.close()
            out = nb.output(1)
            out.get_by_text(f"Authorized as {EMAIL} for {CONNECTION}").wait_for()
            out.locator("table").wait_for()
            wait_until("the kernel to be idle after the query", lab.kernels_idle)
            assert out.locator(".connauth-balloon").count() == 0
            assert "310.25" in nb.output_text(1)
            nb.shot("widget-authorized")

        with step(nb, "save", lab):
            nb.select(1)
            page.keyboard.press("Control+s")
            wait_until("the saved notebook", lambda: "Authorized as" in nb_path.read_text())
    finally:
        context.close()

    saved = nb_path.read_text()
    query = dict(parse_qsl(urlsplit(auth_url).query))
    assert codes, "no authorization code was seen"
    for what, value in {
        "the authorize URL": urlsplit(auth_url).path + "?",
        "the state": query["state"],
        "the PKCE challenge": query["code_challenge"],
        "the widget view": "application/vnd.jupyter.widget-view+json",
        **{f"code {i}": code for i, code in enumerate(codes)},
    }.items():
        assert value not in saved, f"{what} is in the saved notebook"
    state = json.loads(saved)["metadata"].get("widgets", {})
    assert "connauth-authorize" not in json.dumps(state)
