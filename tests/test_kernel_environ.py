"""No broker secret in a kernel's or terminal's environment: real kernels started by a
real Jupyter server (``POST api/kernels``), read through ``/proc/<pid>/environ`` and
``os.environ`` in a cell; and a kernel hosting the broker itself (no server)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from jupyter_client.manager import AsyncKernelManager

from tests.test_passthrough_jwt import rsa_pem

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.timeout(180),
]

CLIENT_SECRET = "connauth-test-client-secret-6f1d2c"  # the test IdP's
KEY_VAR = "SNOWFLAKE_SIGNING_KEY_PEM"
NAMES = (
    "JUPYTER_CONNAUTH_CLIENT_SECRET",
    "JUPYTER_CONNAUTH_CRYPT_KEY",
    "JUPYTERHUB_CRYPT_KEY",
    KEY_VAR,
)

PROBE = f"""
import json, os, subprocess
print("PROBE" + json.dumps({{
    "pid": os.getpid(),
    "environ": {{n: os.environ.get(n) for n in {NAMES!r} + ("JUPYTER_CONNAUTH_URL",)}},
    "child": subprocess.run(["env"], capture_output=True, text=True).stdout,
}}))
"""


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch, crypt_key: str, tmp_path: Path) -> dict[str, str]:
    """The secrets in the server's environment, as the README suggests."""
    pem = rsa_pem(tmp_path)[0].read_text()
    values = {
        "JUPYTER_CONNAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "JUPYTER_CONNAUTH_CRYPT_KEY": crypt_key,
        "JUPYTERHUB_CRYPT_KEY": Fernet.generate_key().decode(),
        KEY_VAR: pem,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def connections() -> dict[str, Any]:
    return {
        "sf": {
            "connector": "snowflake",
            "account": "acme",
            "auth": "oauth-jwt",
            "jwt_audience": "https://acme.snowflakecomputing.com",
            "private_key_env": KEY_VAR,
        }
    }


@pytest.fixture
def jp_server_config(
    jp_server_config: dict[str, Any], secret_env: dict[str, str]
) -> dict[str, Any]:
    jp_server_config["ConnAuth"].pop("client_secret")  # from the environment
    return jp_server_config


def secret_bits(values: dict[str, str]) -> list[bytes]:
    """The values, and for the PEM its base64 body line (what a leak would show)."""
    bits = [v.encode() for v in values.values()]
    bits.append(values[KEY_VAR].splitlines()[1].encode())
    return bits


def proc_environ(pid: int) -> bytes:
    """The environment block the process was started with (as another process sees it)."""
    return Path(f"/proc/{pid}/environ").read_bytes()


async def run_probe(km: AsyncKernelManager) -> dict[str, Any]:
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = await kc.execute_interactive(PROBE, output_hook=hook, timeout=60)
        text = "".join(out)
        assert reply["content"]["status"] == "ok", text
        probe: dict[str, Any] = json.loads(text.split("PROBE", 1)[1])
        return probe
    finally:
        kc.stop_channels()


async def call(jp_fetch: Any, *path: str, method: str = "GET", body: Any = None) -> Any:
    kw: dict[str, Any] = {"method": method}
    if method == "POST":
        kw["body"] = json.dumps(body or {})
    resp = await jp_fetch(*path, **kw)
    return json.loads(resp.body) if resp.body else None


async def test_kernels_and_terminals_inherit_no_secret(
    jp_fetch: Any, jp_serverapp: Any, secret_env: dict[str, str], broker: Any
) -> None:
    kernel = await call(jp_fetch, "api", "kernels", method="POST", body={"name": "python3"})
    km = jp_serverapp.kernel_manager.get_kernel(kernel["id"])
    try:
        probe = await run_probe(km)
        seen = probe["environ"]
        assert seen.pop("JUPYTER_CONNAUTH_URL")  # what the kernel needs is there
        assert seen == dict.fromkeys(NAMES), "a secret in the kernel's os.environ"
        environ = proc_environ(probe["pid"])
        assert b"JUPYTER_CONNAUTH_TOKEN=" in environ
        child = probe["child"].encode()
        for bit in secret_bits(secret_env):
            assert bit not in environ, "a secret in /proc/<kernel pid>/environ"
            assert bit not in child, "a secret in the environment of the kernel's children"
    finally:
        await call(jp_fetch, "api", "kernels", kernel["id"], method="DELETE")

    terms = jp_serverapp.web_app.settings.get("terminal_manager")
    if terms is not None:  # jupyter_server_terminals is installed
        term = await call(jp_fetch, "api", "terminals", method="POST")
        try:
            pid = terms.get_terminal(term["name"]).ptyproc.pid
            environ = proc_environ(pid)
            assert b"JUPYTER_CONNAUTH_URL=" in environ
            for bit in secret_bits(secret_env):
                assert bit not in environ, "a secret in a terminal's environment"
        finally:
            await call(jp_fetch, "api", "terminals", term["name"], method="DELETE")

    # the broker still holds what it read at start
    assert broker.config.client_secret == CLIENT_SECRET
    assert broker.minter.kid(broker.connection("sf"))


async def test_a_kernel_hosting_the_broker_drops_them_from_os_environ(
    tmp_path: Path, secret_env: dict[str, str], connections: dict[str, Any]
) -> None:
    """No Jupyter server: the kernel runs the broker. Cell code and subprocesses do not
    see the secrets once the broker has read them (/proc/self/environ keeps its initial
    block: the broker is that process; SECURITY.md says so)."""
    config_dir = tmp_path / "kernel-config"
    config_dir.mkdir()
    config = {
        "ConnAuth": {
            "discovery_url": "http://127.0.0.1:9/.well-known/openid-configuration",
            "client_id": "connauth-test-client",
            "store_path": str(tmp_path / "kernel-store" / "tokens.sqlite3"),
            "connections": connections,
        }
    }
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_CONNAUTH_")}
    env.update(secret_env, JUPYTER_CONFIG_DIR=str(config_dir))
    km = AsyncKernelManager(kernel_name="python3")
    await km.start_kernel(env=env)
    try:
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            reply = await kc.execute_interactive(
                "%load_ext jupyter_connauth\n%sql_connector list", timeout=60
            )
            assert reply["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
        probe = await run_probe(km)
        assert probe["environ"] == dict.fromkeys((*NAMES, "JUPYTER_CONNAUTH_URL"))
        child = probe["child"].encode()
        for bit in secret_bits(secret_env):
            assert bit not in child, "a secret in the environment of a cell's subprocess"
    finally:
        await km.shutdown_kernel(now=True)
        await asyncio.sleep(0)
