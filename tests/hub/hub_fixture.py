"""Run a real JupyterHub (with configurable-http-proxy) and the connauth service for tests.

User servers run locally (SimpleLocalProcessSpawner); a ``tester`` service token drives
the hub's REST API (create users, tokens, start servers).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
from cryptography.fernet import Fernet
from traitlets.config import Config

from tests.idp_fixture import DEFAULT_CLIENT_SECRET, free_port

HERE = Path(__file__).resolve().parent
CHP = HERE / "node_modules" / ".bin" / "configurable-http-proxy"
VENV_BIN = Path(sys.executable).parent

CONFIG = """
import sys
c = get_config()  # noqa: F821
p = {p!r}
c.JupyterHub.bind_url = p["public_url"]
c.JupyterHub.hub_bind_url = p["hub_url"]
c.ConfigurableHTTPProxy.api_url = p["proxy_api"]
c.ConfigurableHTTPProxy.command = [p["chp"]]
c.JupyterHub.db_url = "sqlite:///" + p["dir"] + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = p["dir"] + "/cookie_secret"
c.JupyterHub.pid_file = p["dir"] + "/jupyterhub.pid"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.authenticator_class = p["authenticator"]
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"admin"}}
c.Authenticator.enable_auth_state = True
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = p["dir"] + "/home/{{username}}"
c.Spawner.cmd = [p["singleuser"]]
c.Spawner.args = ["--ServerApp.allow_root=True"]
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.Spawner.environment = {{"JUPYTER_CONNAUTH_HUB_SERVICE_URL": p["service_url"]}}
c.Spawner.server_token_scopes = [
    "users:activity!user", "access:servers!server", "access:services!service=connauth",
]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "access:services!service=connauth"]}},
    {{"name": "connauth", "services": ["connauth"], "scopes": ["read:users", "admin:auth_state"]}},
    {{"name": "tester", "services": ["tester"], "scopes": ["admin:users", "admin:servers",
      "tokens", "admin:auth_state", "access:services", "access:servers", "read:users"]}},
]
c.JupyterHub.services = [
    {{"name": "tester", "api_token": p["tester_token"]}},
    {{
        "name": "connauth",
        "url": p["service_bind"],
        "command": [sys.executable, "-m", "jupyter_connauth.hub", "--config", p["service_config"]],
        "environment": p["service_env"],
        "oauth_no_confirm": True,
    }},
]
{extra}
"""


class TestHub:
    __test__ = False

    def __init__(
        self,
        workdir: Path,
        *,
        service_config: str,
        service_env: dict[str, str],
        authenticator: str = "dummy",
        extra_config: str = "",
        port: int | None = None,
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "home").mkdir(exist_ok=True)
        self.port = port or free_port()
        self.public_url = f"http://127.0.0.1:{self.port}/"
        self.service_url = f"{self.public_url}services/connauth/"
        self.callback_url = f"{self.service_url}oauth/connector/callback"
        self.tester_token = secrets.token_hex(16)
        self.hub_crypt_key = secrets.token_hex(32)
        svc_port = free_port()
        # The service's own address (not through the proxy), as user servers may use it.
        self.service_direct_url = f"http://127.0.0.1:{svc_port}/services/connauth/"
        self.hub_url = f"http://127.0.0.1:{free_port()}"
        (self.dir / "connauth_hub_config.py").write_text(service_config)
        params = {
            "public_url": self.public_url,
            "hub_url": self.hub_url,
            "proxy_api": f"http://127.0.0.1:{free_port()}",
            "chp": str(CHP),
            "dir": str(self.dir),
            "authenticator": authenticator,
            "singleuser": str(VENV_BIN / "jupyterhub-singleuser"),
            "service_url": self.service_url,
            "service_bind": f"http://127.0.0.1:{svc_port}",
            "service_config": str(self.dir / "connauth_hub_config.py"),
            "service_env": {"PATH": os.environ.get("PATH", ""), **service_env},
            "tester_token": self.tester_token,
        }
        (self.dir / "jupyterhub_config.py").write_text(CONFIG.format(p=params, extra=extra_config))
        self.log_path = self.dir / "jupyterhub.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TestHub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
        env["JUPYTERHUB_CRYPT_KEY"] = self.hub_crypt_key  # auth_state's, the hub's own
        self._log = open(self.log_path, "wb")
        self._proc = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(self.dir / "jupyterhub_config.py")],
            cwd=self.dir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited:\n{self.log_text()[-4000:]}")
            with contextlib.suppress(httpx2.HTTPError):
                r = httpx2.get(f"{self.service_url}api/info", timeout=2, trust_env=False)
                if r.status_code == 403:  # the service answers (and wants a hub login)
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"jupyterhub did not start:\n{self.log_text()[-4000:]}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- the hub API as the tester service -----------------------------------------
    def api(self, method: str, path: str, body: Any = None) -> Any:
        r = httpx2.request(
            method,
            f"{self.public_url}hub/api/{path}",
            headers={"Authorization": f"token {self.tester_token}"},
            json=body,
            timeout=60,
            trust_env=False,
        )
        if r.status_code >= 400:
            raise AssertionError(f"{method} {path} -> {r.status_code}: {r.text}")
        return r.json() if r.content else None

    def add_user(self, name: str, admin: bool = False) -> str:
        """Creates the user; returns an API token of theirs (a stand-in for their browser)."""
        with contextlib.suppress(AssertionError):
            self.api("POST", f"users/{name}", {"admin": admin})
        token = self.api("POST", f"users/{name}/tokens", {"note": "test"})
        return str(token["token"])

    def start_server(self, name: str) -> None:
        with contextlib.suppress(AssertionError):
            self.api("POST", f"users/{name}/server")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            model = self.api("GET", f"users/{name}")
            server = model.get("servers", {}).get("", {})
            if server.get("ready"):
                return
            time.sleep(0.3)
        raise AssertionError(f"{name}'s server did not start:\n{self.log_text()[-4000:]}")

    def server_pid(self, name: str) -> int:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                environ = (proc / "environ").read_bytes().split(b"\0")
                if (
                    f"JUPYTERHUB_USER={name}".encode() in environ
                    and b"singleuser" in (proc / "cmdline").read_bytes()
                ):
                    return int(proc.name)
        raise AssertionError(f"no server process for {name}")


@contextlib.contextmanager
def running_hub(workdir: Path, **kw: Any) -> Iterator[TestHub]:
    hub = TestHub(workdir, **kw)
    try:
        yield hub.start()
    finally:
        hub.stop()


def generic_oauth_config(
    idp: Any, login_callback: str, scope: tuple[str, ...] | list[str] = ("openid", "email")
) -> str:
    """jupyterhub_config.py lines: the hub logs users in at ``idp`` (a TestIdP) with
    OAuthenticator's GenericOAuthenticator, the username being the IdP's ``sub``."""
    meta = idp.discovery()
    login = {
        "client_id": idp.client_id,
        "client_secret": idp.client_secret,
        "oauth_callback_url": login_callback,
        "authorize_url": meta["authorization_endpoint"],
        "token_url": meta["token_endpoint"],
        "userdata_from_id_token": True,
        "username_claim": "sub",
        "scope": list(scope),
    }
    return "".join(f"c.GenericOAuthenticator.{k} = {v!r}\n" for k, v in login.items())


def use_oauth_login(hub: Any, idp: Any, scope: list[str]) -> None:
    """Make ``hub`` (a TestHub with authenticator="generic-oauth") log users in at the
    test IdP ``idp`` with GenericOAuthenticator, asking for ``scope``."""
    cfg = hub.dir / "jupyterhub_config.py"
    login_callback = f"{hub.public_url}hub/oauth_callback"
    cfg.write_text(cfg.read_text() + generic_oauth_config(idp, login_callback, scope))


def service_config(**connauth: Any) -> str:
    lines = [f"c.ConnAuth.{k} = {v!r}" for k, v in connauth.items() if k[0] != "_"]
    lines += [f"c.ConnAuthHub.{k[1:]} = {v!r}" for k, v in connauth.items() if k[0] == "_"]
    return "\n".join(lines) + "\n"


def service_hub(work: Path, crypt_key: str | None = None, **kw: Any) -> TestHub:
    """A TestHub in ``work/hub``, not started and with no service config yet (the IdP
    must know its callback URL first). The secrets (the crypt key, the IdP client
    secret) reach the service's environment only: not the hub's, not user servers'."""
    env = {
        "JUPYTERHUB_CRYPT_KEY": crypt_key or Fernet.generate_key().decode(),
        "JUPYTER_CONNAUTH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
    }
    return TestHub(work / "hub", service_config="", service_env=env, **kw)


def store_url(work: Path) -> str:
    """The service's token store: ``work/connauth.sqlite``."""
    return f"sqlite:///{work / 'connauth.sqlite'}"


def replica_config(idp: Any, **connauth: Any) -> Config:
    """The config of a service replica built in-process (no hub): ``idp``'s client (a
    TestIdP) and one connection, ``sales``, whose tokens the tests look at (its warehouse
    is never called); ``connauth``: more ConnAuth settings."""
    cfg = Config()
    cfg.ConnAuth.discovery_url = idp.discovery_url
    cfg.ConnAuth.client_id = idp.client_id
    cfg.ConnAuth.client_secret = idp.client_secret
    cfg.ConnAuth.connections = {
        "sales": {
            "connector": "databricks",
            "server_hostname": "h",
            "http_path": "/p",
            "scopes": "sql offline_access",
        }
    }
    for name, value in connauth.items():
        setattr(cfg.ConnAuth, name, value)
    return cfg


def configure_service(hub: TestHub, idp: Any, work: Path, **connauth: Any) -> None:
    """Write ``hub``'s connauth service config: the client of ``idp`` (a TestIdP), the
    token store in ``work`` (store_url); ``connauth``: the rest, as service_config."""
    (hub.dir / "connauth_hub_config.py").write_text(
        service_config(
            discovery_url=idp.discovery_url,
            client_id=idp.client_id,
            public_url=hub.service_url,
            **{"_db_url": store_url(work), **connauth},
        )
    )


@contextlib.contextmanager
def hub_browser(public_url: str, user: str) -> Iterator[httpx2.Client]:
    """A browser signed in to the hub as ``user`` (DummyAuthenticator: any password)."""
    with httpx2.Client(trust_env=False, timeout=30) as browser:
        login = f"{public_url}hub/login"
        browser.get(login)
        xsrf = browser.cookies.get("_xsrf") or ""
        r = browser.post(login, data={"username": user, "password": "x", "_xsrf": xsrf})
        assert r.status_code in (200, 302), r.text
        yield browser
