"""Connections defined through the API; scope edits; uploaded secrets."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpclient import HTTPClientError

from jupyter_connauth.broker.broker import Broker
from jupyter_connauth.broker.config import ConnAuth
from jupyter_connauth.broker.store import open_store
from jupyter_connauth.core.crypto import CryptKeeper
from jupyter_connauth.core.tokens import TokenRecord
from tests.test_consent_flow import api

NEW = {
    "name": "adhoc",
    "connector": "databricks",
    "server_hostname": "h",
    "http_path": "/p",
    "scopes": "sql offline_access",
}


async def expect_error(coro: Any, status: int, code: str) -> dict[str, Any]:
    with pytest.raises(HTTPClientError) as e:
        await coro
    assert e.value.code == status
    body = json.loads(e.value.response.body)
    assert body["error"] == code
    return body


async def test_create_edit_delete(jp_fetch, consent, broker):
    created = await api(jp_fetch, "connections", method="POST", body=NEW)
    assert created["source"] == "api" and created["editable"] is True
    assert created["status"] == "consent_required"

    answer = await api(jp_fetch, "connections", "adhoc", "token", method="POST")
    await consent(answer["authorize_url"])
    # another user of a shared store holds a token for it too
    spec = broker.connection("adhoc")
    broker.store.put_token("bob", "adhoc", spec.fingerprint, TokenRecord("b", time.time() + 300))
    assert (await api(jp_fetch, "connections", "adhoc"))["status"] == "authorized"

    # an edit that keeps the scopes keeps the tokens
    same = await api(
        jp_fetch, "connections", "adhoc", method="PUT", body={**NEW, "description": "x"}
    )
    assert same["tokens_invalidated"] == 0 and same["status"] == "authorized"

    edited = await api(
        jp_fetch, "connections", "adhoc", method="PUT", body={**NEW, "scopes": "sql"}
    )
    assert edited["tokens_invalidated"] == 2
    assert edited["status"] == "consent_required" and edited["reason"] == "scopes_changed"
    assert broker.store.get_token("bob", "adhoc").record is None
    again = await api(jp_fetch, "connections", "adhoc", "token", method="POST")
    assert again["reason"] == "scopes_changed"

    await jp_fetch("connauth", "api", "connections", "adhoc", method="DELETE")
    await expect_error(api(jp_fetch, "connections", "adhoc"), 404, "connection_not_found")


async def test_info_has_the_scope_templates(jp_fetch):
    info = await api(jp_fetch, "info")
    assert info["scope_templates"]["databricks/oauth"] == ["offline_access"]
    assert info["scope_templates"]["snowflake/oauth-jwt"] == ["openid", "email", "offline_access"]


async def test_config_connections_are_read_only(jp_fetch):
    await expect_error(
        api(jp_fetch, "connections", "sales", method="PUT", body={**NEW, "name": "sales"}),
        403,
        "access_denied",
    )
    await expect_error(
        api(jp_fetch, "connections", method="POST", body={**NEW, "name": "sales"}),
        403,
        "access_denied",
    )


async def test_invalid_definition_is_rejected_with_field(jp_fetch):
    body = await expect_error(
        api(jp_fetch, "connections", method="POST", body={"name": "x", "connector": "bigquery"}),
        400,
        "config_error",
    )
    assert "project" in body["message"]


async def test_private_key_is_stored_encrypted_and_never_returned(jp_fetch, store_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    sf = {
        "name": "sf",
        "connector": "snowflake",
        "account": "acme",
        "auth": "oauth-jwt",
        "jwt_audience": "https://acme.snowflakecomputing.com",
    }
    await api(jp_fetch, "connections", method="POST", body=sf)
    await jp_fetch("connauth", "api", "connections", "sf", "private_key", method="PUT", body=pem)
    body = (await jp_fetch("connauth", "api", "connections")).body
    assert b"PRIVATE KEY" not in body
    status = await api(jp_fetch, "connections", "sf")
    assert status["private_key_configured"] is True
    marker = pem.splitlines()[1]
    raw = b"".join(p.read_bytes() for p in store_path.parent.iterdir() if p.is_file())
    assert marker not in raw
    # and it is not accepted for a connection from the config
    await expect_error(
        jp_fetch("connauth", "api", "connections", "sales", "private_key", method="PUT", body=pem),
        403,
        "access_denied",
    )


async def test_admin_scope_edit_in_config_asks_everyone_again(
    jp_fetch, consent, broker, store_path, idp, redirect_uri
):
    answer = await api(jp_fetch, "connections", "sales", "token", method="POST")
    await consent(answer["authorize_url"])
    spec = broker.connection("sales")
    broker.store.put_token("bob", "sales", spec.fingerprint, TokenRecord("b", time.time() + 300))
    # the admin edits the scopes in the config file and restarts the server
    config = ConnAuth(
        discovery_url=idp.discovery_url,
        client_id=idp.client_id,
        client_secret=idp.client_secret,
        connections={"sales": {**broker.config.connections["sales"], "scopes": "sql"}},
    )
    store = open_store(store_path, CryptKeeper.from_env_or_file(store_path.parent / "k"))
    restarted = Broker(config, store, redirect_uri=redirect_uri)
    try:
        for user in ("alice", "bob"):
            assert restarted.status(user, "sales")["reason"] == "scopes_changed"
            result = await restarted.token(user, "sales")
            assert result.to_json()["reason"] == "scopes_changed"
    finally:
        await restarted.aclose()
