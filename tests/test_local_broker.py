"""No Jupyter server: the kernel runs the broker itself with a loopback callback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.idp_fixture import TestIdP, default_client, free_port
from tests.ipython_shell import Shell, enter_device_code_when_asked, sign_in_when_asked


@pytest.fixture
def loopback_port() -> int:
    return free_port()


@pytest.fixture
def local_idp(tmp_path: Path, loopback_port: int) -> Any:
    redirect = f"http://127.0.0.1:{loopback_port}/oauth/connector/callback"
    idp = TestIdP(
        workdir=tmp_path / "idp",
        extra_scopes=["sql"],
        clients=[default_client([redirect])],
        device_interval=1,
    )
    idp.start()
    yield idp
    idp.close()


@pytest.fixture
def consent_method() -> str:
    """c.LocalConnAuth.consent_method: the loopback, as the machine running these tests
    may have no display (where "auto" picks the device code)."""
    return "loopback"


@pytest.fixture
def local_shell(
    local_idp: TestIdP,
    loopback_port: int,
    consent_method: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    crypt_key: str,
) -> Any:
    config_dir = tmp_path / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "ConnAuth": {
                    "connections": {
                        "sales": {
                            "connector": "databricks",
                            "server_hostname": "h",
                            "http_path": "/p",
                            "scopes": "sql offline_access",
                        }
                    },
                    "store_path": str(tmp_path / "data" / "tokens.sqlite3"),
                },
                "LocalConnAuth": {
                    "loopback_port": loopback_port,
                    "consent_method": consent_method,
                },
            }
        )
    )
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("JUPYTER_CONNAUTH_DISCOVERY_URL", local_idp.discovery_url)
    monkeypatch.setenv("JUPYTER_CONNAUTH_CLIENT_ID", local_idp.client_id)
    monkeypatch.setenv("JUPYTER_CONNAUTH_CLIENT_SECRET", local_idp.client_secret or "")
    monkeypatch.delenv("JUPYTER_CONNAUTH_URL", raising=False)
    monkeypatch.delenv("JUPYTER_CONNAUTH_TOKEN", raising=False)
    shell = Shell(None, monkeypatch)
    yield shell
    shell.close()


async def test_authorize_without_a_server(local_shell, loopback_port):
    running = asyncio.ensure_future(local_shell.run("%sql_connector authorize sales"))
    callback = await sign_in_when_asked(local_shell)
    assert callback.startswith(f"http://127.0.0.1:{loopback_port}/oauth/connector/callback?")
    result = await running
    assert result.error_in_exec is None, result.error_in_exec
    assert "Authorized as alice@example.com for sales" in local_shell.text()
    magics = local_shell.ip.magics_manager.registry["ConnAuthMagics"]
    token = await asyncio.to_thread(magics.client.token, "sales")
    assert token.identity == "alice@example.com"
    await local_shell.run("%sql_connector status")
    assert "alice@example.com" in local_shell.text()


class TestDeviceCode:
    """RFC 8628 in the kernel's own broker, against the real IdP's device flow."""

    async def test_device_code_without_a_server(self, local_shell, local_idp):
        running = asyncio.ensure_future(local_shell.run("%sql_connector authorize sales --device"))
        title = await enter_device_code_when_asked(local_shell)
        assert title == "Sign-in Success"
        result = await running
        assert result.error_in_exec is None, result.error_in_exec
        assert "Authorized as alice@example.com for sales" in local_shell.text()
        html = "".join(o.get("text/html", "") for o in local_shell.outputs)
        assert "connauth-user-code" not in html  # no rich display in a plain shell
        # no device code or token in anything the kernel showed
        secrets = [*local_idp.stats()["device_codes"]]
        magics = local_shell.ip.magics_manager.registry["ConnAuthMagics"]
        token = await asyncio.to_thread(magics.client.token, "sales")
        secrets.append(token.access_token)
        shown = json.dumps(local_shell.outputs)
        assert secrets and all(s not in shown for s in secrets)

    async def test_expired_code_gives_the_fix(self, local_shell, local_idp):
        local_idp.set_runtime(device_code_ttl=2)
        result = await local_shell.run("%sql_connector authorize sales --device")
        err = result.error_in_exec
        assert getattr(err, "code", None) == "expired_token", local_shell.text()
        assert "--device again" in str(err)
        assert "authorization failed: The device code expired" in local_shell.text()

    @pytest.fixture
    def consent_method(self) -> str:
        return "auto"

    async def test_auto_picks_the_device_code_in_ssh_and_denial_gives_the_fix(
        self, local_shell, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.setenv("SSH_CONNECTION", "10.0.0.2 51234 10.0.0.1 22")
        monkeypatch.setenv("DISPLAY", ":0")  # a display, but the user is not at it
        running = asyncio.ensure_future(local_shell.run("%sql_connector authorize sales"))
        title = await enter_device_code_when_asked(local_shell, deny=True)
        assert title == "Sign-in interrupted"
        result = await running
        assert result.error_in_exec is not None
        text = local_shell.text()
        assert "oauth/connector/callback" not in text  # no loopback link
        assert "authorization failed: Consent was refused" in text
        err = result.error_in_exec
        assert getattr(err, "code", None) == "access_denied"
        assert "%sql_connector authorize sales --device again" in str(err)


@pytest.mark.parametrize(
    ("environ", "platform", "why"),
    [
        ({"SSH_CONNECTION": "10.0.0.2 5 10.0.0.1 22", "DISPLAY": ":0"}, "linux", "an SSH session"),
        ({"SSH_TTY": "/dev/pts/1"}, "darwin", "an SSH session"),
        ({}, "linux", "no display"),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", ""),
        ({"DISPLAY": ":0"}, "linux", ""),
        ({}, "darwin", ""),  # macOS and Windows can always open a browser locally
        ({}, "win32", ""),
    ],
)
def test_auto_consent_method_rules(environ: dict[str, str], platform: str, why: str):
    from jupyter_connauth.kernel.local import no_browser_here

    assert no_browser_here(environ, platform) == why


async def test_a_cancelled_flow_stores_nothing_without_a_server(local_shell):
    """What the balloon's Cancel and Ctrl-C do to the kernel's own broker."""
    from tests.idp_fixture import headless_login

    client = local_shell.ip.magics_manager.registry["ConnAuthMagics"].client
    consent = await asyncio.to_thread(client.authorize, "sales")
    flow = await asyncio.to_thread(client.cancel_flow, consent.flow_id)
    assert flow["status"] == "failed" and flow["error"] == "cancelled", flow
    callback = await asyncio.to_thread(headless_login, consent.authorize_url, "alice")
    async with httpx2.AsyncClient(timeout=30) as http:
        page = await http.get(callback)  # the IdP's redirect to the loopback, too late
    assert page.status_code >= 400 and "unknown or was already used" in page.text, page.text
    answer = await asyncio.to_thread(client.token, "sales")
    assert answer.reason == "first_use"  # still consent needed: nothing was stored
