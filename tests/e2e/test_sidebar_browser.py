"""The Connections sidebar end to end: JupyterLab in headless Chromium.

Same real parts as test_notebook_browser.py (whose fixtures this module reuses): the
test IdP, the local Snowflake server and a ``jupyter lab`` subprocess. Chromium opens
the sidebar, sees that consent is needed, clicks Test (the consent popup opens at
once), signs in, watches the panel turn "Authorized" without a reload, browses the
catalog tree, revokes, and expands the tree again: the Authorize notification appears
and, after consent, the node expands by itself. A table's context menu inserts a
``%%sql_connector`` query cell into a notebook.

Screenshots go to ``artifacts/e2e/sidebar-*.png``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.e2e.lab import (
    CONNECTION,
    EMAIL,
    WAIT_MS,
    JupyterLab,
    Sidebar,
    sign_in,
    step,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]


def test_sidebar_consent_test_browse_revoke(
    browser: Any,
    lab: JupyterLab,
    artifacts: Path,
) -> None:
    for old in artifacts.glob("sidebar-*.png"):
        old.unlink()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_code_cell("")]
    nbformat.write(nb, str(lab.notebooks / "browse.ipynb"))

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    console: list[str] = []
    page.on(
        "console",
        lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    sb = Sidebar(page, artifacts)
    # the step() helper of the notebook test wants .shot and .page: Sidebar has both
    try:
        with step(sb, "open-sidebar", lab):  # type: ignore[arg-type]
            page.goto(f"{lab.url}lab/tree/browse.ipynb?token={lab.token}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            page.locator('.jp-SideBar [data-id="jp-connauth-connections"]').click()
            sb.card().wait_for()
            wait_until("the consent-needed status", lambda: "Consent needed" in sb.status())
            assert "first use" in sb.status()
            sb.shot("consent-needed")

        with step(sb, "browse-asks-consent", lab):  # type: ignore[arg-type]
            sb.card().locator(".jp-ConnAuth-cardHead button").first.click()
            toast = page.locator(".Toastify__toast", has_text=f'"{CONNECTION}" needs your consent')
            toast.wait_for()
            sb.card().locator(".jp-ConnAuth-row", has_text="Waiting for your consent").wait_for()
            sb.shot("notification")
            with page.expect_popup() as info:
                toast.locator("button", has_text="Authorize").click()
            popup = info.value
            sign_in(popup, sb)
            # the callback page posts to its opener: the waiting level expands by itself
            # and the status turns "Authorized" without a reload
            sb.card().locator(".jp-ConnAuth-catalog").first.wait_for()
            wait_until("the authorized status", lambda: "Authorized as" in sb.status())
            assert EMAIL in sb.status()
            with contextlib.suppress(Exception):
                popup.close()
            sb.shot("expanded-after-consent")

        with step(sb, "test-ok", lab):  # type: ignore[arg-type]
            sb.button("Test").click()
            sb.card().locator(".jp-ConnAuth-note", has_text="Test OK").wait_for()
            sb.shot("test-ok")

        with step(sb, "browse-columns", lab):  # type: ignore[arg-type]
            sb.card().locator(".jp-ConnAuth-catalog").first.click()
            schema = sb.card().locator('.jp-ConnAuth-schema[data-path$=",\\"PUBLIC\\"]"]')
            schema.wait_for()
            schema.click()
            table = sb.card().locator(".jp-ConnAuth-table").first
            table.wait_for()
            table.click()
            sb.card().locator(".jp-ConnAuth-column").first.wait_for()
            assert sb.card().locator(".jp-ConnAuth-column .jp-ConnAuth-nodeType").count() > 0
            sb.shot("tree")

        with step(sb, "insert-query", lab):  # type: ignore[arg-type]
            table = sb.card().locator(".jp-ConnAuth-table").first
            table.click(button="right")
            page.locator(".lm-Menu-item", has_text="Insert Query Cell").click()
            cell = page.locator(".jp-Notebook .jp-Cell").first
            wait_until(
                "the query cell",
                lambda: f"%%sql_connector {CONNECTION}" in cell.inner_text(timeout=2_000),
            )
            text = cell.inner_text()
            assert "SELECT * FROM CONNAUTH.PUBLIC." in text and "LIMIT 100" in text, text
            sb.shot("query-cell")

        with step(sb, "revoke", lab):  # type: ignore[arg-type]
            sb.button("Revoke").click()
            wait_until("consent needed again", lambda: "Consent needed" in sb.status())
            assert "revoked" in sb.status()
            sb.shot("revoked")

        with step(sb, "add-connection-form", lab):  # type: ignore[arg-type]
            sb.panel.locator("button.jp-ConnAuth-add").click()
            form = sb.panel.locator("form.jp-ConnAuth-form")
            form.locator("input[name=name]").fill("bq")
            form.locator("select[name=connector]").select_option("bigquery")
            form.locator("button[type=submit]").click()
            # validation shows beside the field
            form.locator(".jp-ConnAuth-fieldError", has_text="required for BigQuery").wait_for()
            scopes = form.locator("textarea[name=scopes]")
            assert scopes.input_value() == "https://www.googleapis.com/auth/bigquery"  # OIDC
            # another identity provider (c.ConnAuth.providers): its flavour's template
            provider = form.locator("select[name=provider]")
            provider.select_option("entra")
            form.get_by_text("Template for bigquery with Azure (Entra ID).").wait_for()
            entra = "https://bigquery.googleapis.com/.default offline_access"
            assert scopes.input_value() == entra
            provider.select_option("")
            form.get_by_text("Template for bigquery with OIDC.").wait_for()
            assert scopes.input_value() == "https://www.googleapis.com/auth/bigquery"
            form.locator("input[name=project]").fill("acme-analytics")
            sb.shot("add-form")
            form.locator("button[type=submit]").click()
            card = sb.card("bq")
            card.wait_for()
            assert "BigQuery" in card.inner_text()

        with step(sb, "edit-scopes-warns", lab):  # type: ignore[arg-type]
            sb.card("bq").locator("button[title=Edit]").click()
            form = sb.panel.locator("form.jp-ConnAuth-form")
            # saved and unchanged: Test only tests; at the default width nothing scrolls
            assert form.locator("button", has_text="Test").inner_text() == "Test"
            fits = "el => el.scrollWidth <= el.clientWidth"
            assert sb.panel.evaluate(fits), "the edit form scrolls horizontally"
            form.locator("textarea[name=scopes]").fill(
                "https://www.googleapis.com/auth/cloud-platform"
            )
            form.locator("button", has_text="Save and test").wait_for()  # re-rendered
            form.locator(".jp-ConnAuth-scopeWarning").wait_for()
            assert "every user" in form.locator(".jp-ConnAuth-scopeWarning").inner_text()
            sb.shot("edit-scopes-warning")
            # Delete asks in a JupyterLab dialog (not the browser's confirm()); Cancel keeps it
            form.locator("button.jp-ConnAuth-delete").click()
            dialog = page.locator(".jp-Dialog")
            dialog.get_by_text('Delete "bq"?').wait_for()
            dialog.locator("button", has_text="Cancel").click()
            dialog.wait_for(state="detached")
            form.locator("button", has_text="Cancel").click()
            sb.card().wait_for()
            assert sb.card("bq").count() == 1
            name = sb.card().locator(".jp-ConnAuth-name")
            assert name.evaluate(fits), "the connection's name is cut off"

        with step(sb, "authorize-again", lab):  # type: ignore[arg-type]
            # the popup opens within the click (blank), then goes to the IdP
            with page.expect_popup() as info:
                sb.button("Authorize").click()
            popup = info.value
            sign_in(popup, sb)
            wait_until("the authorized status", lambda: "Authorized as" in sb.status())
            with contextlib.suppress(Exception):
                popup.close()
            sb.shot("authorized-again")
    finally:
        context.close()
    # the extension loads cleanly: no shared-module version mismatch, no uncaught errors
    ours = [m for m in console if "connauth" in m.lower() or "unsatisfied version" in m.lower()]
    assert not ours, "\n".join(ours)
