"""Consent bound to the browser and to the stored IdP account, on a real single-user server.

An authorize link can end up in a saved output; whoever opens it must not complete
the owner's consent with their own IdP account. The callback completes a flow only
for a browser signed in to Jupyter; a different IdP account than the stored grant's
needs an explicit switch (``{"switch_account": true}``).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2

from tests.conftest import query
from tests.idp_fixture import headless_login
from tests.test_consent_flow import api


def stored(broker: Any, user: str = "alice", name: str = "sales") -> Any:
    row = broker.store.get_token(user, name)
    return None if row is None else row.record


async def start(jp_fetch: Any, name: str = "sales") -> dict[str, Any]:
    answer = await api(jp_fetch, "connections", name, "token", method="POST")
    assert answer["status"] == "consent_required", answer
    return dict(answer)


async def test_a_browser_without_a_jupyter_session_goes_through_login_first(
    jp_fetch, broker, server_url, jp_serverapp
):
    """The owner opens the link in a browser that is not signed in to Jupyter: sent to
    Jupyter's login with the callback (state kept) as next, then the flow completes."""
    answer = await start(jp_fetch)
    callback = await asyncio.to_thread(headless_login, answer["authorize_url"], "alice")
    async with httpx2.AsyncClient(timeout=30, follow_redirects=False) as browser:
        first = await browser.get(callback)
        assert first.status_code == 302, first.text
        login = httpx2.URL(callback).join(first.headers["location"])
        assert urlsplit(str(login)).path == urlsplit(server_url).path + "login"
        back = dict(parse_qsl(login.query.decode()))["next"]
        assert query(back) == query(callback)  # the whole authorization response kept
        assert stored(broker) is None
        assert (await api(jp_fetch, "flows", answer["flow_id"]))["status"] == "pending"

        form = await browser.get(login)
        assert form.status_code == 200
        signed_in = await browser.post(
            login,
            data={
                "password": jp_serverapp.identity_provider.token,
                "_xsrf": browser.cookies.get("_xsrf") or "",
            },
        )
        assert signed_in.status_code == 302, signed_in.text
        page = await browser.get(httpx2.URL(callback).join(signed_in.headers["location"]))
    assert page.status_code == 200, page.text
    assert "Authorized as alice@example.com for sales" in page.text
    assert stored(broker).identity["email"] == "alice@example.com"


async def test_someone_else_opening_the_link_completes_nothing(jp_fetch, broker):
    """mallory found the link in a saved output and signs in at the IdP as herself: she
    cannot sign in to the owner's Jupyter, so nothing is stored and the flow waits."""
    answer = await start(jp_fetch)
    callback = await asyncio.to_thread(headless_login, answer["authorize_url"], "mallory")
    async with httpx2.AsyncClient(timeout=30, follow_redirects=False) as browser:
        page = await browser.get(callback)
        assert page.status_code == 302 and "/login?next=" in page.headers["location"]
        # With the kernels' secret instead of a browser session: still no.
        kernel_like = await browser.get(
            callback, headers={"X-ConnAuth-Token": "guess", "Accept": "text/html"}
        )
        assert kernel_like.status_code == 302
    assert stored(broker) is None
    again = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert again["status"] == "consent_required"
    assert (await api(jp_fetch, "flows", answer["flow_id"]))["status"] == "pending"


async def test_another_idp_account_needs_an_explicit_switch(jp_fetch, consent, broker):
    first = await start(jp_fetch)
    assert (await consent(first["authorize_url"], "alice")).status_code == 200
    grant = stored(broker)
    assert grant.identity["sub"] == "alice"

    # Re-authorize, but sign in at the IdP as bob: refused, alice's grant kept.
    again = await api(jp_fetch, "connections", "sales", "authorize", method="POST")
    page = await consent(again["authorize_url"], "bob")
    assert page.status_code == 400, page.text
    assert "bob@example.com" in page.text and "alice@example.com" in page.text
    assert "--switch-account" in page.text
    assert grant.access_token not in page.text
    flow = await api(jp_fetch, "flows", again["flow_id"])
    assert flow["status"] == "failed" and flow["error"] == "account_mismatch"
    assert stored(broker).access_token == grant.access_token
    token = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert token["status"] == "ok" and token["identity"] == "alice@example.com"

    # Asked for: the IdP is told to let the user pick the account, and bob is stored.
    switch = await api(
        jp_fetch, "connections", "sales", "authorize", method="POST", body={"switch_account": True}
    )
    assert "login" in query(switch["authorize_url"])["prompt"].split()
    page = await consent(switch["authorize_url"], "bob")
    assert page.status_code == 200, page.text
    token = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert token["identity"] == "bob@example.com"


async def test_switch_account_must_be_a_boolean(jp_fetch):
    from tornado.httpclient import HTTPClientError

    try:
        await api(
            jp_fetch, "connections", "sales", "authorize", method="POST", body={"switch_account": 1}
        )
    except HTTPClientError as e:
        assert e.code == 400
    else:
        raise AssertionError("switch_account=1 was accepted")
