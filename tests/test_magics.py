"""The %sql_connector line commands in a real IPython shell, against the real server
and IdP (consent completed headlessly while the magic waits)."""

from __future__ import annotations

import asyncio
import threading

from tests.ipython_shell import sign_in_when_asked


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
