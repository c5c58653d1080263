"""An IPython shell for tests, and the user's part of the consent (headless)."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import httpx2
import pytest
from IPython.core.interactiveshell import InteractiveShell

from tests.idp_fixture import headless_device, headless_login


class Shell:
    """An IPython shell whose display output is recorded (the balloon, tables)."""

    def __init__(self, env: dict[str, str] | None, monkeypatch: pytest.MonkeyPatch) -> None:
        if env is not None:
            monkeypatch.setenv("JUPYTER_CONNAUTH_URL", env["url"])
            monkeypatch.setenv("JUPYTER_CONNAUTH_TOKEN", env["token"])
        self.ip = InteractiveShell.instance()
        self.outputs: list[dict[str, Any]] = []
        self.metadata: list[dict[str, Any]] = []  # each output's metadata, in order
        self.lock = threading.Lock()
        pub = self.ip.display_pub

        def publish(data: dict[str, Any], metadata: Any = None, **kw: Any) -> None:
            with self.lock:
                self.outputs.append(dict(data))
                self.metadata.append(dict(metadata or {}))

        monkeypatch.setattr(pub, "publish", publish)
        self.ip.run_line_magic("load_ext", "jupyter_connauth")

    def close(self) -> None:
        """Unregister the magics and close what they opened (the warehouse sessions and
        the broker client's HTTP connections: left open, each is an "unclosed socket"
        ResourceWarning at the end of the test run), then drop the shell."""
        magics = self.ip.magics_manager.registry.pop("ConnAuthMagics", None)
        if magics is not None:
            if magics._runner is not None:
                magics._runner.close()
            if magics._client is not None:
                magics._client.close()
        InteractiveShell.clear_instance()

    def text(self) -> str:
        with self.lock:
            return "\n".join(str(o.get("text/plain", "")) for o in self.outputs)

    async def run(self, code: str) -> Any:
        result = await asyncio.to_thread(self.ip.run_cell, code)
        return result


async def sign_in_when_asked(
    shell: Shell, login: str = "alice", headers: dict[str, str] | None = None
) -> str:
    """Wait for the balloon's link, then do what the user does in the popup (in a
    browser signed in to Jupyter: ``shell.browser_headers``, or ``headers``)."""
    for _ in range(200):
        m = re.search(r"(http://127\.0\.0\.1:\d+/auth\?\S+)", shell.text())
        if m:
            callback = await asyncio.to_thread(headless_login, m.group(1), login)
            headers = headers or getattr(shell, "browser_headers", None)
            async with httpx2.AsyncClient(headers=headers) as http:
                page = await http.get(callback)
            assert page.status_code == 200, page.text
            return callback
        await asyncio.sleep(0.05)
    raise AssertionError(f"no balloon; output was:\n{shell.text()}")


async def run_signed_in(shell: Shell, cell: str, login: str = "alice") -> Any:
    """Run ``cell``, sign in as ``login`` when its balloon asks (sign_in_when_asked),
    and check the cell then ran without an error; its result."""
    running = asyncio.ensure_future(shell.run(cell))
    await sign_in_when_asked(shell, login)
    result = await running
    assert result.error_in_exec is None, result.error_in_exec
    return result


async def enter_device_code_when_asked(
    shell: Shell, login: str = "alice", *, deny: bool = False
) -> str:
    """Wait for the device-code balloon, then do what the user does on their phone:
    open the verification URI, enter the code shown, sign in and consent (or deny)."""
    for _ in range(200):
        m = re.search(r"open (http://\S+)\nand enter the code: (\S+)", shell.text())
        if m:
            return await asyncio.to_thread(
                headless_device, m.group(1), m.group(2), login, deny=deny
            )
        await asyncio.sleep(0.05)
    raise AssertionError(f"no device code shown; output was:\n{shell.text()}")
