"""Start/stop the local Snowflake server (server.py) from the project's venv.

No fakesnow import here: the server runs as a subprocess with the fakesnow env's python
(created on first use by setup_env.py).

    with SnowflakeServer(config) as sf:
        conn = snowflake.connector.connect(**sf.connect_kwargs(token))
        sf.stats()  # {"logins": 1, ...}
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

#: Users for tests (config ``users``): alice may take the roles ANALYST and REPORTER,
#: bob ANALYST only.
USERS = {
    "alice@example.com": {
        "name": "ALICE",
        "default_role": "ANALYST",
        "roles": ["ANALYST", "REPORTER"],
    },
    "bob@example.com": {"name": "BOB", "default_role": "ANALYST", "roles": ["ANALYST"]},
}


def oauth_integrations(
    *,
    idp_issuer: str,
    jwks_url: str,
    idp_audience: str,
    broker_issuer: str,
    broker_public_pem: str,
    broker_audience: str,
    names: tuple[str, str] = ("IDP_OAUTH", "JUPYTER_BROKER"),
    **idp_options: Any,
) -> list[dict[str, Any]]:
    """Config ``integrations``: External OAuth trusting the IdP's JWKS (any role the
    token's scope names), and OAuth JWT trusting the broker's public key."""
    idp = {
        "name": names[0],
        "issuer": idp_issuer,
        "jwks_url": jwks_url,
        "audiences": [idp_audience],
        "any_role_mode": "ENABLE",
        **idp_options,
    }
    broker = {
        "name": names[1],
        "issuer": broker_issuer,
        "public_keys": [broker_public_pem],
        "audiences": [broker_audience],
    }
    return [idp, broker]


HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "server.py"


def _setup_env_module() -> Any:
    try:
        from . import setup_env

        return setup_env
    except ImportError:  # loaded by path, not as part of a package
        spec = importlib.util.spec_from_file_location(
            "_connauth_snowflake_setup_env", HERE / "setup_env.py"
        )
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


def _connector_major() -> int:
    try:
        from importlib.metadata import version

        return int(version("snowflake-connector-python").split(".")[0])
    except Exception:
        return 0


class SnowflakeServerError(RuntimeError):
    pass


class SnowflakeServer:
    """A local Snowflake (fakesnow + External OAuth checks) in a subprocess on a free port."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        config: dict[str, Any],
        *,
        python: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 60.0,
        log_level: str = "warning",
    ) -> None:
        self.config = dict(config)
        self.python = Path(python) if python else None
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self.start_seconds: float | None = None  # wall time of the last start(), env setup excluded
        self._proc: subprocess.Popen[str] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None
        self._stdout_thread: threading.Thread | None = None

    # ---- lifecycle

    @staticmethod
    def ensure_env() -> Path:
        """Create the fakesnow env if needed (idempotent, ~30 s at first); return its python."""
        return Path(_setup_env_module().ensure())

    def start(self) -> SnowflakeServer:
        if self._proc is not None:
            raise SnowflakeServerError("already started")
        python = self.python or self.ensure_env()
        self._tmpdir = tempfile.TemporaryDirectory(prefix="connauth-sf-")
        cfg_path = Path(self._tmpdir.name) / "config.json"
        cfg_path.write_text(json.dumps(self.config))
        self._log_path = Path(self._tmpdir.name) / "server.log"
        t0 = time.perf_counter()
        with open(self._log_path, "w") as log_file:
            self._proc = subprocess.Popen(
                [
                    str(python),
                    str(SERVER_SCRIPT),
                    "--config",
                    str(cfg_path),
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--log-level",
                    self.log_level,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                start_new_session=True,
                # fakesnow makes its stage bucket with mkdtemp() at import: keep it in our
                # temp dir so it goes when the server stops (it was left in /tmp)
                env={**os.environ, "TMPDIR": self._tmpdir.name},
            )
        ready = threading.Event()
        found: list[int] = []
        proc = self._proc

        def read_stdout() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:  # keeps draining after READY so the pipe never fills
                if not found and line.startswith("READY "):
                    found.append(int(line.split()[1]))
                    ready.set()
            ready.set()  # EOF: the process died

        self._stdout_thread = threading.Thread(
            target=read_stdout, name="snowflake-server-stdout", daemon=True
        )
        self._stdout_thread.start()
        if not ready.wait(self.startup_timeout) or not found:
            log = self.log()
            self.stop()
            raise SnowflakeServerError(f"Snowflake server did not become ready:\n{log}")
        self.port = found[0]
        self.start_seconds = time.perf_counter() - t0
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stdout_thread is not None:
            self._stdout_thread.join(5)
            self._stdout_thread = None
        atexit.unregister(self.stop)
        if self._tmpdir is not None:
            self._keep_log = self.log()
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> SnowflakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        """The server's stderr so far (login rejections are logged there with the reason)."""
        if self._log_path is not None and self._log_path.exists():
            return self._log_path.read_text(errors="replace")
        return getattr(self, "_keep_log", "")

    # ---- client side helpers

    def driver_options(self) -> dict[str, Any]:
        """A connection's ``driver_options`` reaching this server (plain HTTP)."""
        return {
            "host": self.host,
            "port": self.port,
            "protocol": "http",
            "login_timeout": 30,
            "enable_server_session_keep_alive_auto_detection": False,
        }

    def connect_kwargs(self, token: str, role: str | None = None, **extra: Any) -> dict[str, Any]:
        """Keyword arguments for ``snowflake.connector.connect(...)`` with an OAuth access token."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "protocol": "http",
            "account": self.config.get("account", "connauth"),
            "authenticator": "oauth",
            "token": token,
            "database": str(self.config.get("database", "CONNAUTH")),
            "schema": str(self.config.get("schema", "PUBLIC")),
            "login_timeout": 30,
        }
        if _connector_major() >= 5:
            # 5.x warns (FutureWarning) when this is left unset
            kwargs["enable_server_session_keep_alive_auto_detection"] = False
        if role is not None:
            kwargs["role"] = role
        kwargs.update(extra)
        return kwargs

    def set_issuer(self, integration: str, issuer: str) -> None:
        """ALTER SECURITY INTEGRATION ... SET EXTERNAL_OAUTH_ISSUER, at runtime."""
        body = json.dumps({"name": integration, "issuer": issuer}).encode()
        req = urllib.request.Request(f"{self.url}/__test__/issuer", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def stats(self) -> dict[str, int]:
        """{"logins", "failed_logins", "active_sessions", "queries"} counted by the server."""
        with urllib.request.urlopen(f"{self.url}/__test__/stats", timeout=10) as r:
            stats: dict[str, int] = json.loads(r.read())
        return stats


if __name__ == "__main__":  # manual use: python fixture.py cfg.json
    with SnowflakeServer(json.loads(Path(sys.argv[1]).read_text())) as s:
        print(
            f"listening on {s.url} (started in {s.start_seconds:.2f}s); Ctrl-C to stop", flush=True
        )
        try:
            while s.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
