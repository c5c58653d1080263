"""The %sql_connector line commands in a real IPython shell, against the real server
and IdP (consent completed headlessly while the magic waits)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from tests.ipython_shell import Shell, sign_in_when_asked


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
    err = result.error_in_exec  # one line, no traceback
    assert err._render_traceback_() == [
        "\x1b[33mCancelled\x1b[0m: cancelled while waiting for consent; nothing ran"
    ]
    last = shell.outputs[-1]
    assert "cancelled" in str(last.get("text/plain"))
    assert "/auth?" not in str(last)


# -- parsing: IPython's magic_arguments, help and usage errors ---------------------------
@pytest.fixture
def bare_shell(jp_environ: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shell]:
    """A shell with the extension loaded and no broker: parsing never needs one (its
    IPython history goes to jp_environ's temporary HOME)."""
    s = Shell(None, monkeypatch)
    yield s
    s.close()


async def test_help_is_generated_from_the_parsers(bare_shell, capsys):
    await bare_shell.run("%sql_connector?")
    doc = capsys.readouterr().out
    for generated in (
        "%%sql_connector [-o VAR] [--params JSON|{var}] [--no-wait]",  # argparse's usage
        "-o VAR, --out VAR",
        "--max-rows N",
        "%sql_connector authorize [--switch-account] [--device] NAME",
        "%sql_connector admin revoke USER [NAME]",
        "%sql_connector admin scopes NAME SCOPES",
    ):
        assert generated in doc, (generated, doc)
    await bare_shell.run("%%sql_connector?")
    assert "-o VAR, --out VAR" in capsys.readouterr().out
    await bare_shell.run("%sql_connector --help")
    out = capsys.readouterr().out
    assert out.startswith("usage: %%sql_connector [-o VAR]") and "-o VAR, --out VAR" in out
    await bare_shell.run("%%sql_connector sales --help\nSELECT 1")  # help, no query
    assert "%sql_connector admin revoke USER [NAME]" in capsys.readouterr().out
    result = await bare_shell.run("%sql_connector authorize -h")
    assert result.error_in_exec is None
    out = capsys.readouterr().out
    assert out.startswith("usage: %sql_connector authorize [--switch-account] [--device] NAME")
    assert "another IdP account" in out


@pytest.mark.parametrize(
    ("line", "message", "fix"),
    [
        (
            "%sql_connector revoke sales finance",
            "revoke: unrecognized arguments: finance",
            "revoke NAME",
        ),
        (
            "%sql_connector authorize",
            "arguments are required: NAME",
            "authorize [--switch-account] [--device] NAME",
        ),
        (
            "%sql_connector authorize sales --switch",
            "unrecognized arguments: --switch",
            "authorize",
        ),
        (
            "%sql_connector admin frob",
            "invalid choice: 'frob'",
            "admin {users,revoke,revoke-all,scopes}",
        ),
        (
            "%sql_connector admin scopes sales",
            "arguments are required: SCOPES",
            "admin scopes NAME SCOPES",
        ),
        (
            "%sql_connector sales",
            "Unknown command 'sales'",
            "%%sql_connector NAME on the first line",
        ),
        (
            "%%sql_connector sales -o 1x\nSELECT 1",
            "-o/--out: needs a variable name, got '1x'",
            "usage: %%sql_connector",
        ),
        (
            "%%sql_connector sales --max-rows 0\nSELECT 1",
            "--max-rows: needs a positive number",
            "usage:",
        ),
        ("%%sql_connector sales --no\nSELECT 1", "unrecognized arguments: --no", "usage:"),
        ("%%sql_connector sales extra\nSELECT 1", "unrecognized arguments: extra", "usage:"),
    ],
)
async def test_bad_usage_is_one_clear_line(bare_shell, capsys, line, message, fix):
    result = await bare_shell.run(line)
    err = result.error_in_exec
    assert not isinstance(err, SystemExit) and hasattr(err, "_render_traceback_"), err
    assert message in err.message and "\n" not in err.message
    assert fix in err.fix
    assert "Traceback" not in capsys.readouterr().out


# -- authorize --switch-account ------------------------------------------------------------
class _Broker(BaseHTTPRequestHandler):
    """Records what the kernel sends; answers authorize with a flow that completes."""

    seen: ClassVar[list[tuple[str, str, bytes]]] = []

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, b""))
        done = {"status": "complete", "identity": "bob@example.com"}
        self._answer(done if "/flows/" in self.path else {})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(("POST", self.path, body))
        self._answer(
            {
                "status": "consent_required",
                "connection": "sales",
                "reason": "user_request",
                "authorize_url": "http://127.0.0.1:9/auth?x=1",
                "flow_id": "f1",
                "expires_at": time.time() + 600,
            }
        )

    def log_message(self, *args: Any) -> None:
        pass


async def test_switch_account_is_sent_to_the_broker(jp_environ, monkeypatch):
    _Broker.seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Broker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"url": f"http://127.0.0.1:{server.server_port}/connauth/api/", "token": "k"}
    s = Shell(env, monkeypatch)
    try:
        for line in ("authorize sales --switch-account", "authorize sales"):
            result = await s.run(f"%sql_connector {line}")
            assert result.error_in_exec is None, result.error_in_exec
    finally:
        s.close()
        server.shutdown()
        server.server_close()
    posts = [(path, body) for method, path, body in _Broker.seen if method == "POST"]
    assert [path for path, _ in posts] == ["/connauth/api/connections/sales/authorize"] * 2
    assert json.loads(posts[0][1]) == {"switch_account": True}
    assert posts[1][1] == b""  # a plain authorize sends what it always sent: no body
    assert "Authorized as bob@example.com for sales" in s.text()


async def test_switch_account_through_the_server(shell):
    """alice's grant, then a consent by another IdP account, asked for explicitly."""
    running = asyncio.ensure_future(shell.run("%sql_connector authorize sales"))
    await sign_in_when_asked(shell)
    assert (await running).error_in_exec is None
    shell.outputs.clear()
    running = asyncio.ensure_future(shell.run("%sql_connector authorize sales --switch-account"))
    await sign_in_when_asked(shell, login="bob")
    result = await running
    assert result.error_in_exec is None, result.error_in_exec
    assert "Authorized as bob@example.com for sales" in shell.text()


async def test_consent_refused_at_the_idp_says_how_to_get_a_new_link(shell):
    """The user clicks Cancel at the IdP: the balloon's link is gone, so the fix says
    what brings a new one (not "click Authorize again")."""
    import re

    import httpx2

    from tests.idp_fixture import headless_login

    running = asyncio.ensure_future(shell.run("%%sql_connector sales\nSELECT 1"))
    for _ in range(200):
        m = re.search(r"(http://127\.0\.0\.1:\d+/auth\?\S+)", shell.text())
        if m:
            break
        await asyncio.sleep(0.05)
    assert m, shell.text()
    callback = await asyncio.to_thread(headless_login, m.group(1), "alice", abort=True)
    async with httpx2.AsyncClient(headers=shell.browser_headers) as http:
        await http.get(callback)
    result = await running
    err = result.error_in_exec
    assert err is not None and "for a new Authorize link" in str(err.fix), err.fix
    assert "run the cell again (or %sql_connector authorize sales)" in str(err.fix)
    assert "/auth?" not in str(shell.outputs[-1])
