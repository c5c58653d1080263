"""Start/stop the local Google STS (server.py) from the project's venv.

sts = STSServer({"providers": {PROVIDER: {"issuer": idp.issuer, "client_id": ...,
                 "attribute_mapping": {"google.subject": "assertion.email"}}}}).start()
sts.token_url            # http://127.0.0.1:PORT/v1/token
sts.stats(), sts.reset_stats(), sts.set_provider(PROVIDER, {...}), sts.stop()
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from ..process import LocalServer, end_process, spawn_server, wait_ready

SERVER_PY = Path(__file__).resolve().parent / "server.py"


def workforce_provider(pool: str = "connauth-pool", provider: str = "test-idp") -> str:
    """A workforce pool provider's full resource name (the STS ``audience``)."""
    return f"//iam.googleapis.com/locations/global/workforcePools/{pool}/providers/{provider}"


class STSServer(LocalServer):
    def __init__(self, config: dict[str, Any], *, startup_timeout: float = 30.0) -> None:
        self.config = dict(config)
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None

    def start(self) -> STSServer:
        if self._proc is not None:
            return self
        self._tmp = tempfile.TemporaryDirectory(prefix="sts-test-server-")
        tmp = Path(self._tmp.name)
        self._proc, self.log_path = spawn_server([sys.executable], SERVER_PY, self.config, tmp)
        try:
            ports = wait_ready(self._proc, self.log_path, self.startup_timeout, "STS test server")
        except RuntimeError:
            self.stop()
            raise
        self.port = ports["READY"]
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        end_process(proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def token_url(self) -> str:
        return f"{self.endpoint}/v1/token"

    def _call(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.endpoint}{path}", data=data, method="POST" if data is not None else "GET"
        )
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("/__test__/stats")
        return result

    def reset_stats(self) -> None:
        self._call("/__test__/reset", {})

    def set_provider(self, audience: str, provider: dict[str, Any]) -> None:
        """Create or replace a pool provider (issuer, client_id, attribute_mapping,
        attribute_condition, disabled)."""
        self._call("/__test__/provider", {"audience": audience, **provider})
