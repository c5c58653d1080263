"""Silent refresh: single-flight, rotation, invalid_grant, IdP outages."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import httpx2
import pytest

from tests.test_consent_flow import api

TTL = 6  # seconds an access token lives at the IdP in these tests
LEEWAY = 5  # c.ConnAuth.refresh_leeway; at most half the lifetime counts (the default
DUE = min(LEEWAY, 0.5 * TTL)  # refresh_leeway_fraction): due 3 s after it was issued


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {"access_token_ttl": TTL}


@pytest.fixture
def connauth_config() -> dict[str, Any]:
    return {"refresh_leeway": LEEWAY, "http_timeout": 1}


async def authorize(jp_fetch: Any, consent: Any, name: str = "sales") -> dict[str, Any]:
    answer = await api(jp_fetch, "connections", name, "token", method="POST")
    assert answer["status"] == "consent_required"
    page = await consent(answer["authorize_url"])
    assert page.status_code == 200, page.text
    token = await api(jp_fetch, "connections", name, "token", method="POST")
    assert token["status"] == "ok"
    return token


async def wait_until_due(token: dict[str, Any]) -> None:
    delay = token["expires_at"] - DUE - time.time() + 0.2
    if delay > 0:
        await asyncio.sleep(delay)


async def kernel_tokens(kernel_env: dict[str, str], n: int, name: str = "sales") -> list[Any]:
    headers = {"X-ConnAuth-Token": kernel_env["token"]}
    limits = httpx2.Limits(max_connections=n)
    async with httpx2.AsyncClient(headers=headers, timeout=30, limits=limits) as client:
        url = f"{kernel_env['url']}connections/{name}/token"
        resps = await asyncio.gather(*(client.post(url) for _ in range(n)))
    return [r.json() for r in resps]


async def test_refresh_after_ttl(jp_fetch, consent, idp):
    first = await authorize(jp_fetch, consent)
    again = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert again["access_token"] == first["access_token"]  # warm: no IdP call
    assert idp.token_requests("refresh_token") == 0
    await wait_until_due(first)
    fresh = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert fresh["status"] == "ok"
    assert fresh["access_token"] != first["access_token"]
    assert fresh["expires_at"] > first["expires_at"]
    assert fresh["identity"] == "alice@example.com"
    assert idp.token_requests("refresh_token") == 1


@pytest.mark.parametrize("rotate", [False, True], ids=["plain", "rotating"])
async def test_concurrent_requests_at_expiry_make_one_refresh(
    jp_fetch, consent, idp, kernel_env, rotate
):
    if rotate:
        idp.restart(rotate_refresh_token=True)
    first = await authorize(jp_fetch, consent)
    for round_ in range(2):  # twice: with rotation the second uses the new refresh token
        await wait_until_due(first)
        answers = await kernel_tokens(kernel_env, 100)
        assert all(a["status"] == "ok" for a in answers), answers[:3]
        assert len({a["access_token"] for a in answers}) == 1
        assert answers[0]["access_token"] != first["access_token"]
        assert idp.token_requests("refresh_token") == round_ + 1
        first = answers[0]
    stats = idp.stats()
    assert stats.get("token_errors", {}).get("refresh_token", 0) == 0


async def test_invalid_grant_drops_token_and_asks_consent(jp_fetch, consent, idp):
    first = await authorize(jp_fetch, consent)
    idp.restart()  # an IdP that forgot every grant
    await wait_until_due(first)
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert answer["status"] == "consent_required"
    assert answer["reason"] == "grant_revoked"
    status = await api(jp_fetch, "connections", "sales")
    assert status["status"] == "consent_required"
    assert "revoked" in status["reason_text"]
    page = await consent(answer["authorize_url"])
    assert page.status_code == 200
    assert (await api(jp_fetch, "connections", "sales", "token", method="POST"))["status"] == "ok"


async def test_idp_down_keeps_token_and_recovers(jp_fetch, consent, idp):
    """The IdP process frozen (SIGSTOP: connections hang), then thawed."""
    from tornado.httpclient import HTTPClientError

    first = await authorize(jp_fetch, consent)
    await wait_until_due(first)
    assert idp._proc is not None
    os.kill(idp._proc.pid, signal.SIGSTOP)
    try:
        # Still valid for a moment: the old token is handed out with a warning.
        soon = await api(jp_fetch, "connections", "sales", "token", method="POST")
        assert soon["status"] == "ok"
        assert soon["access_token"] == first["access_token"]
        assert "unreachable" in soon["warning"]
        await asyncio.sleep(max(0.0, first["expires_at"] - time.time() + 0.1))
        with pytest.raises(HTTPClientError) as e:
            await api(jp_fetch, "connections", "sales", "token", method="POST")
        assert e.value.code == 503  # a timeout: worth retrying
        assert int(e.value.response.headers["Retry-After"]) >= 1
        body = e.value.response.body.decode()
        assert "idp_unavailable" in body and "unreachable" in body
        assert first["access_token"] not in body
        status = await api(jp_fetch, "connections", "sales")
        assert status["status"] == "authorized"  # the token is kept
    finally:
        os.kill(idp._proc.pid, signal.SIGCONT)
    back = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert back["status"] == "ok"
    assert back["access_token"] != first["access_token"]


@pytest.mark.parametrize("fault", ["503", "garbage"])
async def test_idp_errors_during_refresh_keep_token(jp_fetch, consent, idp, fault):
    from tornado.httpclient import HTTPClientError

    first = await authorize(jp_fetch, consent)
    if fault == "503":
        idp.set_faults(fail_token_endpoint=503)
    else:
        idp.set_faults(garbage=True)
    await asyncio.sleep(max(0.0, first["expires_at"] - time.time() + 0.1))
    with pytest.raises(HTTPClientError) as e:
        await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert e.value.code == (503 if fault == "503" else 502)  # 503 + Retry-After: retryable
    assert (await api(jp_fetch, "connections", "sales"))["status"] == "authorized"
    idp.clear_faults()
    back = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert back["status"] == "ok"
