"""The IdP slow past ``http_timeout``, answering 5xx or garbage during the code exchange,
and its discovery document down when the server starts (what test_refresh.py does not
cover: there the IdP is frozen or failing during refresh only)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests.idp_fixture import TestIdP, default_client, headless_login
from tests.test_consent_flow import api

TIMEOUT = 1.0  # c.ConnAuth.http_timeout in these tests
SLOW_MS = 2500  # the IdP's token endpoint answers after this long: past the timeout


@pytest.fixture
def connauth_config() -> dict[str, Any]:
    return {"http_timeout": TIMEOUT}


async def start_flow(jp_fetch: Any, name: str = "sales") -> dict[str, Any]:
    answer = await api(jp_fetch, "connections", name, "token", method="POST")
    assert answer["status"] == "consent_required", answer
    return answer


#: The owner's browser is signed in to Jupyter (the callback requires it).
BROWSER_HEADERS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _signed_in_browser(jp_auth_header: dict[str, str]) -> None:
    BROWSER_HEADERS.clear()
    BROWSER_HEADERS.update(jp_auth_header)


async def sign_in(answer: dict[str, Any], login: str = "alice") -> Any:
    """The user at the IdP, then the browser's redirect to our callback."""
    import httpx2

    callback = await asyncio.to_thread(headless_login, answer["authorize_url"], login)
    async with httpx2.AsyncClient(timeout=30, headers=BROWSER_HEADERS) as http:
        return await http.get(callback)


async def assert_failed_cleanly(
    jp_fetch: Any, broker: Any, answer: dict[str, Any], page: Any, says: str
) -> dict[str, Any]:
    assert page.status_code >= 400, page.text
    assert says in page.text, page.text
    assert "try again" in page.text or "start" in page.text.lower()
    flow = await api(jp_fetch, "flows", answer["flow_id"])
    assert flow["status"] == "failed" and flow["error"] == "idp_unavailable", flow
    assert says in flow["message"] and flow["fix"]
    stored = broker.store.get_token("alice", "sales")
    assert stored is None or stored.record is None  # nothing stored
    status = await api(jp_fetch, "connections", "sales")
    assert status["status"] == "consent_required"
    result: dict[str, Any] = flow
    return result


async def assert_next_attempt_works(jp_fetch: Any, idp: TestIdP) -> None:
    idp.clear_faults()
    answer = await start_flow(jp_fetch)
    page = await sign_in(answer)
    assert page.status_code == 200, page.text
    assert "Authorized as alice@example.com" in page.text
    token = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert token["status"] == "ok" and token["identity"] == "alice@example.com"


async def test_slow_idp_at_the_code_exchange(jp_fetch, broker, idp):
    answer = await start_flow(jp_fetch)
    idp.set_faults(delay_ms=SLOW_MS)  # the token endpoint only: login pages stay fast
    started = time.monotonic()
    page = await sign_in(answer)
    elapsed = time.monotonic() - started
    await assert_failed_cleanly(jp_fetch, broker, answer, page, "unreachable (ReadTimeout)")
    assert elapsed < SLOW_MS / 1000 + 2 * TIMEOUT + 1  # gave up at the timeout, no retry storm
    await asyncio.sleep(SLOW_MS / 1000)
    await assert_next_attempt_works(jp_fetch, idp)


@pytest.mark.parametrize("fault", ["503", "garbage"])
async def test_idp_error_answer_at_the_code_exchange(jp_fetch, broker, idp, fault):
    answer = await start_flow(jp_fetch)
    if fault == "503":
        idp.set_faults(fail_token_endpoint=503)
        says = "token endpoint"
    else:
        idp.set_faults(garbage=True)
        says = "not an OAuth token response"
    page = await sign_in(answer)
    flow = await assert_failed_cleanly(jp_fetch, broker, answer, page, says)
    assert "<html" not in flow["message"].lower()  # the IdP's error page is not relayed
    # the burnt state cannot be replayed once the IdP is back
    idp.clear_faults()
    again = await sign_in(answer)
    assert again.status_code == 400
    await assert_next_attempt_works(jp_fetch, idp)


class TestSlowRefresh:
    @pytest.fixture
    def idp_config(self) -> dict[str, Any]:
        return {"access_token_ttl": 6}

    @pytest.fixture
    def connauth_config(self) -> dict[str, Any]:
        return {"http_timeout": TIMEOUT, "refresh_leeway": 5, "refresh_leeway_fraction": 1.0}

    async def authorized(self, jp_fetch: Any) -> dict[str, Any]:
        page = await sign_in(await start_flow(jp_fetch))
        assert page.status_code == 200, page.text
        token: dict[str, Any] = await api(jp_fetch, "connections", "sales", "token", method="POST")
        await asyncio.sleep(max(0.0, token["expires_at"] - 5 - time.time() + 0.2))  # now due
        return token

    async def test_slow_idp_during_refresh_keeps_the_token(self, jp_fetch, broker, idp):
        first = await self.authorized(jp_fetch)
        stored = broker.store.get_token("alice", "sales")
        idp.set_faults(delay_ms=SLOW_MS)
        soon = await api(jp_fetch, "connections", "sales", "token", method="POST")
        assert soon["status"] == "ok" and soon["access_token"] == first["access_token"]
        assert "unreachable (ReadTimeout)" in soon["warning"]
        await asyncio.sleep(max(0.0, first["expires_at"] - time.time() + 0.1))
        with pytest.raises(HTTPClientError) as e:
            await api(jp_fetch, "connections", "sales", "token", method="POST")
        assert e.value.code == 503  # a timeout: retryable, with Retry-After
        body = e.value.response.body.decode()
        assert "idp_unavailable" in body and "ReadTimeout" in body
        assert first["access_token"] not in body
        kept = broker.store.get_token("alice", "sales")
        assert kept.record.refresh_token == stored.record.refresh_token
        assert kept.updated_at == stored.updated_at  # not even rewritten
        idp.clear_faults()
        back = await api(jp_fetch, "connections", "sales", "token", method="POST")
        assert back["status"] == "ok" and back["access_token"] != first["access_token"]

    @pytest.fixture
    def rotating(self, idp: TestIdP) -> TestIdP:
        return idp.restart(rotate_refresh_token=True)

    async def test_slow_idp_with_rotating_refresh_tokens(self, jp_fetch, broker, rotating):
        """A refresh the broker gave up on leaves the stored refresh token in place; the
        next one (rotating) succeeds and stores the rotated token."""
        idp = rotating
        first = await self.authorized(jp_fetch)
        kept = broker.store.get_token("alice", "sales").record.refresh_token
        idp.set_faults(delay_ms=SLOW_MS)
        soon = await api(jp_fetch, "connections", "sales", "token", method="POST")
        assert soon["status"] == "ok" and "ReadTimeout" in soon["warning"]
        assert broker.store.get_token("alice", "sales").record.refresh_token == kept
        await asyncio.sleep(SLOW_MS / 1000 + 0.5)
        idp.clear_faults()
        assert time.time() < first["expires_at"]
        answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
        if answer["status"] == "consent_required":
            # an IdP that completed the abandoned refresh spent the kept refresh token:
            # then the user is asked again, with the reason, never left with an error
            assert answer["reason"] == "grant_revoked"
            assert (await sign_in(answer)).status_code == 200
            answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
        assert answer["status"] == "ok" and answer["access_token"] != first["access_token"]
        assert broker.store.get_token("alice", "sales").record.refresh_token != kept


class TestDiscoveryDownAtStart:
    """The IdP is down when the Jupyter server starts, and comes up later."""

    @pytest.fixture
    def idp(
        self, redirect_uri: str, idp_config: dict[str, Any], tmp_path: Path
    ) -> Iterator[TestIdP]:
        idp = TestIdP(
            workdir=tmp_path / "idp",
            clients=[default_client([redirect_uri])],
            extra_scopes=["sql", "warehouse:read"],
            **idp_config,
        )  # not started
        try:
            yield idp
        finally:
            idp.close()

    async def test_server_starts_first_use_explains_then_recovers(self, jp_fetch, broker, idp):
        assert not idp.running
        # the server is up and answers what needs no IdP
        listing = await api(jp_fetch, "connections")
        assert {c["name"] for c in listing["connections"]} == {"sales", "finance"}
        assert all(c["status"] == "consent_required" for c in listing["connections"])
        for _ in range(2):  # and keeps saying so, without caching the failure for long
            with pytest.raises(HTTPClientError) as e:
                await api(jp_fetch, "connections", "sales", "token", method="POST")
            assert e.value.code == 502
            body = e.value.response.body.decode()
            assert "idp_unavailable" in body and "discovery document" in body
            assert "c.ConnAuth.discovery_url" in body  # says what to check
        idp.start()
        answer = await start_flow(jp_fetch)  # no server restart
        page = await sign_in(answer)
        assert page.status_code == 200, page.text
        token = await api(jp_fetch, "connections", "sales", "token", method="POST")
        assert token["status"] == "ok"
