"""No token, code or client secret in logs, API answers or the store file."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import query
from tests.idp_fixture import headless_login
from tests.test_consent_flow import api

CLIENT_SECRET = "connauth-test-client-secret-6f1d2c"


class Page:
    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content


async def get(url: str, headers: dict[str, str] | None = None) -> Page:
    """The browser following the IdP's redirect (tornado's client: it logs no URLs),
    signed in to Jupyter with ``headers``."""
    from tornado.httpclient import AsyncHTTPClient

    resp = await AsyncHTTPClient().fetch(url, headers=headers, raise_error=False)
    return Page(resp.code, resp.body)


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {"access_token_ttl": 4}


@pytest.fixture
def connauth_config(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # the secret from the environment, as the README advises: Jupyter logs its
    # config at debug level
    monkeypatch.setenv("JUPYTER_CONNAUTH_CLIENT_SECRET", CLIENT_SECRET)
    return {"client_secret": "", "refresh_leeway": 3, "refresh_leeway_fraction": 1.0}


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    jp_server_config["ConnAuth"].pop("client_secret", None)
    jp_server_config["ServerApp"]["log_level"] = "DEBUG"
    return jp_server_config


async def test_no_secret_in_logs_answers_or_store(
    jp_fetch,
    broker,
    store_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: Any,
    jp_auth_header: dict[str, str],
):
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = [CLIENT_SECRET]
    answers: list[bytes] = []

    first = await api(jp_fetch, "connections", "sales", "token", method="POST")
    callback = await asyncio.to_thread(headless_login, first["authorize_url"])
    secrets += [query(callback)["code"]]
    page = await get(callback, jp_auth_header)
    assert page.status_code == 200
    answers.append(page.content)
    replay = await get(callback, jp_auth_header)  # a logged failure, with the code in its URL
    answers.append(replay.content)

    rec = broker.store.get_token("alice", "sales").record
    secrets += [rec.access_token, rec.refresh_token]
    await asyncio.sleep(max(0.0, rec.expires_at - 3 - time.time() + 0.2))
    refreshed = await api(jp_fetch, "connections", "sales", "token", method="POST")
    rec2 = broker.store.get_token("alice", "sales").record
    assert rec2.access_token == refreshed["access_token"] != rec.access_token
    secrets += [rec2.access_token, rec2.refresh_token]
    for path in (("connections",), ("connections", "sales"), ("info",)):
        answers.append((await jp_fetch("connauth", "api", *path)).body)
    answers.append(repr(rec).encode() + repr(rec2).encode())
    await api(jp_fetch, "connections", "sales", "revoke", method="POST")

    out, err = capfd.readouterr()
    # the test's own headless browser (a worker thread) logs its redirects: not the server
    server_records = [
        r
        for r in caplog.records
        if r.threadName == "MainThread" or not r.name.startswith(("httpx2", "httpcore2"))
    ]
    logs = "\n".join(r.getMessage() for r in server_records) + out + err
    assert "oauth/connector/callback" in logs  # the requests were logged
    store_bytes = b"".join(p.read_bytes() for p in store_path.parent.iterdir() if p.is_file())
    for secret in secrets:
        assert secret and len(secret) >= 16
        assert secret not in logs, "a secret in the server log"
        assert secret.encode() not in store_bytes, "a secret in plaintext in the store"
        for answer in answers:
            assert secret.encode() not in answer, "a secret in an API answer or page"
