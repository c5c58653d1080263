"""A real ``python -m jupyter_server`` with the extension, for the crash and key-rotation
tests: isolated config/data/runtime dirs, a fixed port (the redirect URI registered at
the IdP stays valid across restarts), the test-only ``zz_connauth_faults`` extension,
and checks of the SQLite store from outside the server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from jupyter_connauth.broker.store import open_store
from jupyter_connauth.core.crypto import CryptKeeper
from jupyter_connauth.core.tokens import TokenRecord
from tests.faults.server_ext.zz_connauth_faults import check_synthetic
from tests.idp_fixture import TestIdP, default_client, free_port, headless_login

SERVER_EXT = Path(__file__).resolve().parent / "server_ext"
CONNECTIONS = [f"sales{i}" for i in range(4)]
OWNER = "alice"
START_TIMEOUT = 60.0


def connection_config() -> dict[str, Any]:
    return {
        name: {
            "connector": "databricks",
            "server_hostname": "dbc.example.com",
            "http_path": f"/sql/1.0/warehouses/{name}",
            "scopes": "sql offline_access",
        }
        for name in CONNECTIONS
    }


@dataclass
class JupyterProc:
    """One Jupyter server directory; ``start()`` / ``kill()`` / ``stop()`` as often as needed."""

    root: Path
    idp: TestIdP
    port: int = field(default_factory=free_port)
    jupyter_token: str = field(default_factory=lambda: secrets.token_hex(24))
    refresh_leeway: float = 10**6  # every token is due: each Broker.token call refreshes
    refresh_leeway_fraction: float = 1.0  # (all of the lifetime may be leeway)
    proc: subprocess.Popen[bytes] | None = None
    kernel_secret: str = ""
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def redirect_uri(self) -> str:
        return f"{self.base}oauth/connector/callback"

    @property
    def store_path(self) -> Path:
        return self.root / "data" / "connauth" / "tokens.sqlite3"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def _write_config(self) -> Path:
        config_dir = self.root / "config"
        for d in ("config", "data", "runtime", "nb"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        conn_auth = {
            "discovery_url": self.idp.discovery_url,
            "client_id": self.idp.client_id,
            "client_secret": self.idp.client_secret,
            "public_url": self.base,
            "store_path": str(self.store_path),
            "connections": connection_config(),
            "refresh_leeway": self.refresh_leeway,
            "refresh_leeway_fraction": self.refresh_leeway_fraction,
            "http_timeout": 5,
        }
        (config_dir / "jupyter_server_config.json").write_text(
            json.dumps(
                {
                    "ServerApp": {
                        "jpserver_extensions": {
                            "jupyter_connauth": True,
                            "zz_connauth_faults": True,
                            # not needed here; they only slow down each restart
                            "jupyterlab": False,
                            "jupyter_lsp": False,
                            "jupyter_server_terminals": False,
                            "notebook_shim": False,
                        }
                    },
                    "ConnAuthApp": {"owner": OWNER},
                    "ConnAuth": conn_auth,
                }
            )
        )
        return config_dir

    def start(self, crypt_key: str) -> None:
        assert self.proc is None or self.proc.poll() is not None
        config_dir = self._write_config()
        secret_file = self.root / "kernel-secret"
        secret_file.unlink(missing_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JUPYTER", "JUPYTERHUB", "PYTHONPATH"))
        }
        env.update(
            JUPYTER_CONFIG_DIR=str(config_dir),
            JUPYTER_DATA_DIR=str(self.root / "data"),
            JUPYTER_RUNTIME_DIR=str(self.root / "runtime"),
            JUPYTER_CONNAUTH_CRYPT_KEY=crypt_key,
            CONNAUTH_FAULTS_SECRET_FILE=str(secret_file),
            PYTHONPATH=os.pathsep.join([str(SERVER_EXT), str(SERVER_EXT.parents[2])]),
        )
        cmd = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.jupyter_token}",
            f"--ServerApp.root_dir={self.root / 'nb'}",
        ]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=self.root / "nb"
            )
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx2.TransportError):
                r = httpx2.get(self.base + "api/status", headers=self.auth, timeout=2)
                if r.status_code == 200 and secret_file.exists():
                    break
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"jupyter server did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        self.kernel_secret = secret_file.read_text().strip()

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.jupyter_token}"}

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no atexit, no SQLite close."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    # -- driving it --------------------------------------------------------------
    def consent(self, user: str, connection: str, http: httpx2.Client) -> None:
        """The user's consent for one connection: flow, IdP login, browser redirect."""
        r = httpx2.post(
            self.base + "connauth-faults/authorize",
            headers=self.auth,
            json={"user": user, "connection": connection},
            timeout=30,
        )
        r.raise_for_status()
        callback = headless_login(r.json()["authorize_url"], user, client=http)
        page = httpx2.post(  # as the user's own signed-in browser
            self.base + "connauth-faults/callback",
            headers=self.auth,
            json={"user": user, "query": httpx2.URL(callback).query.decode()},
            timeout=30,
        )
        assert page.status_code == 200, page.text
        assert f"Authorized as {user}@example.com" in page.text


def consent_users(server: JupyterProc, users: list[str]) -> None:
    for user in users:
        with httpx2.Client(timeout=10, trust_env=False, follow_redirects=False) as http:
            for conn in CONNECTIONS:
                server.consent(user, conn, http)


@dataclass
class Burst:
    """One burst of concurrent token writes and refreshes; ``ops`` of them in all."""

    refresh: list[tuple[str, str]]
    writes: list[tuple[str, str, int]]
    owner_calls: list[str]

    @property
    def ops(self) -> int:
        return len(self.refresh) + len(self.writes) + len(self.owner_calls)


def make_burst(
    rng: random.Random,
    real_users: list[str],
    synthetic_users: list[str],
    round_no: int,
    ops: int = 1000,
) -> Burst:
    n_owner = ops // 10
    n_refresh = ops * 3 // 10
    n_writes = ops - n_owner - n_refresh
    pairs = [(u, c) for u in real_users for c in CONNECTIONS]
    return Burst(
        refresh=[rng.choice(pairs) for _ in range(n_refresh)],
        writes=[
            (rng.choice(synthetic_users), rng.choice(CONNECTIONS), round_no * ops + i)
            for i in range(n_writes)
        ],
        owner_calls=[rng.choice(CONNECTIONS) for _ in range(n_owner)],
    )


async def run_burst(
    server: JupyterProc, burst: Burst, kill_after: float | None = None, *, graceful: bool = False
) -> dict[str, Any]:
    """Fire the burst: one churn request (refreshes + writes inside the server) and the
    owner's token requests through the broker API, all at once. With ``kill_after``,
    SIGKILL (``graceful``: SIGTERM) the server that many seconds after the first request
    went out."""
    limits = httpx2.Limits(max_connections=len(burst.owner_calls) + 2)
    outcome: dict[str, Any] = {"churn": None, "owner": [], "killed": False}
    async with httpx2.AsyncClient(timeout=120, limits=limits) as client:

        async def churn() -> None:
            r = await client.post(
                server.base + "connauth-faults/churn",
                headers=server.auth,
                json={"refresh": burst.refresh, "writes": burst.writes, "spread": 0.5},
            )
            r.raise_for_status()
            outcome["churn"] = r.json()

        async def owner(conn: str) -> None:
            r = await client.post(
                f"{server.base}connauth/api/connections/{conn}/token",
                headers={"X-ConnAuth-Token": server.kernel_secret},
            )
            outcome["owner"].append(r.json().get("status") if r.status_code == 200 else r.text)

        tasks = [asyncio.ensure_future(churn())]
        tasks += [asyncio.ensure_future(owner(c)) for c in burst.owner_calls]
        if kill_after is None:
            await asyncio.gather(*tasks)
            return outcome
        await asyncio.sleep(kill_after)
        outcome["completed_before_kill"] = outcome["churn"] is not None
        await asyncio.to_thread(server.stop if graceful else server.kill)
        outcome["killed"] = True
        await asyncio.gather(*tasks, return_exceptions=True)
    return outcome


# -- the store, from outside the server ---------------------------------------------


def _jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def check_store(
    path: Path, keys: list[bytes], real_users: set[str]
) -> dict[tuple[str, str], float]:
    """Open the store as the server does, then read every row raw: each token present
    decrypts with ``keys`` and is complete. Returns ``{(user, conn): updated_at}`` of the
    rows holding a token."""
    crypt = CryptKeeper(keys)
    store = open_store(path, crypt)  # the store opens (and recovers its WAL)
    store.close()
    db = sqlite3.connect(str(path))
    try:
        (integrity,) = db.execute("PRAGMA integrity_check").fetchone()
        assert integrity == "ok", integrity
        rows = db.execute(
            "SELECT user, connection, fingerprint, data, reason, updated_at FROM tokens"
        ).fetchall()
    finally:
        db.close()
    present: dict[tuple[str, str], float] = {}
    for user, conn, fingerprint, data, reason, updated_at in rows:
        assert fingerprint, (user, conn)
        if data is None:
            assert reason, f"{user}/{conn}: dropped without a reason"
            continue
        record = TokenRecord.loads(crypt.decrypt(data))  # DecryptionError fails the test
        assert record.access_token and record.expires_at, (user, conn)
        if user in real_users:
            claims = _jwt_claims(record.access_token)
            assert claims["sub"] == user, (user, conn, claims.get("sub"))
            assert record.refresh_token, f"{user}/{conn}: no refresh token"
            assert record.identity.get("email") == f"{user}@example.com"
        else:
            check_synthetic(record, user, conn)
        present[(user, conn)] = updated_at
    return present


def new_idp(workdir: Path, port: int) -> TestIdP:
    redirect = f"http://127.0.0.1:{port}/oauth/connector/callback"
    return TestIdP(
        workdir=workdir,
        clients=[default_client([redirect])],
        extra_scopes=["sql"],
        access_token_ttl=600,
    )
