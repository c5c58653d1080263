"""The hub demo (``bash scripts/demo``) in Chromium: alice and bob, each in their own
browser context, sign in to the hub at the local IdP, get their own server with the
quickstart, run it (the Authorize balloon where consent is needed, the hub login's token
for Databricks with no popup) and see their own rows and their own sidebar status.

One demo stack for the module (demo/hub.py, in a temporary directory). With
``CONNAUTH_UPDATE_SCREENSHOTS=1`` the README's screenshots (docs/img/) are refreshed
from alice's browser.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.lab import REPO, through_idp
from tests.hub.hub_fixture import CHP

#: A result's footer: 'alice@example.com · snowflake · 3 rows · 0.21 s'.
FOOTER = re.compile(r"· [\d,]+ rows? · [\d.]+ s")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not CHP.exists(), reason="npm ci in tests/hub (configurable-http-proxy)"),
]

WAIT_MS = 90_000
OTHER = {"alice": "bob", "bob": "alice"}


@pytest.fixture(scope="module")
def hub_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from demo import hub, stack, state

    # A state directory of its own, never a running demo's .cache/demo: the modules
    # were imported with the default already (they read WORK as a global at call time).
    work = tmp_path_factory.mktemp("demo")
    saved = [(m, m.WORK) for m in (state, stack, hub)]
    for module, _ in saved:
        module.WORK = work
    try:
        with contextlib.ExitStack() as running:
            yield hub.start_hub_demo(running)
    finally:
        for module, default in saved:
            module.WORK = default


class User:
    def __init__(self, login: str, page: Any, out: Path) -> None:
        self.login, self.page, self.out = login, page, out

    def shot(self, name: str) -> Path:
        path = self.out / f"hub-{self.login}-{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def cell(self, source_start: str) -> Any:
        return self.page.locator(".jp-Notebook .jp-Cell").filter(
            has=self.page.locator(".jp-InputArea", has_text=source_start)
        )

    def authorize_balloon(self, connection: str) -> None:
        balloon = self.page.locator(".connauth-balloon", has_text=f"Authorize {connection}")
        balloon.wait_for(state="visible", timeout=WAIT_MS)
        if self.login == "alice" and connection == "snowflake":
            balloon.scroll_into_view_if_needed()
            self.shot("balloon")
        with self.page.expect_popup(timeout=WAIT_MS) as info:
            balloon.locator("a.connauth-authorize").click()
        popup = info.value
        through_idp(popup, self.login, "/oauth/connector/callback", WAIT_MS)
        body = popup.locator("body").inner_text(timeout=WAIT_MS)
        assert f"Authorized as {self.login}@example.com" in body, body
        with contextlib.suppress(Exception):
            popup.close()


def own_rows(text: str, login: str) -> None:
    assert login in text.lower(), text
    assert OTHER[login] not in text.lower(), text


def test_alice_and_bob_each_in_their_own_server(
    browser: Any, hub_demo: Any, artifacts: Path
) -> None:
    users = {}
    for login in ("alice", "bob"):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(WAIT_MS)
        users[login] = User(login, context.new_page(), artifacts)

    for login, u in users.items():  # hub login at the IdP, then their own server
        u.page.goto(hub_demo.url)
        u.page.locator("a", has_text="Sign in with").click()
        through_idp(u.page, login, f"/user/{login}/lab", WAIT_MS)
        u.page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        assert f"/user/{login}/lab/tree/quickstart.ipynb" in u.page.url
        assert u.page.locator(".Toastify__toast").count() == 0  # no news prompt offline

    for login, u in users.items():  # the whole quickstart, consent where it is needed
        u.page.locator(".jp-Notebook").click()
        u.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
        u.page.locator(".lm-Menu-item .lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        u.authorize_balloon("snowflake")
        sf = u.cell("%%sql_connector snowflake -o sf").locator(".jp-OutputArea")
        sf.get_by_text(FOOTER).wait_for(timeout=WAIT_MS)
        own_rows(sf.inner_text(), login)
        if login == "alice":
            sf.scroll_into_view_if_needed()
            u.shot("authorized")
        u.authorize_balloon("bigquery")  # Databricks ran on the hub login: no balloon
        dbx = u.cell("FROM main.demo.sales ORDER BY").locator(".jp-OutputArea")
        dbx.get_by_text(FOOTER).wait_for(timeout=WAIT_MS)
        own_rows(dbx.inner_text(), login)
        last = u.cell("%%sql_connector snowflake --no-wait").locator(".jp-OutputArea")
        last.get_by_text("Authorize snowflake").wait_for(timeout=WAIT_MS)  # after the revoke
        bq = u.cell("%%sql_connector bigquery").locator(".jp-OutputArea")
        bq.get_by_text(FOOTER).wait_for(timeout=WAIT_MS)
        own_rows(bq.inner_text(), login)

    for login, u in users.items():  # the sidebar: this user's status, nobody else's
        u.page.locator('.jp-SideBar [data-id="jp-connauth-connections"]').click()
        card = u.page.locator('.jp-ConnAuth-card[data-connection="databricks"]')
        card.get_by_text(f"Authorized as {login}@example.com").wait_for(timeout=WAIT_MS)
        panel = u.page.locator(".jp-ConnAuth-panel").inner_text()
        assert f"{OTHER[login]}@example.com" not in panel, panel
        snowflake = u.page.locator('.jp-ConnAuth-card[data-connection="snowflake"]')
        snowflake.get_by_text("Consent needed").wait_for(timeout=WAIT_MS)  # the revoke cell
        if login == "alice":  # the browse tree at the default width: names not cut off
            card.locator(".jp-ConnAuth-cardHead button").first.click()
            card.locator(".jp-ConnAuth-catalog[data-path='[\"main\"]']").click()
            card.locator('.jp-ConnAuth-schema[data-path=\'["main","demo"]\']').click()
            card.locator(".jp-ConnAuth-table", has_text="sales").click()
            names = card.locator(".jp-ConnAuth-column .jp-ConnAuth-nodeName")
            names.first.wait_for()
            assert names.all_inner_texts() == ["region", "amount", "owner"]
            fits = "el => el.scrollWidth <= el.clientWidth"
            assert all(n.evaluate(fits) for n in names.all()), "a column's name is cut off"
            u.shot("sidebar")

    if os.environ.get("CONNAUTH_UPDATE_SCREENSHOTS"):
        for name in ("balloon", "authorized", "sidebar"):
            shutil.copyfile(
                artifacts / f"hub-alice-{name}.png", REPO / "docs" / "img" / f"{name}.png"
            )
