"""Start the local Databricks SQL warehouse in a subprocess, for tests.

from servers.databricks.fixture import DatabricksServer   # or tests.servers...

with DatabricksServer({"jwks_url": ..., "issuer": ..., "audience": ...,
                       "users": {"alice@example.com": {"name": "Alice"}}}) as srv:
    conn = databricks.sql.connect(**srv.connect_kwargs(token))
    srv.stats()["sessions_opened"]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

from ..process import LocalServer, end_process
from .dbx_tls import make_self_signed

SERVER_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server.py")


class DatabricksServer(LocalServer):
    """A running local warehouse with a fresh self-signed certificate.

    The port speaks HTTPS and plain HTTP. ``tls=True`` (default): the driver's Thrift
    calls go over HTTPS; ``tls=False``: over plain HTTP (the driver's test-only
    ``_connection_uri='http://...'``). Either way ``server_hostname`` is
    ``127.0.0.1:<port>`` over HTTPS, because the driver's token-federation exchange
    (``POST https://<server_hostname>/oidc/v1/token``) always uses HTTPS.
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        tls: bool = True,
        python: str | None = None,
        startup_timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = dict(config or {})
        self.tls = tls
        self.python = python or sys.executable
        self.startup_timeout = startup_timeout
        self.env = env
        self.host = "127.0.0.1"
        self.port: int | None = None
        path = str(self.config.get("http_path", "/sql/1.0/warehouses/abc"))
        self.http_path = "/" + path.lstrip("/")
        self.ca_file: str | None = None
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._dir: str | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> DatabricksServer:
        if self._proc is not None:
            return self
        self._dir = tempfile.mkdtemp(prefix="dbx-test-warehouse-")
        cfg = dict(self.config)
        cfg.setdefault("host", self.host)
        cfg.setdefault("port", 0)
        if not cfg.get("tls_cert_file"):
            cert, key = make_self_signed(self._dir)
            cfg["tls_cert_file"], cfg["tls_key_file"] = cert, key
        self.ca_file = cfg["tls_cert_file"]
        cfg_path = os.path.join(self._dir, "config.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        self._log_path = os.path.join(self._dir, "server.log")
        log = open(self._log_path, "w")
        t0 = time.perf_counter()
        self._proc = subprocess.Popen(
            [self.python, SERVER_PY, "--config", cfg_path],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **(self.env or {})},
        )
        log.close()
        line = self._wait_ready()
        self.start_seconds = time.perf_counter() - t0
        self.port = int(line.split()[1])
        return self

    def _wait_ready(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        result: list[str] = []

        def reader() -> None:
            assert self._proc is not None and self._proc.stdout is not None
            for raw in self._proc.stdout:
                if raw.startswith("READY "):
                    result.append(raw.strip())
                    return

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(self.startup_timeout)
        if not result:
            self.stop()
            raise RuntimeError(f"databricks test server did not start:\n{self.log_text()}")
        return result[0]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        end_process(proc)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log_text(self) -> str:
        try:
            with open(self._log_path) as f:
                return f.read()
        except (OSError, AttributeError):
            return ""

    # ------------------------------------------------------------- clients

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def connect_kwargs(self, token: str, **extra: Any) -> dict[str, Any]:
        """Keyword arguments for ``databricks.sql.connect`` as *token*'s user."""
        # The driver derives its token-exchange URL (token federation, /oidc/v1/token)
        # and feature-flag URL from server_hostname alone, ignoring _port: so the
        # hostname carries the port, and _connection_uri gives the Thrift endpoint.
        scheme = "https" if self.tls else "http"
        kw: dict[str, Any] = {
            "server_hostname": f"{self.host}:{self.port}",
            "http_path": self.http_path,
            "access_token": token,
            "_connection_uri": f"{scheme}://{self.host}:{self.port}{self.http_path}",
            "_tls_trusted_ca_file": self.ca_file,
            "enable_telemetry": False,
        }
        kw.update(extra)
        return kw

    def _get(self, path: str) -> Any:
        import ssl

        ctx = ssl.create_default_context(cafile=self.ca_file)
        url = f"https://{self.host}:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
            return json.loads(r.read())

    def reject_issued_before(self, iat: float) -> None:
        """From now on, IdP tokens issued before ``iat`` are rejected (401)."""
        import ssl

        ctx = ssl.create_default_context(cafile=self.ca_file)
        req = urllib.request.Request(
            f"https://{self.host}:{self.port}/__test__/not_before",
            data=json.dumps({"iat": iat}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            r.read()

    def stats(self) -> dict[str, Any]:
        """Counters: sessions_opened/closed/active, sessions_by_user, statements,
        fetch_results, metadata_calls, cancels, auth_401, auth_403, ..."""
        return self._get("/__test__/stats")
