"""JupyterLab in headless Chromium for the end-to-end tests: the ``jupyter lab``
subprocess with the extension (isolated dirs), the notebook page, the sidebar, and the
IdP's popup. The fixtures that start them are in ``conftest.py``."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2
import nbformat
from cryptography.fernet import Fernet

from jupyter_connauth.broker.store import open_store
from jupyter_connauth.core.crypto import CryptKeeper
from tests.idp_fixture import TestIdP
from tests.servers.snowflake.fixture import SnowflakeServer

REPO = Path(__file__).resolve().parents[2]

OWNER = "alice"  # ConnAuthApp.owner: whose tokens the server holds
EMAIL = "alice@example.com"
SF_RESOURCE = "https://snowflake.local"
CONNECTION = "sales"
QUERY_CELL = f"%%sql_connector {CONNECTION}\nSELECT * FROM sales"
ALICE_ROWS = [("AMER", "75"), ("EMEA", "120.5"), ("APAC", "310.25")]  # the server's SALES rows
BOB_AMOUNTS = ("999.99", "42.0")
WAIT_MS = 30_000
SERVER_START_TIMEOUT = 45.0


def wait_until(what: str, check: Callable[[], Any], timeout: float = WAIT_MS / 1000) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except Exception as e:  # a page in transition, a server not up yet
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})"
            )
        time.sleep(0.2)


class JupyterLab:
    """``jupyter lab`` in a subprocess with isolated config/data/runtime dirs and HOME."""

    def __init__(self, root: Path, port: int, log_path: Path) -> None:
        self.root = root
        self.port = port
        self.token = secrets.token_hex(24)
        self.crypt_key = Fernet.generate_key().decode()
        self.log_path = log_path
        self.notebooks = root / "notebooks"
        self.config_dir = root / "config"
        self.home = root / "home"
        self.store_path = root / "store" / "tokens.sqlite3"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def redirect_uri(self) -> str:
        return f"{self.url}oauth/connector/callback"

    def write_config(self, idp: TestIdP, sf: SnowflakeServer) -> None:
        driver_options = {
            k: v
            for k, v in sf.connect_kwargs("unused").items()
            if k not in ("token", "authenticator", "account")
        }
        connections = {
            CONNECTION: {
                "connector": "snowflake",
                "account": sf.config.get("account", "connauth"),
                "scopes": "session:role-any offline_access",
                "resource": SF_RESOURCE,
                "driver_options": driver_options,
            }
        }
        logging_config = {
            "loggers": {
                "jupyter_connauth": {
                    "level": "DEBUG",
                    "handlers": ["console"],
                    "propagate": False,
                }
            }
        }
        lines = [
            "c.ServerApp.jpserver_extensions = {'jupyter_connauth': True}",
            f"c.ServerApp.root_dir = {str(self.notebooks)!r}",
            # DEBUG everywhere (the request log too) so the leak check below sees the most
            "c.ServerApp.log_level = 'DEBUG'",
            "c.ConnAuthApp.log_level = 'DEBUG'",
            f"c.ServerApp.logging_config = {logging_config!r}",
            "c.LabApp.news_url = None",
            "c.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'",
            f"c.ConnAuthApp.owner = {OWNER!r}",
            f"c.ConnAuth.discovery_url = {idp.discovery_url!r}",
            f"c.ConnAuth.client_id = {idp.client_id!r}",
            f"c.ConnAuth.public_url = {self.url!r}",
            f"c.ConnAuth.store_path = {str(self.store_path)!r}",
            f"c.ConnAuth.connections = {connections!r}",
            # a second, Entra-flavoured provider (the same IdP): the sidebar's form offers
            # it, with its own scope templates
            f"c.ConnAuth.providers = {{'entra': {{'discovery_url': {idp.discovery_url!r}, "
            f"'client_id': {idp.client_id!r}, 'flavour': 'azure'}}}}",
        ]
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "jupyter_server_config.py").write_text("\n".join(lines) + "\n")
        # no "Would you like to get notified about official Jupyter news?" toast
        news = self.config_dir / "lab/user-settings/@jupyterlab/apputils-extension"
        news.mkdir(parents=True, exist_ok=True)
        (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')

    def env(self, client_secret: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JUPYTER", "JUPYTERHUB", "JPY_", "IPYTHON"))
        }
        for d in ("data", "runtime", "home"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        # This checkout's labextension build, whatever the venv links to (a worktree's
        # venv may be another checkout's).
        ext = self.root / "jupyter-path" / "labextensions" / "jupyter-connauth"
        ext.parent.mkdir(parents=True, exist_ok=True)
        if not ext.is_symlink():
            ext.symlink_to(REPO / "jupyter_connauth" / "labextension")
        venv_bin = str(Path(sys.executable).parent)
        env.update(
            JUPYTER_PATH=str(ext.parent.parent),
            HOME=str(self.home),
            JUPYTER_CONFIG_DIR=str(self.config_dir),
            JUPYTER_DATA_DIR=str(self.root / "data"),
            JUPYTER_RUNTIME_DIR=str(self.root / "runtime"),
            JUPYTER_PLATFORM_DIRS="0",
            JUPYTER_CONNAUTH_CRYPT_KEY=self.crypt_key,
            JUPYTER_CONNAUTH_CLIENT_SECRET=client_secret,
            PATH=venv_bin + os.pathsep + env.get("PATH", ""),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self, client_secret: str) -> None:
        self.notebooks.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.token={self.token}",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=str(self.notebooks),
                env=self.env(client_secret),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}")
            with httpx2.Client(timeout=5, trust_env=False) as http:
                r = http.get(f"{self.url}api/status", headers=self.headers)
            return r.status_code == 200

        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                if up():
                    return
            except RuntimeError as e:
                raise AssertionError(f"{e}; its log:\n{self.log()[-6000:]}") from None
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"jupyter lab did not answer within {SERVER_START_TIMEOUT:.0f} s; "
                    f"its log:\n{self.log()[-6000:]}"
                )
            time.sleep(0.3)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def api(self, path: str) -> Any:
        with httpx2.Client(timeout=10, trust_env=False) as http:
            r = http.get(f"{self.url}{path}", headers=self.headers)
        r.raise_for_status()
        return r.json()

    def kernels_idle(self) -> bool:
        kernels = self.api("api/kernels")
        return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the server and its kernel
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # the kernel is in the same session: make sure nothing of it is left behind
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stored_secrets(self) -> dict[str, str]:
        """The access and refresh token the broker holds for alice's 'sales' (decrypted)."""
        store = open_store(self.store_path, CryptKeeper([self.crypt_key.encode()]))
        try:
            stored = store.get_token(OWNER, CONNECTION)
        finally:
            store.close()
        if stored is None or stored.record is None:
            return {}
        out = {"access token": stored.record.access_token}
        if stored.record.refresh_token:
            out["refresh token"] = stored.record.refresh_token
        return out


def write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_connauth"),
        nbformat.v4.new_code_cell(QUERY_CELL),
    ]
    nbformat.write(nb, str(path))


class LabPage:
    """A JupyterLab page whose screenshots are numbered in the order they are taken."""

    prefix = ""

    def __init__(self, page: Any, artifacts: Path) -> None:
        self.page = page
        self.artifacts = artifacts
        self.n = 0

    def shot(self, name: str, page: Any = None) -> Path:
        self.n += 1
        path = self.artifacts / f"{self.prefix}{self.n:02d}-{name}.png"
        (page or self.page).screenshot(path=str(path))
        return path


class Notebook(LabPage):
    """The JupyterLab page with test.ipynb open; every wait is bounded."""

    def cell(self, i: int) -> Any:
        return self.page.locator(".jp-Notebook .jp-Cell").nth(i)

    def output(self, i: int) -> Any:
        return self.cell(i).locator(".jp-OutputArea")

    def output_text(self, i: int) -> str:
        return str(self.output(i).inner_text(timeout=5_000))

    def prompt(self, i: int) -> str:
        return str(self.cell(i).locator(".jp-InputPrompt").inner_text(timeout=5_000)).strip()

    def menu(self, top: str, item: str) -> None:
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{top}$")).click()
        entry = self.page.locator(".lm-Menu-item:not(.lm-mod-hidden) .lm-Menu-itemLabel")
        entry.filter(has_text=re.compile(f"^{re.escape(item)}$")).first.click()

    def select(self, i: int) -> None:
        """Select cell i in command mode."""
        self.cell(i).locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Escape")

    def run_cell(self, i: int) -> str:
        """Run cell i (Ctrl+Enter: run, stay) and return its prompt before the run."""
        before = self.prompt(i)
        self.select(i)
        self.page.keyboard.press("Control+Enter")
        return before

    def wait_rerun(self, i: int, before: str) -> None:
        wait_until(
            f"cell {i} to run again (prompt was {before!r})",
            lambda: (p := self.prompt(i)) != before and "*" not in p,
        )


@contextlib.contextmanager
def step(nb: Notebook, name: str, lab: JupyterLab) -> Iterator[None]:
    """On failure: a screenshot, the page's text and the server log's tail."""
    try:
        yield
    except Exception as e:
        details = [f"step {name!r} failed: {e}"]
        with contextlib.suppress(Exception):
            details.append(f"screenshot: {nb.shot('FAILED-' + name)}")
        for p in nb.page.context.pages:
            with contextlib.suppress(Exception):
                text = p.locator("body").inner_text(timeout=3_000)
                details.append(f"--- page {p.url}\n{text[-4000:]}")
        noise = (" served from ", "GET /static/", "GET /lab/api/", "GET /api/contents")
        log = "\n".join(ln for ln in lab.log().splitlines() if not any(n in ln for n in noise))
        details.append(f"--- server log tail, static files omitted ({lab.log_path})\n{log[-5000:]}")
        raise AssertionError("\n".join(details)) from e


def authorize_in_popup(nb: Notebook, codes: list[str]) -> Any:
    """Click Authorize, sign in as alice in the popup (login and/or consent as the IdP
    asks), and return the popup once it shows our callback page."""
    balloon = nb.cell(1).locator(".connauth-balloon")
    balloon.wait_for(state="visible", timeout=WAIT_MS)
    with nb.page.expect_popup(timeout=WAIT_MS) as popup_info:
        balloon.locator("a.connauth-authorize").click()
    popup = popup_info.value
    popup.wait_for_load_state("domcontentloaded", timeout=WAIT_MS)
    deadline = time.monotonic() + WAIT_MS / 1000
    shot_login = shot_consent = False
    while "/oauth/connector/callback" not in popup.url:
        if time.monotonic() > deadline:
            raise AssertionError(f"the popup never reached the callback; it is at {popup.url}")
        login = popup.locator("input[name=login]")
        submit = popup.locator("button[type=submit]")
        if login.count():
            login.fill("alice")
            popup.locator("input[name=password]").fill("any-password")
            if not shot_login:
                nb.shot("idp-login", popup)
                shot_login = True
            with popup.expect_navigation(timeout=WAIT_MS):
                submit.first.click()
        elif submit.count():
            if not shot_consent:
                nb.shot("idp-consent", popup)
                shot_consent = True
            with popup.expect_navigation(timeout=WAIT_MS):
                submit.first.click()
        else:
            time.sleep(0.2)
    code = dict(parse_qsl(urlsplit(popup.url).query)).get("code")
    if code:
        codes.append(code)
    return popup


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


class Sidebar(LabPage):
    """The JupyterLab page with the Connections panel open."""

    prefix = "sidebar-"

    @property
    def panel(self) -> Any:
        return self.page.locator("#jp-connauth-connections")

    def card(self, name: str = CONNECTION) -> Any:
        return self.panel.locator(f'.jp-ConnAuth-card[data-connection="{name}"]')

    def status(self, name: str = CONNECTION) -> str:
        return str(self.card(name).locator(".jp-ConnAuth-status").inner_text(timeout=5_000))

    def button(self, label: str, name: str = CONNECTION) -> Any:
        return self.card(name).locator("button.jp-ConnAuth-action", has_text=label)


def sign_in(popup: Any, sb: Sidebar) -> None:
    """Log in as alice and consent, until the popup shows our callback page."""
    through_idp(popup, "alice", "/oauth/connector/callback", WAIT_MS)
    body = popup.locator("body").inner_text(timeout=5_000)
    assert f"Authorized as {EMAIL}" in body, body
    sb.shot("callback", popup)
