"""Device-code consent (RFC 8628) through a real Jupyter server and the real IdP.

The test IdP is oidc-provider with its device flow on (tests/idp/provider.mjs): its
user-code and confirmation pages are driven by ``headless_device``, its token
endpoint answers ``authorization_pending`` until the user confirms, ``access_denied``
after Abort, ``expired_token`` past the code's lifetime, and ``slow_down`` to a client
polling sooner than the interval (as Google's and Entra's do).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
from typing import Any

import pytest

from tests.idp_fixture import TestIdP, headless_device
from tests.test_consent_flow import api

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
INTERVAL = 1  # the test IdP's interval (device_interval), to keep the tests short


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {"device_interval": INTERVAL}


async def wait_flow(jp_fetch: Any, flow_id: str, within: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        flow: dict[str, Any] = await api(jp_fetch, "flows", flow_id)
        if flow["status"] != "pending" or time.monotonic() > deadline:
            return flow
        await asyncio.sleep(0.2)


def device_polls(idp: TestIdP) -> list[dict[str, Any]]:
    return [e for e in idp.stats()["token_log"] if e["grant_type"] == DEVICE_GRANT]


def gaps_of(polls: list[dict[str, Any]]) -> list[float]:
    """Seconds between successive token requests, as the IdP received them."""
    return [(b["at"] - a["at"]) / 1000 for a, b in itertools.pairwise(polls)]


async def start(jp_fetch: Any, name: str = "sales") -> dict[str, Any]:
    answer: dict[str, Any] = await api(
        jp_fetch, "connections", name, "authorize", method="POST", body={"method": "device"}
    )
    return answer


async def test_device_flow_on_the_server(
    jp_fetch, broker, idp: TestIdP, caplog: pytest.LogCaptureFixture, capfd: Any
):
    caplog.set_level(logging.DEBUG)
    answer = await start(jp_fetch)
    assert answer["status"] == "device_code"
    assert set(answer) >= {"flow_id", "user_code", "verification_uri", "expires_in"}
    assert answer["verification_uri"].startswith(idp.issuer)
    assert answer["verification_uri_complete"].endswith(answer["user_code"])
    assert 590 <= answer["expires_in"] <= 600
    assert "device_code" not in answer
    flow = await api(jp_fetch, "flows", answer["flow_id"])
    assert flow["status"] == "pending"

    await asyncio.sleep(2.5)  # a few polls while the user is still reaching for a phone
    title = await asyncio.to_thread(
        headless_device, answer["verification_uri"], answer["user_code"], "alice"
    )
    assert title == "Sign-in Success"
    flow = await wait_flow(jp_fetch, answer["flow_id"])
    assert flow["status"] == "complete", json.dumps(flow)
    assert flow["identity"] == "alice@example.com"

    token = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert token["status"] == "ok" and token["identity"] == "alice@example.com"
    status = await api(jp_fetch, "connections", "sales")
    assert status["status"] == "authorized" and set(status["granted_scopes"]) >= {"sql"}

    # the interval respected: no slow_down from the IdP, polls at least INTERVAL apart
    polls = device_polls(idp)
    assert idp.stats()["device_slow_down"] == 0
    assert len(polls) >= 3 and polls[-1]["status"] == 200
    assert all(p["error"] == "authorization_pending" for p in polls[:-1])
    gaps = gaps_of(polls)
    assert min(gaps) >= INTERVAL - 0.25, gaps
    elapsed = (polls[-1]["at"] - polls[0]["at"]) / 1000
    assert len(polls) <= elapsed / INTERVAL + 1

    # no device code or token in the answers or the server's logs
    rec = broker.store.get_token("alice", "sales").record
    secrets = [*idp.stats()["device_codes"], rec.access_token]
    out, err = capfd.readouterr()
    server_records = [r for r in caplog.records if r.threadName == "MainThread"]
    logs = "\n".join(r.getMessage() for r in server_records) + out + err + idp.log_text()
    answers = json.dumps([answer, flow, status])
    for secret in secrets:
        assert secret and secret not in logs and secret not in answers


async def test_slow_down_adds_five_seconds(jp_fetch, idp: TestIdP):
    idp.set_faults(fail_error="slow_down", fail_times=1)  # the first poll: slow down
    answer = await start(jp_fetch)
    await asyncio.sleep(INTERVAL + 0.5)
    await asyncio.to_thread(headless_device, answer["verification_uri"], answer["user_code"])
    flow = await wait_flow(jp_fetch, answer["flow_id"])
    assert flow["status"] == "complete", json.dumps(flow)
    polls = device_polls(idp)
    assert polls[0]["error"] == "slow_down" and polls[-1]["status"] == 200
    # RFC 8628 3.5: the interval grows by 5 seconds for this and all later requests
    gaps = gaps_of(polls)
    assert min(gaps) >= INTERVAL + 5 - 0.25, gaps


async def test_denied_at_the_idp_gives_the_fix(jp_fetch, idp: TestIdP):
    answer = await start(jp_fetch)
    await asyncio.to_thread(
        headless_device, answer["verification_uri"], answer["user_code"], deny=True
    )
    flow = await wait_flow(jp_fetch, answer["flow_id"])
    assert flow["status"] == "failed" and flow["error"] == "access_denied", flow
    assert "refused" in flow["message"]
    assert "%sql_connector authorize sales --device" in flow["fix"]
    assert device_polls(idp)[-1]["error"] == "access_denied"
    token = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert token["status"] == "consent_required"


async def test_expired_code_gives_the_fix(jp_fetch, idp: TestIdP):
    idp.set_runtime(device_code_ttl=3)
    answer = await start(jp_fetch)
    assert answer["expires_in"] <= 3
    flow = await wait_flow(jp_fetch, answer["flow_id"], within=15)
    assert flow["status"] == "failed" and flow["error"] == "expired_token", flow
    assert "expired" in flow["message"]
    assert "--device again" in flow["fix"]
    # the broker stopped at expires_in: no poll after the code's lifetime
    assert len(device_polls(idp)) <= 3


async def test_idp_down_until_expiry_says_so_not_expired(jp_fetch, idp: TestIdP):
    idp.set_runtime(device_code_ttl=3)
    idp.set_faults(fail_token_endpoint=503)  # every poll: the IdP's HTML 503
    answer = await start(jp_fetch)
    flow = await wait_flow(jp_fetch, answer["flow_id"], within=15)
    assert flow["status"] == "failed" and flow["error"] == "idp_unavailable", flow
    assert "busy" in flow["message"] and flow["fix"]


async def test_a_new_device_code_replaces_the_old(jp_fetch, idp: TestIdP):
    first = await start(jp_fetch)
    second = await start(jp_fetch)
    old = await api(jp_fetch, "flows", first["flow_id"])
    assert old["status"] == "failed" and old["error"] == "superseded"
    await asyncio.to_thread(headless_device, second["verification_uri"], second["user_code"])
    flow = await wait_flow(jp_fetch, second["flow_id"])
    assert flow["status"] == "complete", json.dumps(flow)


async def test_bad_method_is_a_clear_400(jp_fetch):
    from tornado.httpclient import HTTPClientError

    with pytest.raises(HTTPClientError) as e:
        await api(
            jp_fetch, "connections", "sales", "authorize", method="POST", body={"method": "x"}
        )
    assert e.value.code == 400
    assert b"method" in e.value.response.body


async def test_magic_in_a_real_kernel_shows_the_code_and_waits(
    jp_fetch, jp_serverapp, broker, idp: TestIdP
):
    """``%sql_connector authorize sales --device`` in a kernel the server started: the
    code and the URI as text and HTML, the wait, then "Authorized as"."""
    resp = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel = json.loads(resp.body)
    km = jp_serverapp.kernel_manager.get_kernel(kernel["id"])
    kc = km.client()
    kc.start_channels()
    outputs: list[dict[str, Any]] = []
    try:
        await kc.wait_for_ready(timeout=60)

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] in ("display_data", "update_display_data"):
                outputs.append(msg["content"]["data"])
            elif msg["msg_type"] in ("stream", "error"):
                outputs.append({"text/plain": json.dumps(msg["content"])})

        code = "%load_ext jupyter_connauth\n%sql_connector authorize sales --device"
        running = asyncio.ensure_future(kc.execute_interactive(code, output_hook=hook, timeout=60))
        for _ in range(300):
            shown = [o for o in outputs if "connauth-user-code" in o.get("text/html", "")]
            if shown:
                break
            await asyncio.sleep(0.1)
        assert shown, outputs
        text, page = shown[0]["text/plain"], shown[0]["text/html"]
        m = re.search(r"open (\S+)\nand enter the code: (\S+)", text)
        assert m, text
        uri, user_code = m.groups()
        assert uri == f"{idp.issuer}/device"
        assert f'href="{uri}"' in page and user_code in page
        assert await asyncio.to_thread(headless_device, uri, user_code) == "Sign-in Success"
        reply = await running
        assert reply["content"]["status"] == "ok", outputs
        assert "Authorized as alice@example.com for sales" in outputs[-1]["text/plain"]
        rec = broker.store.get_token("alice", "sales").record
        everything = json.dumps(outputs)
        for secret in [*idp.stats()["device_codes"], rec.access_token, rec.refresh_token]:
            assert secret and secret not in everything
    finally:
        kc.stop_channels()
        await jp_fetch("api", "kernels", kernel["id"], method="DELETE")
