"""No Jupyter server: the kernel runs the broker itself with a loopback callback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.idp_fixture import TestIdP, default_client, free_port
from tests.ipython_shell import Shell, sign_in_when_asked


@pytest.fixture
def loopback_port() -> int:
    return free_port()


@pytest.fixture
def local_idp(tmp_path: Path, loopback_port: int) -> Any:
    redirect = f"http://127.0.0.1:{loopback_port}/oauth/connector/callback"
    idp = TestIdP(
        workdir=tmp_path / "idp", extra_scopes=["sql"], clients=[default_client([redirect])]
    )
    idp.start()
    yield idp
    idp.close()


@pytest.fixture
def local_shell(
    local_idp: TestIdP,
    loopback_port: int,
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
                "LocalConnAuth": {"loopback_port": loopback_port},
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
