"""Refresh at most once per token lifetime, retryable IdP answers (503 + Retry-After),
compare-and-drop on ``invalid_grant``, and a store whose key changed: through the broker
API of a real Jupyter server, against the real test IdP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from tornado.httpclient import HTTPClientError

from jupyter_connauth.broker.store import open_store
from jupyter_connauth.core.crypto import CryptKeeper
from jupyter_connauth.core.tokens import TokenRecord
from tests.test_consent_flow import api
from tests.test_refresh import authorize

TTL = 5  # seconds an access token lives at the IdP in these tests


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {"access_token_ttl": TTL}


@pytest.fixture
def connauth_config() -> dict[str, Any]:
    return {"http_timeout": 6}  # the default refresh_leeway (60 s) and fraction (0.5)


async def token(jp_fetch: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await api(jp_fetch, "connections", "sales", "token", method="POST")
    return answer


async def test_short_lived_tokens_refresh_once_per_lifetime(jp_fetch, consent, idp):
    """A 5-second token with the default 60-second leeway: refreshed when half its
    lifetime is gone, not on every request."""
    await authorize(jp_fetch, consent)
    seen, t0 = set(), time.monotonic()
    while time.monotonic() - t0 < 15:
        answer = await token(jp_fetch)
        assert answer["status"] == "ok", answer
        assert answer["expires_at"] > time.time()
        seen.add(answer["access_token"])
        await asyncio.sleep(0.3)
    refreshes = idp.token_requests("refresh_token")
    # one refresh per (lifetime - effective leeway) = 2.5 s: at most 6 in 15 s, plus slack
    assert 3 <= refreshes <= 7, refreshes
    assert len(seen) == refreshes + 1


async def expired(first: dict[str, Any]) -> None:
    await asyncio.sleep(max(0.0, first["expires_at"] - time.time() + 0.1))


@pytest.mark.parametrize(
    ("faults", "retry_after"),
    [
        ({"fail_error": "temporarily_unavailable"}, 2),  # OAuth error answer, Retry-After: 2
        ({"fail_token_endpoint": 503}, 1),  # an HTML 503 page, Retry-After: 1
        ({"fail_token_endpoint": 429}, 1),
    ],
    ids=["temporarily_unavailable", "503", "429"],
)
async def test_retryable_idp_answer_is_503_with_retry_after(
    jp_fetch, consent, idp, faults, retry_after
):
    first = await authorize(jp_fetch, consent)
    stored_before = idp.token_requests("refresh_token")
    idp.set_faults(**faults)
    await expired(first)
    with pytest.raises(HTTPClientError) as e:
        await token(jp_fetch)
    assert e.value.code == 503
    assert e.value.response.headers["Retry-After"] == str(retry_after)
    body = e.value.response.body.decode()
    assert f'"retry_after": {retry_after}' in body and "idp_unavailable" in body
    assert first["access_token"] not in body and "<html" not in body.lower()
    status = await api(jp_fetch, "connections", "sales")
    assert status["status"] == "authorized"  # the token is kept
    idp.clear_faults()
    back = await token(jp_fetch)  # silent recovery: no consent
    assert back["status"] == "ok" and back["access_token"] != first["access_token"]
    assert idp.token_requests("refresh_token") == stored_before + 2
    assert idp.stats()["authorization_requests"] == 1


async def test_invalid_grant_for_a_replaced_token_keeps_the_new_one(jp_fetch, consent, idp):
    """A refresh is under way when the user authorizes again (the grant it uses is
    revoked meanwhile): its invalid_grant must not drop the new token."""
    first = await authorize(jp_fetch, consent)
    await expired(first)
    idp.set_faults(delay_ms=4000)  # this refresh reaches the IdP's grant check in 4 s
    refreshing = asyncio.ensure_future(token(jp_fetch))
    await asyncio.sleep(0.5)
    assert idp.revoke_grants("alice") >= 1
    idp.clear_faults()
    started = await api(jp_fetch, "connections", "sales", "authorize", method="POST")
    page = await consent(started["authorize_url"])
    assert page.status_code == 200, page.text
    assert not refreshing.done()
    answer = await refreshing
    assert idp.stats()["token_errors"].get("refresh_token") == 1  # it got invalid_grant
    # the new grant's token (or, this late in its 5 s, its refresh), not a consent
    assert answer["status"] == "ok", answer
    assert answer["access_token"] != first["access_token"]
    status = await api(jp_fetch, "connections", "sales")
    assert status["status"] == "authorized"


class TestKeyChanged:
    """The store was written with another encryption key (the key file was lost, the
    variable changed): nothing answers 500, and the status says what to fix."""

    @pytest.fixture
    def connections(self) -> dict[str, Any]:
        return {
            "sales": {
                "connector": "databricks",
                "server_hostname": "dbc.example.com",
                "http_path": "/sql/1.0/warehouses/abc",
                "scopes": "sql offline_access",
            },
            "snow": {
                "connector": "snowflake",
                "account": "acme",
                "role": "ANALYST",
                "auth": "oauth-jwt",
                "jwt_audience": "https://acme.snowflakecomputing.com",
            },
        }

    @pytest.fixture
    def store_path(self, tmp_path: Path, connections: dict[str, Any]) -> Path:
        from jupyter_connauth.core.connections import parse_connection

        path = tmp_path / "store" / "tokens.sqlite3"
        old = open_store(path, CryptKeeper([Fernet.generate_key()]))
        fp = parse_connection("sales", connections["sales"], "oidc").fingerprint
        old.put_token("alice", "sales", fp, TokenRecord("at", time.time() + 300, "rt"))
        old.put_secret("connection:snow:private_key", b"-----BEGIN PRIVATE KEY-----")
        old.close()
        return path

    async def test_listing_answers_and_says_what_to_fix(self, jp_fetch):
        listing = await api(jp_fetch, "connections")
        by_name = {c["name"]: c for c in listing["connections"]}
        sales, snow = by_name["sales"], by_name["snow"]
        assert sales["status"] == "consent_required" and sales["reason"] == "key_changed"
        assert "cannot be decrypted" in sales["reason_text"]
        assert snow["status"] == "error" and snow["error"] == "key_changed"
        assert "upload the private key again" in snow["fix"]
        one = await api(jp_fetch, "connections", "snow")
        assert one["error"] == "key_changed"
        answer = await token(jp_fetch)
        assert answer["status"] == "consent_required" and answer["reason"] == "key_changed"
