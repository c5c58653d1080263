"""The hub service's Test and browse use the hub's credential (``token_for``), not the
plain ``Broker.token``: a Snowflake JWT is minted for the hub's email of the user, and
the driver session is per (user, connection). In-process, no hub: a recording connector
stands in for the driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.fernet import Fernet
from traitlets.config import Config

from jupyter_connauth.broker.config import ConnAuth
from jupyter_connauth.broker.store import open_store
from jupyter_connauth.broker.warehouse import WarehouseCalls
from jupyter_connauth.connectors import sessions as sessions_module
from jupyter_connauth.connectors.base import ConnectionInfo, Credential
from jupyter_connauth.core.crypto import CryptKeeper
from jupyter_connauth.core.errors import ConnAuthError
from jupyter_connauth.hub.app import warehouse_token_source
from jupyter_connauth.hub.broker import HubBroker
from jupyter_connauth.hub.identity import HubIdentity
from tests.test_passthrough_jwt import rsa_pem, sf_jwt

AUD = "https://acme.snowflakecomputing.com"
REDIRECT = "https://hub.example.com/services/connauth/oauth/connector/callback"


class FakeUsers:
    """Stands in for HubUsers: the hub's verified identities."""

    def __init__(self, **emails: str | None) -> None:
        self.emails = emails
        self.asked: list[str] = []

    async def identity(self, name: str, *, leeway: float = 60.0) -> HubIdentity:
        self.asked.append(name)
        return HubIdentity(name=name, email=self.emails.get(name))


class RecordingConnector:
    def __init__(self) -> None:
        self.connected: list[Credential] = []

    def connect(self, info: ConnectionInfo, cred: Credential, renew: Any = None) -> Credential:
        self.connected.append(cred)
        return cred

    def query_arrow(self, conn: Credential, sql: str) -> list[int]:
        return [1]

    def whoami(self, conn: Credential) -> dict[str, Any]:
        return {"user": conn.identity, "role": None}

    def list_catalogs(self, conn: Credential) -> list[str]:
        return ["ANALYTICS"]

    def close(self, conn: Credential) -> None:
        pass

    def is_auth_error(self, exc: Exception) -> bool:
        return False

    def translate_error(self, exc: Exception, info: ConnectionInfo) -> None:
        return None


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> RecordingConnector:
    fake = RecordingConnector()
    monkeypatch.setattr(sessions_module, "get_connector", lambda _name: fake)
    return fake


async def test_test_and_browse_use_the_hubs_identity(
    tmp_path: Path, recording: RecordingConnector
) -> None:
    key_path, key = rsa_pem(tmp_path)
    cfg = Config()
    cfg.ConnAuth.discovery_url = "http://127.0.0.1:9/.well-known/openid-configuration"
    cfg.ConnAuth.client_id = "hub"
    cfg.ConnAuth.connections = {"sf": sf_jwt(key_path, AUD)}
    crypt = CryptKeeper([Fernet.generate_key()])
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite'}", crypt)
    broker = HubBroker(ConnAuth(config=cfg), store, redirect_uri=REDIRECT)
    users = FakeUsers(alice="alice@corp.example", nomail=None)
    calls = WarehouseCalls(broker, token=warehouse_token_source(broker, users))  # type: ignore[arg-type]
    try:
        result = await calls.test("alice", "sf")
        assert isinstance(result, dict) and result["status"] == "ok"
        assert result["whoami"]["user"] == "alice@corp.example"
        assert await calls.browse("alice", "sf", []) == ["ANALYTICS"]
        assert len(recording.connected) == 1  # one session for test and browse
        cred = recording.connected[0]
        assert cred.kind == "jwt"
        claims = pyjwt.decode(
            cred.token,
            key.public_key(),
            algorithms=["RS256"],
            audience=AUD,
        )
        assert claims["email"] == "alice@corp.example"  # the hub's email, from token_for
        assert users.asked and set(users.asked) == {"alice"}
        # No email at the hub: the same clear error as the token route.
        with pytest.raises(ConnAuthError) as err:
            await calls.test("nomail", "sf")
        assert err.value.code == "no_email"
    finally:
        calls.close()
        await broker.aclose()
