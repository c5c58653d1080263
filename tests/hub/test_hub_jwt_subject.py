"""On the hub, the Snowflake JWT's subject is the claim c.ConnAuth.jwt_subject_claim names,
from the user's model as the hub API returns it (the authenticator's auth_state); a
verified email by default, and nothing from the user name unless the admin maps it.
In-process: the HubBroker and the user models JupyterHub's API answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric import rsa
from traitlets.config import Config

from jupyter_connauth.broker.config import ConnAuth
from jupyter_connauth.broker.store import SQLTokenStore
from jupyter_connauth.core.crypto import CryptKeeper
from jupyter_connauth.core.errors import ConnAuthError
from jupyter_connauth.hub.broker import HubBroker
from jupyter_connauth.hub.identity import identity_from_model
from tests.test_passthrough_jwt import rsa_pem

AUD = "https://acme.snowflakecomputing.com"
OID = "6f1e2d3c-0000-4a5b-9c8d-00000000ca01"


def model(name: str, **user_info: Any) -> dict[str, Any]:
    """A user model with GenericOAuthenticator's auth_state."""
    return {"name": name, "auth_state": {"access_token": "x" * 20, "oauth_user": user_info}}


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, rsa.RSAPrivateKey]:
    return rsa_pem(tmp_path)


def make_broker(tmp_path: Path, key_path: Path, **settings: Any) -> HubBroker:
    cfg = Config()
    cfg.ConnAuth.discovery_url = "http://127.0.0.1:9/.well-known/openid-configuration"
    cfg.ConnAuth.client_id = "hub"
    cfg.ConnAuth.public_url = "https://hub.example.com/services/connauth/"
    for k, v in settings.items():
        cfg.ConnAuth[k] = v
    cfg.ConnAuth.connections = {
        "sf": {
            "connector": "snowflake",
            "account": "acme",
            "auth": "oauth-jwt",
            "jwt_audience": AUD,
            "jwt_user_claim": "sub",
            "private_key_path": str(key_path),
        }
    }
    store = SQLTokenStore(
        f"sqlite:///{tmp_path / 's.sqlite'}", CryptKeeper([Fernet.generate_key()])
    )
    return HubBroker(ConnAuth(config=cfg), store, redirect_uri=cfg.ConnAuth.public_url + "oauth/cb")


async def test_subject_from_the_named_auth_state_claim(
    tmp_path: Path, key: tuple[Path, rsa.RSAPrivateKey]
) -> None:
    oid_broker = make_broker(tmp_path, key[0], jwt_subject_claim="oid")
    try:
        await check_oid_subject(oid_broker, key[1])
    finally:
        await oid_broker.aclose()


async def check_oid_subject(oid_broker: HubBroker, key: rsa.RSAPrivateKey) -> None:
    ident = identity_from_model(model("alice", oid=OID, email="alice@example.com"))
    grant = await oid_broker.token_for(ident, "sf")
    assert not hasattr(grant, "flow_id")
    claims = pyjwt.decode(grant.access_token, key.public_key(), algorithms=["RS256"], audience=AUD)
    assert claims["sub"] == OID
    assert oid_broker.status_for(ident, "sf")["authorized_as"] == OID
    assert claims["iss"] == "https://hub.example.com/services/connauth/"
    # a user whose authenticator gave no such claim gets none, whatever the email
    with pytest.raises(ConnAuthError) as e:
        await oid_broker.token_for(identity_from_model(model("bob", email="b@x.org")), "sf")
    assert e.value.code == "no_subject" and e.value.status == 403


async def test_default_is_a_verified_email_and_no_template(
    tmp_path: Path, key: tuple[Path, rsa.RSAPrivateKey]
) -> None:
    broker = make_broker(tmp_path, key[0])
    try:
        ok = identity_from_model(model("carol", email="carol@example.com"))
        grant = await broker.token_for(ok, "sf")
        sub = pyjwt.decode(grant.access_token, options={"verify_signature": False})["sub"]
        assert sub == "carol@example.com"
        unverified = model("eve", email="boss@example.com", email_verified=False)
        with pytest.raises(ConnAuthError) as e:
            await broker.token_for(identity_from_model(unverified), "sf")
        assert e.value.code == "no_email" and e.value.status == 403
    finally:
        await broker.aclose()
