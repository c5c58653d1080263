"""Fixtures: a real OpenID provider (Node oidc-provider) and a real Jupyter server
(pytest-jupyter) with the extension configured against it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
from cryptography.fernet import Fernet

from tests.idp_fixture import TestIdP, default_client, headless_login

pytest_plugins = ["pytest_jupyter.jupyter_server"]

SCOPES = "sql offline_access"


@pytest.fixture
def crypt_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("JUPYTER_CONNAUTH_CRYPT_KEY", key)
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY", raising=False)
    return key


@pytest.fixture
def server_url(jp_http_port: int, jp_base_url: str) -> str:
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}"


@pytest.fixture
def redirect_uri(server_url: str) -> str:
    return f"{server_url}oauth/connector/callback"


@pytest.fixture
def idp_config() -> dict[str, Any]:
    """Override in a test module to change the IdP (e.g. rotation, narrowed scopes)."""
    return {}


@pytest.fixture
def idp(redirect_uri: str, idp_config: dict[str, Any], tmp_path: Path) -> Iterator[TestIdP]:
    config: dict[str, Any] = {
        "extra_scopes": ["sql", "warehouse:read"],
        "access_token_ttl": 300,
        **idp_config,
    }
    config.setdefault("clients", [default_client([redirect_uri])])
    idp = TestIdP(workdir=tmp_path / "idp", **config)
    idp.start()
    try:
        yield idp
    finally:
        idp.close()


@pytest.fixture
def connections() -> dict[str, Any]:
    return {
        "sales": {
            "connector": "databricks",
            "server_hostname": "dbc.example.com",
            "http_path": "/sql/1.0/warehouses/abc",
            "scopes": SCOPES,
        },
        "finance": {
            "connector": "databricks",
            "server_hostname": "dbc.example.com",
            "http_path": "/sql/1.0/warehouses/fin",
            "scopes": "sql offline_access",
        },
    }


@pytest.fixture
def connauth_config() -> dict[str, Any]:
    """Extra c.ConnAuth settings for a test module."""
    return {}


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tokens.sqlite3"


@pytest.fixture
def jp_server_config(
    idp: TestIdP,
    crypt_key: str,
    server_url: str,
    store_path: Path,
    connections: dict[str, Any],
    connauth_config: dict[str, Any],
) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_connauth": True}},
        "ConnAuthApp": {"owner": "alice"},
        "ConnAuth": {
            "discovery_url": idp.discovery_url,
            "client_id": idp.client_id,
            "client_secret": idp.client_secret,
            "public_url": server_url,
            "store_path": str(store_path),
            "connections": connections,
            **connauth_config,
        },
    }


@pytest.fixture
def broker(jp_serverapp: Any) -> Any:
    ext = jp_serverapp.extension_manager.extension_apps["jupyter_connauth"]
    (app,) = ext
    return app.broker


@pytest.fixture
def kernel_env(jp_serverapp: Any, jp_fetch: Any) -> dict[str, str]:
    """What a kernel started by this server gets (jp_fetch makes the server listen)."""
    import os

    return {
        "url": os.environ["JUPYTER_CONNAUTH_URL"],
        "token": os.environ["JUPYTER_CONNAUTH_TOKEN"],
    }


@pytest.fixture
def consent(jp_fetch: Any, jp_auth_header: dict[str, str]) -> Callable[..., Any]:
    """Log in at the IdP for an authorize URL and follow the redirect to our callback,
    like the owner's browser, signed in to Jupyter (the callback requires it)."""

    async def run(authorize_url: str, login: str = "alice", **kw: Any) -> httpx2.Response:
        callback_url = await asyncio.to_thread(headless_login, authorize_url, login, **kw)
        async with httpx2.AsyncClient(timeout=30, headers=jp_auth_header) as http:
            return await http.get(callback_url)

    return run


@pytest.fixture
def consent_as_other_user(broker: Any) -> Callable[..., Any]:
    """Complete a flow the broker started for another user (a shared store), as that
    user's own browser would: a single-user server's callback serves its owner only."""

    async def run(authorize_url: str, user: str, **kw: Any) -> str:
        from jupyter_connauth.web.pages import render_callback

        callback_url = await asyncio.to_thread(headless_login, authorize_url, user, **kw)
        args = {k: [v.encode()] for k, v in query(callback_url).items()}
        _status, page = await render_callback(broker, args, user)
        return page

    return run


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
def shell(
    kernel_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, jp_auth_header: dict[str, str]
) -> Iterator[Any]:
    """An IPython shell whose kernel environment points at the test server's broker."""

    from tests.ipython_shell import Shell

    s = Shell(kernel_env, monkeypatch)
    s.browser_headers = jp_auth_header  # the user's browser is signed in to Jupyter
    yield s
    s.close()
