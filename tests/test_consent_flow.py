"""Consent → token → refresh → revoke through a real Jupyter server and a real IdP."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from jupyter_connauth.kernel.client import AccessToken, BrokerClient, ConsentNeeded
from tests.conftest import query
from tests.idp_fixture import headless_login


async def api(
    jp_fetch: Any, *path: str, method: str = "GET", body: Any = None, params: Any = None
) -> Any:
    kw: dict[str, Any] = {"method": method}
    if params:
        kw["params"] = params
    if body is not None or method in ("POST", "PUT"):
        kw["body"] = json.dumps(body or {})
    resp = await jp_fetch("connauth", "api", *path, **kw)
    return json.loads(resp.body) if resp.body else None


async def test_first_use_needs_consent_then_token(jp_fetch, consent, idp, redirect_uri):
    conns = await api(jp_fetch, "connections")
    by_name = {c["name"]: c for c in conns["connections"]}
    assert by_name["sales"]["status"] == "consent_required"
    assert by_name["sales"]["reason"] == "first_use"

    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert answer["status"] == "consent_required"
    assert answer["reason"] == "first_use"
    url = answer["authorize_url"]
    assert "code_challenge_method=S256" in url
    assert "code_verifier" not in url
    assert query(url)["redirect_uri"] == redirect_uri

    flow = await api(jp_fetch, "flows", answer["flow_id"])
    assert flow["status"] == "pending"

    page = await consent(url, "alice")
    assert page.status_code == 200, page.text
    assert "Authorized as alice@example.com for sales" in page.text
    assert "postMessage" in page.text

    flow = await api(jp_fetch, "flows", answer["flow_id"])
    assert flow["status"] == "complete"
    assert flow["identity"] == "alice@example.com"

    token = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert token["status"] == "ok"
    assert token["identity"] == "alice@example.com"
    assert token["access_token"] and token["expires_at"] > time.time() + 200
    status = await api(jp_fetch, "connections", "sales")
    assert status["status"] == "authorized"
    assert status["authorized_as"] == "alice@example.com"
    assert set(status["granted_scopes"]) >= {"sql"}
    assert "access_token" not in json.dumps(status)
    assert idp.token_requests("authorization_code") == 1


async def test_kernel_client_gets_token_after_consent(kernel_env, consent, broker):
    client = BrokerClient(kernel_env["url"], kernel_env["token"])
    try:
        first = await asyncio.to_thread(client.token, "sales")
        assert isinstance(first, ConsentNeeded)
        page = await consent(first.authorize_url, "alice")
        assert page.status_code == 200
        done = await asyncio.to_thread(client.wait_for_flow, first.flow_id, timeout=10)
        assert done["identity"] == "alice@example.com"
        second = await asyncio.to_thread(client.token, "sales")
        assert isinstance(second, AccessToken)
        assert second.identity == "alice@example.com"
        assert "access_token" not in repr(second)
        assert second.access_token not in repr(second)
    finally:
        client.close()


async def test_kernel_token_is_checked(kernel_env):
    client = BrokerClient(kernel_env["url"], "not-the-token")
    try:
        with pytest.raises(Exception, match="refused this kernel's credentials"):
            await asyncio.to_thread(client.connections)
    finally:
        client.close()


async def test_revoke_then_consent_again(jp_fetch, consent, idp):
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    await consent(answer["authorize_url"])
    revoked = await api(jp_fetch, "connections", "sales", "revoke", method="POST")
    assert revoked == {"connection": "sales", "revoked": True, "revoked_at_idp": True}
    again = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert again["status"] == "consent_required"
    assert again["reason"] == "revoked"


async def test_unknown_connection_is_a_clear_404(jp_fetch):
    from tornado.httpclient import HTTPClientError

    with pytest.raises(HTTPClientError) as e:
        await api(jp_fetch, "connections", "nope", "token", method="POST")
    assert e.value.code == 404
    body = json.loads(e.value.response.body)
    assert body["error"] == "connection_not_found"
    assert "sales" in body["message"]


async def test_two_users_are_kept_apart(jp_fetch, consent, broker, idp):
    """alice through the server's API, bob through the same broker (a shared store)."""
    from jupyter_connauth.broker.flows import FlowStart

    alice = await api(jp_fetch, "connections", "sales", "token", method="POST")
    await consent(alice["authorize_url"], "alice")
    bob_start = await broker.token("bob", "sales")
    assert isinstance(bob_start, FlowStart)
    # bob's state is no good for alice's browser session: his browser completes it
    from jupyter_connauth.web.pages import render_callback

    callback = await asyncio.to_thread(headless_login, bob_start.authorize_url, "bob")
    args = {k: [v.encode()] for k, v in query(callback).items()}
    _status, page_text = await render_callback(broker, args, "bob")
    assert "Authorized as bob@example.com" in page_text
    a = await api(jp_fetch, "connections", "sales", "token", method="POST")
    b = (await broker.token("bob", "sales")).to_json()
    assert a["identity"] == "alice@example.com" and b["identity"] == "bob@example.com"
    assert a["access_token"] != b["access_token"]
    # alice cannot see bob's flow
    from tornado.httpclient import HTTPClientError

    with pytest.raises(HTTPClientError) as e:
        await api(jp_fetch, "flows", bob_start.flow.flow_id)
    assert e.value.code == 403
    await api(jp_fetch, "connections", "sales", "revoke", method="POST")
    assert broker.status("bob", "sales")["status"] == "authorized"
    assert broker.status("alice", "sales")["status"] == "consent_required"
