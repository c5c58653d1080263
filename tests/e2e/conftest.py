"""End-to-end browser tests: JupyterLab in headless Chromium driven by Playwright.

Chromium is Debian's (``apt-get install chromium``), launched through
``executable_path`` (``playwright install`` is not used). Without it the tests are
skipped locally and fail in CI (``CI`` set), so a broken CI image cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.lab import EMAIL, REPO, SF_RESOURCE, JupyterLab
from tests.idp_fixture import TestIdP, default_client, free_port
from tests.servers.snowflake.fixture import SnowflakeServer

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


# ------------------------------------------------- JupyterLab, its IdP and warehouse (lab.py)


@pytest.fixture
def lab_port() -> int:
    return free_port()


@pytest.fixture
def e2e_dir(tmp_path: Path) -> Path:
    return tmp_path / "e2e"


@pytest.fixture
def idp(lab_port: int, e2e_dir: Path) -> Iterator[TestIdP]:
    server = TestIdP(
        workdir=e2e_dir / "idp",
        clients=[default_client([f"http://127.0.0.1:{lab_port}/oauth/connector/callback"])],
        resources={SF_RESOURCE: {"audience": SF_RESOURCE, "scopes": ["session:role-any"]}},
        extra_scopes=["sql"],
        access_token_ttl=600,
    )
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def snowflake(idp: TestIdP) -> Iterator[SnowflakeServer]:
    config = {
        "integrations": [
            {
                "name": "IDP_OAUTH",
                "issuer": idp.issuer,
                "jwks_url": idp.discovery()["jwks_uri"],
                "audiences": [SF_RESOURCE],
                "any_role_mode": "ENABLE",
            }
        ],
        "users": {
            EMAIL: {"name": "ALICE", "default_role": "ANALYST", "roles": ["ANALYST"]},
            "bob@example.com": {"name": "BOB", "default_role": "ANALYST", "roles": ["ANALYST"]},
        },
    }
    with SnowflakeServer(config) as server:
        yield server


@pytest.fixture
def lab(
    lab_port: int, e2e_dir: Path, idp: TestIdP, snowflake: SnowflakeServer, artifacts: Path
) -> Iterator[JupyterLab]:
    server = JupyterLab(e2e_dir / "lab", lab_port, artifacts / "jupyter-server.log")
    server.write_config(idp, snowflake)
    assert idp.client_secret
    server.start(idp.client_secret)
    try:
        yield server
    finally:
        server.stop()
