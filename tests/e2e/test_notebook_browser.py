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
import pytest
from cryptography.fernet import Fernet

from jupyter_connauth.broker.store import open_store
from jupyter_connauth.core.crypto import CryptKeeper
from tests.e2e.conftest import REPO
from tests.idp_fixture import TestIdP, default_client, free_port
from tests.servers.snowflake.fixture import SnowflakeServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

OWNER = "alice"  # ConnAuthApp.owner: whose tokens the server holds
EMAIL = "alice@example.com"
SF_RESOURCE = "https://snowflake.local"
CONNECTION = "sales"
QUERY_CELL = f"%%sql_connector {CONNECTION}\nSELECT * FROM sales"
ALICE_ROWS = [("AMER", "75"), ("EMEA", "120.5"), ("APAC", "310.25")]  # the server's SALES rows
BOB_AMOUNTS = ("999.99", "42.0")
WAIT_MS = 30_000
SERVER_START_TIMEOUT = 45.0


# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- fixtures


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


# --------------------------------------------------------------------------- the page


class Notebook:
    """The JupyterLab page with test.ipynb open; every wait is bounded."""

    def __init__(self, page: Any, artifacts: Path) -> None:
        self.page = page
        self.artifacts = artifacts
        self.n = 0

    def shot(self, name: str, page: Any = None) -> Path:
        self.n += 1
        path = self.artifacts / f"{self.n:02d}-{name}.png"
        (page or self.page).screenshot(path=str(path))
        return path

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
