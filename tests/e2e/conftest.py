"""End-to-end browser tests: JupyterLab in headless Chromium driven by Playwright.

Chromium is Debian's (``apt-get install chromium``), launched through
``executable_path`` (``playwright install`` is not used). Without it the tests are
skipped locally and fail in CI (``CI`` set), so a broken CI image cannot pass silently.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "e2e"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason} (CI is set: the e2e tests must run in CI)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("CONNAUTH_CHROMIUM") or shutil.which("chromium")
    if not path or not Path(path).exists():
        _missing("chromium not found: apt-get install chromium (or set $CONNAUTH_CHROMIUM)")
    assert path is not None
    return path


@pytest.fixture
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install playwright")
    # Function scope: Playwright's sync API drives its own event loop, which must be gone
    # before pytest-jupyter's autouse loop fixture closes its loop at the test's end.
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots and logs of the e2e run (repo-relative, gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def through_idp(page: Any, login: str, done: str, wait_ms: int = 90_000) -> None:
    """The IdP's login and consent pages, filled as ``login`` would (any password),
    until the page's URL matches the regular expression ``done``."""
    deadline = time.monotonic() + wait_ms / 1000
    page.wait_for_load_state("domcontentloaded", timeout=wait_ms)
    while not re.search(done, page.url):
        if time.monotonic() > deadline:
            raise AssertionError(f"{login} is stuck at {page.url} (waiting for {done})")
        name = page.locator("input[name=login]")
        submit = page.locator("button[type=submit]")
        before = page.url
        try:
            if name.count():
                name.fill(login)
                page.locator("input[name=password]").fill("any-password")
                submit.first.click()
            elif submit.count() and "/interaction/" in page.url:
                submit.first.click()
            else:
                time.sleep(0.2)
                continue
            page.wait_for_url(lambda url, before=before: url != before, timeout=10_000)
        except Exception:  # the page navigated under us (a redirect): look again
            time.sleep(0.2)
