"""The OAuth callback: state handling, IdP errors, scope checks, malformed requests."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest

from jupyter_connauth.core.errors import FlowError
from tests.conftest import query
from tests.idp_fixture import headless_login
from tests.test_consent_flow import api


async def start(jp_fetch: Any, name: str = "sales") -> dict[str, Any]:
    answer = await api(jp_fetch, "connections", name, "token", method="POST")
    assert answer["status"] == "consent_required"
    return answer


@pytest.fixture
def get(jp_auth_header: dict[str, str]) -> Any:
    """GET as the owner's browser, signed in to Jupyter."""

    async def run(url: str) -> httpx2.Response:
        async with httpx2.AsyncClient(timeout=30, headers=jp_auth_header) as http:
            return await http.get(url)

    return run


def stored(broker: Any, user: str = "alice", name: str = "sales") -> Any:
    row = broker.store.get_token(user, name)
    return None if row is None else row.record


async def test_replayed_state_is_rejected(jp_fetch, broker, get):
    answer = await start(jp_fetch)
    callback = await asyncio.to_thread(headless_login, answer["authorize_url"])
    assert (await get(callback)).status_code == 200
    token_before = stored(broker)
    replay = await get(callback)
    assert replay.status_code == 400
    assert "already used" in replay.text
    assert stored(broker) == token_before  # the replay changed nothing


async def test_forged_and_missing_state(redirect_uri, jp_fetch, broker, get):
    forged = await get(f"{redirect_uri}?{urlencode({'code': 'abc', 'state': 'forged'})}")
    assert forged.status_code == 400 and "unknown" in forged.text
    missing = await get(f"{redirect_uri}?code=abc")
    assert missing.status_code == 400 and "without a sign-in state" in missing.text
    assert stored(broker) is None


async def test_state_of_another_user_is_rejected(jp_fetch, broker):
    answer = await start(jp_fetch)
    callback = await asyncio.to_thread(headless_login, answer["authorize_url"])
    with pytest.raises(FlowError) as e:
        await broker.callback(query(callback), caller="mallory")
    assert e.value.code == "foreign_state"
    assert stored(broker) is None and stored(broker, "mallory") is None


async def test_access_denied_shows_fix_and_fails_flow(jp_fetch, broker, get):
    answer = await start(jp_fetch)
    callback = await asyncio.to_thread(headless_login, answer["authorize_url"], abort=True)
    page = await get(callback)
    assert page.status_code == 400
    assert "access_denied" in page.text and "Click Authorize again" in page.text
    flow = await api(jp_fetch, "flows", answer["flow_id"])
    assert flow["status"] == "failed" and flow["error"] == "access_denied"
    assert stored(broker) is None


@pytest.mark.parametrize(
    ("error", "description", "fix"),
    [
        ("redirect_uri_mismatch", None, "oauth/connector/callback exactly"),
        ("invalid_scope", None, "Scopes field with the IdP"),
        ("consent_required", None, "Add offline_access"),
        (
            "invalid_request",
            "AADSTS65001: The user or administrator has not consented",
            "admin consent",
        ),
    ],
)
async def test_idp_errors_map_to_fixes(jp_fetch, idp, error, description, fix, get):
    answer = await start(jp_fetch)
    params = {"error": error, "state": query(answer["authorize_url"])["state"]}
    if description:
        params["error_description"] = description
    params["iss"] = idp.issuer
    redirect = query(answer["authorize_url"])["redirect_uri"]
    page = await get(f"{redirect}?{urlencode(params)}")
    assert page.status_code == 400
    assert fix in page.text
    flow = await api(jp_fetch, "flows", answer["flow_id"])
    assert flow["status"] == "failed" and fix in flow["fix"]


async def test_issuer_mismatch_is_rejected(jp_fetch, broker, get):
    answer = await start(jp_fetch)
    callback = await asyncio.to_thread(headless_login, answer["authorize_url"])
    params = query(callback)
    params["iss"] = "https://evil.example.com"
    base = callback.split("?")[0]
    page = await get(f"{base}?{urlencode(params)}")
    assert page.status_code == 400 and "another issuer" in page.text
    assert stored(broker) is None


@pytest.mark.parametrize(
    "raw_query",
    [
        "state=a&state=b&code=c",  # repeated
        "state=" + "x" * 5000 + "&code=c",  # oversized
        "state=%ff%fe&code=c",  # bad UTF-8
        "code=%00&state=%00",
        "error=%3Cscript%3Ealert(1)%3C/script%3E",
        "",
    ],
    ids=["repeated", "oversized", "bad-utf8", "nul", "html-injection", "empty"],
)
async def test_malformed_callbacks_are_4xx(redirect_uri, jp_fetch, raw_query, get):
    page = await get(f"{redirect_uri}?{raw_query}")
    assert 400 <= page.status_code < 500
    assert "<script>alert" not in page.text
    assert "Traceback" not in page.text


async def test_callback_page_escapes_and_holds_no_code(jp_fetch, broker, get):
    answer = await start(jp_fetch)
    callback = await asyncio.to_thread(headless_login, answer["authorize_url"])
    page = await get(callback)
    assert page.status_code == 200
    assert query(callback)["code"] not in page.text
    assert query(callback)["state"] not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


class TestNarrowedScopes:
    @pytest.fixture
    def idp_config(self) -> dict[str, Any]:
        return {"narrow_scopes": ["warehouse:read"]}

    @pytest.fixture
    def connections(self) -> dict[str, Any]:
        return {
            "sales": {
                "connector": "databricks",
                "server_hostname": "h",
                "http_path": "/p",
                "scopes": "sql warehouse:read offline_access",
            }
        }

    async def test_scope_mismatch_stores_nothing(self, jp_fetch, broker, get):
        answer = await start(jp_fetch)
        callback = await asyncio.to_thread(headless_login, answer["authorize_url"])
        page = await get(callback)
        assert page.status_code == 400
        assert "missing warehouse:read" in page.text
        assert "Align the connection" in page.text
        flow = await api(jp_fetch, "flows", answer["flow_id"])
        assert flow["error"] == "scope_mismatch"
        assert stored(broker) is None


class TestShortFlows:
    @pytest.fixture
    def connauth_config(self) -> dict[str, Any]:
        return {"flow_ttl": 1}

    async def test_expired_state_is_rejected(self, jp_fetch, broker, get):
        answer = await start(jp_fetch)
        callback = await asyncio.to_thread(headless_login, answer["authorize_url"])
        await asyncio.sleep(max(0.0, answer["expires_at"] - time.time() + 0.1))
        page = await get(callback)
        assert page.status_code == 400 and "expired" in page.text
        flow = await api(jp_fetch, "flows", answer["flow_id"])
        assert flow["status"] == "failed" and flow["error"] == "expired_state"
        assert stored(broker) is None

    async def test_flow_status_expires_for_the_kernel(self, jp_fetch):
        answer = await start(jp_fetch)
        await asyncio.sleep(max(0.0, answer["expires_at"] - time.time() + 0.1))
        flow = await api(jp_fetch, "flows", answer["flow_id"])
        assert flow["status"] == "failed" and flow["error"] == "expired_state"


async def test_someone_else_signing_in_with_the_link_is_refused(jp_fetch, broker, get):
    """On a hub the broker knows the user's email: a different IdP account is refused."""
    started = await broker.token("alice", "sales", expected_email="Alice@Example.com")
    callback = await asyncio.to_thread(headless_login, started.authorize_url, "mallory")
    page = await get(callback)
    assert page.status_code == 400
    assert "mallory@example.com" in page.text and "belongs to alice@example.com" in page.text
    assert stored(broker) is None
    ok = await broker.token("alice", "sales", expected_email="alice@example.com")
    page = await get(await asyncio.to_thread(headless_login, ok.authorize_url, "alice"))
    assert page.status_code == 200 and stored(broker) is not None


class TestNoEmailAnywhere:
    """The host knows the user's email (a hub) but the IdP says none: the page says
    how to make the IdP send it, not that someone else signed in."""

    @pytest.fixture
    def connauth_config(self) -> dict[str, Any]:
        return {"identity_scopes": ["openid"]}  # no email claim in the ID token

    async def test_the_fix_names_the_missing_claim(self, jp_fetch, broker, get):
        started = await broker.token("alice", "sales", expected_email="alice@example.com")
        page = await get(await asyncio.to_thread(headless_login, started.authorize_url))
        assert page.status_code == 400
        assert "said no email" in page.text and "optional claim" in page.text
        assert stored(broker) is None
