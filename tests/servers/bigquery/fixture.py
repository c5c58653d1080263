"""Start/stop the local BigQuery test server from the project's venv.

Imports nothing from bqemulator: the server runs as a subprocess in its own
venv (``.cache/envs/bqemulator``, created by ``setup_env.py``).

    srv = BigQueryServer({"jwks_url": ..., "issuer": ..., "audience": ...,
                          "users": {"alice@example.com": ["demo"]}})
    srv.start()
    client = srv.client(token, project="test-project")
    ...
    srv.stop()
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..process import LocalServer, end_process, spawn_server, wait_ready

#: The columns of the table ``seed_big_rows`` creates (README.md: config), in order.
BIG_COLUMNS = [
    "id",
    "qty",
    "price",
    "ratio",
    "name",
    "category",
    "created_at",
    "updated_at",
    "amount",
    "active",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SERVER_PY = HERE / "server.py"
SETUP_PY = HERE / "setup_env.py"
DEFAULT_ENV = REPO / ".cache" / "envs" / "bqemulator"


def env_python(env_dir: Path | None = None) -> Path:
    """The bqemulator venv's interpreter (``$JC_BQEMULATOR_PYTHON`` overrides)."""
    override = os.environ.get("JC_BQEMULATOR_PYTHON")
    if override:
        return Path(override)
    env_dir = env_dir or DEFAULT_ENV
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_env(env_dir: Path | None = None) -> Path:
    """Create the server venv if missing/stale (idempotent, ~30 s the first time)."""
    if os.environ.get("JC_BQEMULATOR_PYTHON"):
        return env_python()
    env_dir = env_dir or DEFAULT_ENV
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, str(SETUP_PY), "--env", str(env_dir), "--quiet"], check=True)
    return env_python(env_dir)


class BigQueryServer(LocalServer):
    """A bqemulator-backed BigQuery REST (+ gRPC Storage API) server with OAuth checks."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        python: str | os.PathLike[str] | None = None,
        startup_timeout: float = 120.0,
        ensure: bool = True,
    ) -> None:
        self.config = dict(config)
        self._python = Path(python) if python else None
        self._ensure = ensure
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.grpc_port: int | None = None
        self.start_seconds: float | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> BigQueryServer:
        if self._proc is not None:
            return self
        python = self._python or (ensure_env() if self._ensure else env_python())
        self._tmp = tempfile.TemporaryDirectory(prefix="bq-test-server-")
        tmp = Path(self._tmp.name)
        cfg = dict(self.config)
        cfg.setdefault("host", "127.0.0.1")
        cfg.setdefault("port", 0)
        cfg.setdefault("grpc_port", 0)
        t0 = time.perf_counter()
        self._proc, self.log_path = spawn_server(
            [str(python), "-W", "ignore"], SERVER_PY, cfg, tmp, cwd=str(tmp)
        )
        try:
            ports = wait_ready(
                self._proc, self.log_path, self.startup_timeout, "BigQuery test server"
            )
        except RuntimeError:
            self.stop()
            raise
        self.port, self.grpc_port = ports["READY"], ports.get("GRPC")
        self.start_seconds = time.perf_counter() - t0
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        end_process(proc, timeout=15)
        self._cleanup()

    def _cleanup(self) -> None:
        self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- access -----------------------------------------------------------

    @property
    def grpc_endpoint(self) -> str:
        if self.grpc_port is None:
            raise RuntimeError("server not started")
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def project(self) -> str:
        return str(self.config.get("project", "test-project"))

    def client(self, token: str, project: str | None = None, **kwargs: Any) -> Any:
        """A ``google.cloud.bigquery.Client`` that sends ``token`` as its Bearer token.

        ``credentials=`` in kwargs replaces the default
        ``google.oauth2.credentials.Credentials(token)``.
        """
        from google.cloud import bigquery
        from google.oauth2.credentials import Credentials

        credentials = kwargs.pop("credentials", None) or Credentials(token)
        return bigquery.Client(
            project=project or self.project,
            credentials=credentials,
            client_options={"api_endpoint": self.endpoint},
            **kwargs,
        )

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.endpoint}/__test__/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def reset_stats(self) -> None:
        req = urllib.request.Request(f"{self.endpoint}/__test__/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")
