"""What the local test servers (tests/servers/*/fixture.py) share: each runs in a
subprocess, is started by ``start()`` or ``with``, and stopped the same way."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Self


def spawn_server(
    interpreter: list[str], script: Path, config: dict[str, Any], workdir: Path, **popen: Any
) -> tuple[subprocess.Popen[bytes], Path]:
    """Write ``config`` to ``workdir/config.json`` and run ``interpreter script --config
    <it> --parent-pid <this process>`` with its output in ``workdir/server.log``; the
    process and the log's path (for wait_ready)."""
    cfg_path = workdir / "config.json"
    cfg_path.write_text(json.dumps(config), encoding="utf-8")
    log_path = workdir / "server.log"
    argv = [*interpreter, str(script), "--config", str(cfg_path), "--parent-pid", str(os.getpid())]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen
        )
    return proc, log_path


def wait_ready(
    proc: subprocess.Popen[Any], log_path: Path, timeout: float, name: str
) -> dict[str, int]:
    """Read the server's log until it says ``READY <port>``; the ports of all the
    ``WORD <port>`` lines it said by then, by WORD. RuntimeError with the log's tail if
    the process exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        ports = {
            parts[0]: int(parts[1])
            for parts in (line.split() for line in text.splitlines())
            if len(parts) == 2 and parts[1].isdigit()
        }
        if "READY" in ports:
            return ports
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start:\n{text[-4000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready in {timeout}s:\n{text[-4000:]}")
        time.sleep(0.05)


def end_process(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """Terminate ``proc`` (SIGTERM), kill it if it is still there after ``timeout``
    seconds, and close its stdout pipe if it has one."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    if proc.stdout is not None:
        proc.stdout.close()


class LocalServer:
    """A test server in a subprocess, listening on ``127.0.0.1:port`` once started."""

    __test__ = False  # not a pytest test class
    port: int | None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        return f"http://127.0.0.1:{self.port}"
