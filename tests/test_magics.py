"""The %sql_connector line commands in a real IPython shell, against the real server
and IdP (consent completed headlessly while the magic waits)."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from tests.idp_fixture import headless_login


class Shell:
    """An IPython shell whose display output is recorded (the balloon, tables)."""

    def __init__(self, env: dict[str, str] | None, monkeypatch: pytest.MonkeyPatch) -> None:
        if env is not None:
            monkeypatch.setenv("JUPYTER_CONNAUTH_URL", env["url"])
            monkeypatch.setenv("JUPYTER_CONNAUTH_TOKEN", env["token"])
        self.ip = InteractiveShell.instance()
        self.outputs: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        pub = self.ip.display_pub

        def publish(data: dict[str, Any], metadata: Any = None, **kw: Any) -> None:
            with self.lock:
                self.outputs.append(dict(data))

        monkeypatch.setattr(pub, "publish", publish)
        self.ip.run_line_magic("load_ext", "jupyter_connauth")

    def text(self) -> str:
        with self.lock:
            return "\n".join(str(o.get("text/plain", "")) for o in self.outputs)

    async def run(self, code: str) -> Any:
        result = await asyncio.to_thread(self.ip.run_cell, code)
        return result


@pytest.fixture
def shell(kernel_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    s = Shell(kernel_env, monkeypatch)
    yield s
    s.ip.magics_manager.registry.pop("ConnAuthMagics", None)
    InteractiveShell.clear_instance()


async def sign_in_when_asked(shell: Shell, login: str = "alice") -> str:
    """Wait for the balloon's link, then do what the user does in the popup."""
    for _ in range(200):
        m = re.search(r"(http://127\.0\.0\.1:\d+/auth\?\S+)", shell.text())
        if m:
            callback = await asyncio.to_thread(headless_login, m.group(1), login)
            async with __import__("httpx2").AsyncClient() as http:
                page = await http.get(callback)
            assert page.status_code == 200, page.text
            return callback
        await asyncio.sleep(0.05)
    raise AssertionError(f"no balloon; output was:\n{shell.text()}")


async def test_help_and_usage_errors(shell, capsys):
    await shell.run("%sql_connector --help")
    assert "%%sql_connector NAME" in capsys.readouterr().out
    result = await shell.run("%sql_connector frobnicate x")
    assert "Unknown command" in str(result.error_in_exec)
    result = await shell.run("%%sql_connector\nSELECT 1")
    assert "Which connection?" in str(result.error_in_exec)


async def test_authorize_status_revoke(shell):
    await shell.run("%sql_connector status")
    assert "first use" in shell.text()
    running = asyncio.ensure_future(shell.run("%sql_connector authorize sales"))
    await sign_in_when_asked(shell)
    result = await running
    assert result.error_in_exec is None, result.error_in_exec
    assert "Authorized as alice@example.com for sales" in shell.text()
    shell.outputs.clear()
    await shell.run("%sql_connector status")
    assert "alice@example.com" in shell.text()
    await shell.run("%sql_connector revoke sales")
    await shell.run("%sql_connector status")
    assert "you revoked" in shell.text()


async def test_doctor(shell):
    await shell.run("%sql_connector doctor sales")
    out = shell.text()
    assert "redirect URI" in out and "oauth/connector/callback" in out
    assert "discovery URL" in out


async def test_unknown_connection_is_one_clear_message(shell):
    result = await shell.run("%sql_connector whoami nope")
    err = result.error_in_exec
    assert err is not None and "No connection named 'nope'" in str(err)
    assert hasattr(err, "_render_traceback_")


async def test_no_wait_shows_the_balloon_and_returns(shell):
    result = await shell.run("%%sql_connector sales --no-wait\nSELECT 1")
    assert result.error_in_exec is None
    text = shell.text()
    assert not any("text/html" in o for o in shell.outputs)  # a terminal: text only
    magics = shell.ip.magics_manager.registry["ConnAuthMagics"]
    magics._rich = lambda: True  # as in a notebook (ipykernel)
    await shell.run("%%sql_connector sales --no-wait\nSELECT 1")
    assert "Authorize sales" in text and "/auth?" in text
    assert "Run the cell again after you have authorized" in text
    html = "".join(str(o.get("text/html", "")) for o in shell.outputs)
    assert 'class="connauth-authorize"' in html and "window.open(" in html


async def test_interrupt_cancels_the_wait_and_drops_the_link(shell):
    running = asyncio.ensure_future(shell.run("%sql_connector authorize sales"))
    for _ in range(200):
        if "/auth?" in shell.text():
            break
        await asyncio.sleep(0.05)
    # Ctrl-C in the kernel: KeyboardInterrupt in the thread running the cell
    magics = shell.ip.magics_manager.registry["ConnAuthMagics"]
    magics.poll_interval = 0.05
    target = [t for t in threading.enumerate() if t.name.startswith("asyncio_")]
    assert target
    import ctypes

    for t in target:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(t.ident), ctypes.py_object(KeyboardInterrupt)
        )
    result = await running
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    last = shell.outputs[-1]
    assert "cancelled" in str(last.get("text/plain"))
    assert "/auth?" not in str(last)
