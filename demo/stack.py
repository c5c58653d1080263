"""The demo stack: an OpenID provider and three warehouses on loopback, and the
single-user mode (``--single-user``: one JupyterLab). demo/hub.py runs the hub mode.

``bash scripts/demo`` starts it and waits for Ctrl-C, which stops every process it
started. ``--check`` signs in headlessly as alice, then bob, runs the quickstart
notebook for each, prints what each saw, and exits 0 only if each saw their own rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from demo.state import REPO, WORK, clean_notebook, fresh_start, quiet_lab

sys.path.insert(0, str(REPO))

import httpx2
from cryptography.fernet import Fernet

from tests.idp_fixture import TestIdP, default_client, free_port
from tests.servers.bigquery.fixture import BigQueryServer
from tests.servers.databricks.fixture import DatabricksServer
from tests.servers.snowflake.fixture import SnowflakeServer

RUNNING: list[subprocess.Popen[bytes]] = []
USERS = ("alice", "bob")
SF, DBX, BQ = "https://snowflake.local", "https://databricks.local", "https://bigquery.local"
BQ_SCOPE = "https://www.googleapis.com/auth/bigquery"
SALES = [  # region, amount, owner
    ("EU", "120.50", "alice"),
    ("US", "75.00", "alice"),
    ("APAC", "310.25", "alice"),
    ("EU", "42.00", "bob"),
    ("US", "999.99", "bob"),
]


def say(text: str) -> None:
    print(f"\033[1m== {text}\033[0m", file=sys.stderr, flush=True)


def email(login: str) -> str:
    return f"{login}@example.com"


def start_warehouses(
    idp: TestIdP, stack: contextlib.ExitStack, *, passthrough: bool = False
) -> dict[str, Any]:
    """The three warehouses, trusting ``idp``; returns the connections for them.

    ``passthrough``: Databricks takes the hub login's token through RFC 8693 token
    exchange at the IdP (no popup); Snowflake and BigQuery still ask for consent.
    """
    jwks = idp.discovery()["jwks_uri"]
    say("Starting Snowflake, Databricks SQL and BigQuery (local)")
    sf = SnowflakeServer(
        {
            "issuer": idp.issuer,
            "jwks_url": jwks,
            "audiences": [SF],
            "any_role_mode": "ENABLE",
            "users": {
                email(u): {"name": u.upper(), "default_role": "ANALYST", "roles": ["ANALYST"]}
                for u in USERS
            },
            "sales_rows": [[r, float(a), o.upper()] for r, a, o in SALES],
        }
    )
    dbx = DatabricksServer(
        {
            "issuer": idp.issuer,
            "jwks_url": jwks,
            "audience": DBX,
            "users": {email(u): {"name": u.title()} for u in USERS},
            "sales_rows": [[r, a, email(o)] for r, a, o in SALES],
        }
    )
    bq = BigQueryServer(
        {
            "project": "demo-project",
            "issuer": idp.issuer,
            "jwks_url": jwks,
            "audience": BQ,
            "users": {email(u): ["demo"] for u in USERS},
        }
    )
    for server in (sf, dbx, bq):
        stack.callback(server.stop)
    with ThreadPoolExecutor(3) as pool:  # each waits for its process: start them at once
        for started in [pool.submit(server.start) for server in (sf, dbx, bq)]:
            started.result()
    # The template scopes (what the sidebar's form proposes): the resource indicator
    # picks the warehouse's audience at the IdP.
    databricks_auth: dict[str, Any] = {}
    if passthrough:
        databricks_auth = {"auth": "token-exchange", "scopes": "sql"}
    return {
        "snowflake": {
            "connector": "snowflake",
            "account": "connauth",
            "database": "CONNAUTH",
            "schema": "PUBLIC",
            "scopes": "session:role-any offline_access",
            "resource": SF,
            "description": "local Snowflake (fakesnow), External OAuth",
            "driver_options": {
                "host": sf.host,
                "port": sf.port,
                "protocol": "http",
                "login_timeout": 30,
                "enable_server_session_keep_alive_auto_detection": False,
            },
        },
        "databricks": {
            "connector": "databricks",
            "server_hostname": f"{dbx.host}:{dbx.port}",
            "http_path": dbx.http_path,
            **databricks_auth,
            "resource": DBX,
            "description": "local Databricks SQL warehouse, token federation",
            "driver_options": {
                "_connection_uri": f"https://{dbx.host}:{dbx.port}{dbx.http_path}",
                "_tls_trusted_ca_file": dbx.ca_file,
                "enable_telemetry": False,
            },
        },
        "bigquery": {
            "connector": "bigquery",
            "project": "demo-project",
            "scopes": f"{BQ_SCOPE} offline_access",
            "resource": BQ,
            "description": "local BigQuery (bqemulator)",
            "driver_options": {
                "client_options": {"api_endpoint": bq.endpoint},
                "use_storage_api": False,
                "retry_deadline": 30,
            },
        },
    }


def crypt_key() -> str:
    path = WORK / "crypt.key"
    if not path.exists():
        path.write_text(Fernet.generate_key().decode())
        path.chmod(0o600)
    return path.read_text().strip()


def start_jupyter(
    port: int, idp: TestIdP, connections: dict[str, Any], stack: contextlib.ExitStack
) -> tuple[str, str, str]:
    token, kernel_secret = secrets.token_hex(16), secrets.token_urlsafe(24)
    base = f"http://127.0.0.1:{port}/"
    config_dir = WORK / "jupyter-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "ConnAuth": {
                    "discovery_url": idp.discovery_url,
                    "client_id": idp.client_id,
                    "public_url": base,
                    "connections": connections,
                    "store_path": str(WORK / "data" / "tokens.sqlite3"),
                },
                "ConnAuthApp": {"kernel_secret": kernel_secret},
            },
            indent=2,
        )
    )
    work = WORK / "notebooks"
    clean_notebook(work)
    quiet_lab(config_dir)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_DATA_DIR": str(WORK / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(WORK / "jupyter-runtime"),
        "JUPYTER_CONNAUTH_CRYPT_KEY": crypt_key(),
        "JUPYTER_CONNAUTH_CLIENT_SECRET": idp.client_secret or "",
        "JUPYTER_PLATFORM_DIRS": "1",
        "JUPYTER_PATH": jupyter_path(),
    }
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
        "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={work}", "--ServerApp.port_retries=0",
        "--LabApp.default_url=/lab/tree/quickstart.ipynb",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(WORK / "jupyter.log", "w")
    stack.callback(log.close)
    say(f"Starting JupyterLab on {base}")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    stack.callback(stop_process, proc)
    RUNNING.append(proc)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"JupyterLab exited at start; see {WORK / 'jupyter.log'}")
        with contextlib.suppress(httpx2.HTTPError):
            r = httpx2.get(f"{base}api/status", headers={"Authorization": f"token {token}"})
            if r.status_code == 200:
                return base, token, kernel_secret
        time.sleep(0.3)
    raise SystemExit(f"JupyterLab did not answer within 90 s; see {WORK / 'jupyter.log'}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def jupyter_path() -> str:
    """A data dir whose labextensions/jupyter-connauth is this checkout's build: the
    demo's servers show this checkout's sidebar whatever the venv links to."""
    link = WORK / "jupyter-path" / "labextensions" / "jupyter-connauth"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(REPO / "jupyter_connauth" / "labextension")
    return str(link.parent.parent)


def start_idp(redirect_uris: list[str], stack: contextlib.ExitStack) -> TestIdP:
    say("Starting the OpenID provider (oidc-provider)")
    idp = TestIdP(
        workdir=WORK / "idp",
        resources={
            SF: {"audience": SF, "scopes": ["session:role-any"]},
            DBX: {"audience": DBX, "scopes": ["sql"]},
            BQ: {"audience": BQ, "scopes": [BQ_SCOPE]},
        },
        clients=[default_client(redirect_uris)],
        access_token_ttl=3600,
    )
    idp.start()
    stack.callback(idp.close)
    return idp


def announce_fresh_start() -> None:
    if fresh_start():
        say(
            "Fresh start: the previous run's authorizations and notebooks were dropped "
            "(the demo's IdP keeps no grants across runs)"
        )


def say_ready() -> None:
    """How long since ``bash scripts/demo`` started (installs included)."""
    started = float(os.environ.get("CONNAUTH_DEMO_STARTED") or 0)
    if started:
        say(f"Ready in {time.time() - started:.1f} s")


def wait_for_ctrl_c(what: str) -> None:
    """Until Ctrl-C, or until one of the demo's processes exits."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # even when started with SIGINT ignored
        signal.signal(sig, signal.default_int_handler)
    try:
        while all(p.poll() is None for p in RUNNING):
            time.sleep(1)
        print(f"{what} stopped; stopping the rest.", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    say("Stopping every process the demo started")


def run_single_user(args: argparse.Namespace) -> int:
    port = args.port or free_port()
    with contextlib.ExitStack() as stack:
        announce_fresh_start()
        idp = start_idp([f"http://127.0.0.1:{port}/oauth/connector/callback"], stack)
        connections = start_warehouses(idp, stack)
        base, token, kernel_secret = start_jupyter(port, idp, connections, stack)
        say_ready()
        if args.check:
            from demo.check import run_check

            return run_check(base, token, kernel_secret, list(connections))
        print(
            f"\n  JupyterLab:  {base}lab/tree/quickstart.ipynb?token={token}\n"
            f"  Demo users:  {', '.join(USERS)} (any password)\n"
            f"  IdP:         {idp.issuer}\n"
            f"  Logs:        {WORK / 'jupyter.log'}\n\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        wait_for_ctrl_c("JupyterLab")
    return 0
