"""The server extension app: its own config file, URLs from Jupyter's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any], jp_config_dir: Path) -> dict[str, Any]:
    # The extension's own config file, as `jupyter_{name}_config` names it.
    (jp_config_dir / "jupyter_connauth_config.py").write_text(
        'c.ConnAuthApp.kernel_secret = "from-the-config-file"\n'
    )
    return jp_server_config


async def test_the_default_config_file_is_jupyter_connauth_config(jp_serverapp, kernel_env):
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_connauth"]
    assert app.config_file_name == "jupyter_connauth_config"
    assert kernel_env["token"] == "from-the-config-file"


async def test_urls_come_from_jupyters_connection_url(jp_serverapp, jp_fetch, jp_http_port):
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_connauth"]
    assert app.kernel_api_url() == f"http://127.0.0.1:{jp_http_port}/a%40b/connauth/api/"
    app.connauth.public_url = ""
    assert app.redirect_uri() == jp_serverapp.connection_url + "oauth/connector/callback"
    info = json.loads((await jp_fetch("connauth", "api", "info")).body)
    assert info["host"] == "jupyter_server" and info["admin"] is True


async def test_the_owner_is_the_admin_of_the_shared_admin_routes(jp_fetch):
    """One routes table: the admin routes are served on the single-user server too."""
    users = json.loads(
        (await jp_fetch("connauth", "api", "admin", "users", params={"all": "1"})).body
    )
    assert [u["name"] for u in users["users"]] == ["alice"]
    assert {c["name"] for c in users["users"][0]["connections"]} == {"sales", "finance"}
