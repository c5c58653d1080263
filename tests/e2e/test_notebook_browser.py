"""The notebook experience end to end: JupyterLab in headless Chromium.

Real parts only: the test IdP (oidc-provider), the local Snowflake server (checks the
IdP's tokens like External OAuth), a real ``jupyter lab`` subprocess with the extension,
its kernel running ``%%sql_connector`` through snowflake-connector-python, and Chromium
clicking the Authorize balloon and the IdP's login and consent pages in the popup.

Screenshots of every step go to ``artifacts/e2e/``; the server's log (which includes
the kernel's stdout/stderr) to ``artifacts/e2e/jupyter-server.log``.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.e2e.lab import (
    ALICE_ROWS,
    BOB_AMOUNTS,
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


# --------------------------------------------------------------------------- the test


def test_consent_in_the_browser_then_query_runs(
    browser: Any, lab: JupyterLab, idp: TestIdP, snowflake: SnowflakeServer, artifacts: Path
) -> None:
    started = time.monotonic()
    for old in artifacts.glob("*.png"):
        old.unlink()
    nb_path = lab.notebooks / "test.ipynb"
    write_notebook(nb_path)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    codes: list[str] = []

    def on_request(request: Any) -> None:  # every callback the browser makes carries a code
        if "/oauth/connector/callback" in request.url:
            code = dict(parse_qsl(urlsplit(request.url).query)).get("code")
            if code:
                codes.append(code)

    context.on("request", on_request)
    page = context.new_page()
    nb = Notebook(page, artifacts)
    secrets_seen: dict[str, str] = {}
    try:
        with step(nb, "open-notebook", lab):
            page.goto(f"{lab.url}lab/tree/test.ipynb?token={lab.token}", timeout=WAIT_MS)
            page.locator(".jp-Notebook .jp-Cell").nth(1).wait_for(timeout=WAIT_MS)
            page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(
                timeout=WAIT_MS
            )
            wait_until("the kernel to be started and idle", lab.kernels_idle)
            nb.shot("notebook-open")

        with step(nb, "run-all-balloon", lab):
            nb.menu("Run", "Run All Cells")
            balloon = nb.cell(1).locator(".connauth-balloon")
            balloon.wait_for(state="visible", timeout=WAIT_MS)
            assert "Authorize sales" in balloon.inner_text()
            assert balloon.locator("a.connauth-authorize").is_visible()
            nb.shot("balloon")

        with step(nb, "consent-popup", lab):
            popup = authorize_in_popup(nb, codes)
            nb.shot("callback-page", popup)
            body = popup.locator("body").inner_text(timeout=5_000)
            assert f"Authorized as {EMAIL}" in body, body
            with contextlib.suppress(Exception):
                popup.close()  # it closes itself after 1.5 s; the next window.open must be new

        with step(nb, "cell-finishes-by-itself", lab):
            out = nb.output(1)
            out.get_by_text(f"Authorized as {EMAIL} for {CONNECTION}").wait_for(timeout=WAIT_MS)
            out.locator("table").wait_for(timeout=WAIT_MS)
            wait_until("the kernel to be idle after the query", lab.kernels_idle)
            text = nb.output_text(1)
            assert out.locator(".connauth-balloon").count() == 0, text
            for region, amount in ALICE_ROWS:
                assert region in text and amount in text, text
            assert "BOB" not in text and not any(a in text for a in BOB_AMOUNTS), (
                f"bob's rows leaked:\n{text}"
            )
            assert "3 rows" in text, text
            secrets_seen.update(lab.stored_secrets())
            assert "access token" in secrets_seen, "no token in the store after consent"
            nb.shot("authorized-table")

        with step(nb, "rerun-no-balloon", lab):
            before = nb.run_cell(1)
            nb.wait_rerun(1, before)
            out = nb.output(1)
            out.locator("table").wait_for(timeout=WAIT_MS)
            text = nb.output_text(1)
            assert out.locator(".connauth-balloon").count() == 0, text
            assert "Authorized as" not in text, text
            assert "APAC" in text and "310.25" in text, text
            nb.shot("rerun-table")

        with step(nb, "revoke", lab):
            nb.select(1)
            page.keyboard.press("b")  # a new cell below
            wait_until("a third cell", lambda: page.locator(".jp-Notebook .jp-Cell").count() == 3)
            nb.cell(2).locator(".cm-content").click()
            page.keyboard.type(f"%sql_connector revoke {CONNECTION}")
            page.keyboard.press("Control+Enter")
            nb.output(2).get_by_text(re.compile(f"Revoked your token for {CONNECTION}")).wait_for(
                timeout=WAIT_MS
            )
            wait_until("the kernel to be idle after revoke", lab.kernels_idle)
            nb.shot("revoked")

        with step(nb, "rerun-balloon-again", lab):
            nb.run_cell(1)
            balloon = nb.cell(1).locator(".connauth-balloon")
            balloon.wait_for(state="visible", timeout=WAIT_MS)
            text = balloon.inner_text()
            assert "Authorize sales" in text and "revoked" in text, text
            nb.shot("balloon-again")

        with step(nb, "second-consent", lab):
            popup = authorize_in_popup(nb, codes)
            body = popup.locator("body").inner_text(timeout=5_000)
            assert f"Authorized as {EMAIL}" in body, body
            with contextlib.suppress(Exception):
                popup.close()
            out = nb.output(1)
            out.get_by_text(f"Authorized as {EMAIL} for {CONNECTION}").wait_for(timeout=WAIT_MS)
            out.locator("table").wait_for(timeout=WAIT_MS)
            wait_until("the kernel to be idle after the second consent", lab.kernels_idle)
            second = lab.stored_secrets()
            assert second.get("access token") and second["access token"] != secrets_seen.get(
                "access token"
            ), "the second consent did not store a new access token"
            for kind, value in second.items():
                secrets_seen[f"{kind} (second consent)"] = value
            nb.shot("authorized-again")

        with step(nb, "save", lab):
            nb.select(1)
            page.keyboard.press("Control+s")
            wait_until(
                "the saved notebook to hold the run's outputs",
                lambda: "Revoked your token" in nb_path.read_text(),
            )
            dom = page.locator(".jp-Notebook").inner_html()
            nb.shot("saved")
    finally:
        context.close()

    # ---- nothing secret anywhere a user or admin can see it
    assert codes, "no authorization code was seen on the way to the callback"
    secrets_seen["client secret"] = str(idp.client_secret)
    for i, code in enumerate(dict.fromkeys(codes)):
        secrets_seen[f"authorization code {i + 1}"] = code
    saved = nb_path.read_text()
    outputs = json.dumps([c.get("outputs", []) for c in json.loads(saved)["cells"]])
    lab.stop()  # flush and close the log: the kernel's output is in it too
    places = {
        "the saved notebook": saved,
        "the cell outputs": outputs,
        "the rendered notebook (DOM)": dom,
        "the server + kernel log": lab.log(),
    }
    history = lab.home / ".ipython" / "profile_default" / "history.sqlite"
    if history.exists():
        places["the kernel's IPython history"] = history.read_bytes().decode("latin-1")
    leaks = []
    for kind, value in secrets_seen.items():
        assert len(value) >= 16, f"{kind} is suspiciously short: cannot check for leaks"
        probes = {value}
        if value.count(".") == 2:  # a JWT: its signature alone must not show either
            probes.add(value.rsplit(".", 1)[1])
        for where, text in places.items():
            if any(p in text for p in probes):
                leaks.append(f"{kind} appears in {where}")
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
    # the log is the one we think it is, and it did log the callback (code scrubbed)
    log = places["the server + kernel log"]
    assert "jupyter-connauth" in log
    assert re.search(r"GET /oauth/connector/callback\?", log), "the callback was not logged"
    assert re.search(r"POST /connauth/api/connections/sales/token", log), "no broker API log"

    elapsed = time.monotonic() - started
    print(
        f"e2e notebook test: {elapsed:.1f} s; {len(secrets_seen)} secret values checked in "
        f"{len(places)} places; screenshots in {artifacts}"
    )
