"""A warehouse rejects a token the broker believed valid: one forced refresh, then the
grant marked rejected (status, consent where it helps, the admin fix otherwise), through
the broker API of a real Jupyter server against the real test IdP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests.test_consent_flow import api
from tests.test_refresh import authorize

ISSUER_FIX = "set EXTERNAL_OAUTH_ISSUER of the security integration to the IdP's issuer"


def report(token: dict[str, Any], *, admin_fix: bool = False) -> dict[str, Any]:
    return {
        "grant": token["grant"],
        "expires_at": token["expires_at"],
        "message": "Invalid OAuth access token. (390303)",
        "fix": ISSUER_FIX if admin_fix else None,
        "admin_fix": admin_fix,
    }


async def rejected(jp_fetch: Any, body: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = await api(
        jp_fetch, "connections", "sales", "rejected", method="POST", body=body
    )
    return answer


async def status(jp_fetch: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await api(jp_fetch, "connections", "sales")
    return answer


async def test_one_forced_refresh_for_concurrent_reports(jp_fetch, consent, idp):
    first = await authorize(jp_fetch, consent)
    before = idp.token_requests("refresh_token")
    answers = await asyncio.gather(*(rejected(jp_fetch, report(first)) for _ in range(5)))
    assert idp.token_requests("refresh_token") == before + 1
    assert {a["status"] for a in answers} == {"ok"}
    assert len({a["access_token"] for a in answers}) == 1
    assert answers[0]["access_token"] != first["access_token"]
    assert answers[0]["grant"] == first["grant"]
    # a late report of the old token: the current one, no second refresh, no verdict
    late = await rejected(jp_fetch, report(first))
    assert late["access_token"] == answers[0]["access_token"]
    assert idp.token_requests("refresh_token") == before + 1
    assert (await status(jp_fetch))["status"] == "authorized"


async def test_still_rejected_offers_consent(jp_fetch, consent, idp):
    first = await authorize(jp_fetch, consent)
    fresh = await rejected(jp_fetch, report(first))
    answer = await rejected(jp_fetch, report(fresh))
    assert answer["status"] == "consent_required", answer
    assert answer["reason"] == "warehouse_rejected"
    st = await status(jp_fetch)
    assert st["status"] == "consent_required" and st["reason"] == "warehouse_rejected"
    assert "warehouse rejected your token" in st["reason_text"]
    again = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert again["status"] == "consent_required" and again["reason"] == "warehouse_rejected"
    await consent(again["authorize_url"])
    ok = await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert ok["status"] == "ok" and ok["grant"] != first["grant"]
    assert (await status(jp_fetch))["status"] == "authorized"


async def test_admin_fix_is_an_error_without_loops(jp_fetch, consent, idp):
    first = await authorize(jp_fetch, consent)
    fresh = await rejected(jp_fetch, report(first, admin_fix=True))
    before = idp.token_requests("refresh_token")
    with pytest.raises(HTTPClientError) as e:
        await rejected(jp_fetch, report(fresh, admin_fix=True))
    assert b"warehouse_rejected" in e.value.response.body
    assert ISSUER_FIX.encode() in e.value.response.body
    st = await status(jp_fetch)
    assert st["status"] == "error" and st["error"] == "warehouse_rejected"
    assert st["fix"] == ISSUER_FIX
    for _ in range(3):  # each token request answers the fix at once: no refresh, no consent
        with pytest.raises(HTTPClientError):
            await api(jp_fetch, "connections", "sales", "token", method="POST")
    assert idp.token_requests("refresh_token") == before


async def test_bad_report_is_400(jp_fetch, consent, idp):
    with pytest.raises(HTTPClientError) as e:
        await rejected(jp_fetch, {"grant": 3})
    assert e.value.code == 400
