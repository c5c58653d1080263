"""The sidebar's "Authorize all" end to end: JupyterLab in headless Chromium.

The real parts of test_sidebar_browser.py (whose fixtures and helpers this reuses): the
test IdP, the local Snowflake server and a ``jupyter lab`` subprocess. Besides the
configured ``sales``, two connections are added through the broker API, so three need
consent; one click on "Authorize all (3)" opens ONE popup, which goes through the three
sign-ins one after the other (the IdP asks each time: prompt=consent), and every card
turns "Authorized as alice@example.com".

Screenshots go to ``artifacts/e2e/sidebar-*-authorize-all-*.png``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.e2e.lab import (
    CONNECTION,
    EMAIL,
    SF_RESOURCE,
    WAIT_MS,
    JupyterLab,
    Sidebar,
    step,
    through_idp,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

ADDED = ["sales-eu", "sales-apac"]
CALLBACK = "/oauth/connector/callback"


def add_connections(server: JupyterLab) -> None:
    """Two more Snowflake connections like ``sales``, through the broker's API."""
    with httpx2.Client(timeout=10, trust_env=False, headers=server.headers) as http:
        for name in ADDED:
            r = http.post(
                f"{server.url}connauth/api/connections",
                json={
                    "name": name,
                    "connector": "snowflake",
                    "account": "connauth",
                    "scopes": "session:role-any offline_access",
                    "resource": SF_RESOURCE,
                },
            )
            assert r.status_code == 201, r.text


def test_authorize_all_three_sign_ins_in_one_popup(
    browser: Any,
    lab: JupyterLab,
    artifacts: Path,
) -> None:
    names = [CONNECTION, *ADDED]
    add_connections(lab)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    sb = Sidebar(page, artifacts)
    try:
        with step(sb, "three-need-consent", lab):  # type: ignore[arg-type]
            page.goto(f"{lab.url}lab?token={lab.token}")
            page.locator('.jp-SideBar [data-id="jp-connauth-connections"]').click()
            for name in names:
                wait_until(f"{name} needing consent", lambda n=name: "Consent" in sb.status(n))
            button = sb.panel.locator("button.jp-ConnAuth-authorizeAll")
            assert button.inner_text() == "Authorize all (3)"
            fits = "el => el.scrollWidth <= el.clientWidth"
            toolbar = sb.panel.locator(".jp-ConnAuth-toolbar")
            assert toolbar.evaluate(fits), "the toolbar is cut off at the default width"
            sb.shot("authorize-all-button")

        with step(sb, "one-click-one-popup", lab):  # type: ignore[arg-type]
            opened: list[Any] = []
            context.on("page", lambda p: opened.append(p))
            with page.expect_popup() as info:
                button.click()
            popup = info.value
            callbacks: list[str] = []
            popup.on(
                "framenavigated",
                lambda f: (
                    callbacks.append(f.url) if f == popup.main_frame and CALLBACK in f.url else None
                ),
            )
            wait_until("the button disabled while the chain runs", button.is_disabled)

            def all_authorized() -> bool:
                return all(f"Authorized as {EMAIL}" in sb.status(n) for n in names)

            # sign in (login and/or consent, as the IdP asks) whatever the popup shows
            # next; after the last sign-in the callback page closes the popup itself
            deadline = time.monotonic() + 3 * WAIT_MS / 1000
            while not popup.is_closed() and not all_authorized():
                assert time.monotonic() < deadline, f"stuck after {len(callbacks)} sign-ins"
                with contextlib.suppress(Exception):  # the popup closes under us at the end
                    through_idp(popup, "alice", CALLBACK, WAIT_MS)
                time.sleep(0.2)
            wait_until("all three cards authorized", all_authorized)
            sb.shot("authorize-all-done")
            assert len(set(callbacks)) == 3, callbacks
            assert len(opened) == 1, "more than one popup"
            wait_until("the button to go", lambda: button.count() == 0)
    finally:
        context.close()
