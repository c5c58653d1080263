"""The demo's default mode: a real JupyterHub on loopback.

configurable-http-proxy in front, the hub logging users in at the local IdP
(OAuthenticator's GenericOAuthenticator, login token kept in auth_state), the connauth
hub service with its SQLite store, and one single-user server per user
(SimpleLocalProcessSpawner: every user runs as this OS user, with a home of their own
under .cache/demo/hub/home opening a clean copy of the quickstart). Databricks takes the
login's token by token exchange (no popup); Snowflake and BigQuery ask for consent.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from typing import Any

from demo.stack import (
    RUNNING,
    USERS,
    WORK,
    announce_fresh_start,
    crypt_key,
    jupyter_path,
    say,
    say_ready,
    start_idp,
    start_warehouses,
    wait_for_ctrl_c,
)
from demo.state import LAB_SETTINGS, NOTEBOOK
from tests.hub.hub_fixture import CHP, TestHub, generic_oauth_config, service_config
from tests.idp_fixture import TestIdP, free_port

HUB_CONFIG = """
import shutil
from pathlib import Path

c.GenericOAuthenticator.login_service = "the demo IdP (alice or bob, any password)"
c.Spawner.default_url = "/lab/tree/quickstart.ipynb"
c.Spawner.args = ["--ServerApp.allow_root=True", "--LabApp.news_url="]


def clean_quickstart(spawner):
    # each user's own clean copy (home dirs are dropped at every demo start)
    home = Path(spawner.home_dir)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "quickstart.ipynb").exists():
        shutil.copyfile({notebook!r}, home / "quickstart.ipynb")
    for name, text in {lab_settings!r}.items():  # no news prompt: the demo is offline
        path = home / ".jupyter" / "lab" / "user-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


c.Spawner.pre_spawn_hook = clean_quickstart
c.Spawner.environment["JUPYTER_PATH"] = {jupyter_path!r}
"""


@dataclass
class HubDemo:
    hub: TestHub
    idp: TestIdP
    connections: dict[str, Any]

    @property
    def url(self) -> str:
        return self.hub.public_url


def start_hub_demo(stack: contextlib.ExitStack, port: int = 0) -> HubDemo:
    """The whole hub stack, stopped by ``stack``."""
    if not CHP.exists():
        raise RuntimeError(f"{CHP} is missing: run npm ci in tests/hub")
    port = port or free_port()
    public = f"http://127.0.0.1:{port}/"
    login_callback = f"{public}hub/oauth_callback"
    connector_callback = f"{public}services/connauth/oauth/connector/callback"
    idp = start_idp([login_callback, connector_callback], stack)
    connections = start_warehouses(idp, stack, passthrough=True)
    extra = HUB_CONFIG.replace("{notebook!r}", repr(str(NOTEBOOK)))
    extra = extra.replace("{jupyter_path!r}", repr(jupyter_path()))
    extra = extra.replace("{lab_settings!r}", repr(LAB_SETTINGS))
    extra += generic_oauth_config(idp, login_callback)
    hub_dir = WORK / "hub"
    hub = TestHub(
        hub_dir,
        service_config=service_config(
            discovery_url=idp.discovery_url,
            client_id=idp.client_id,
            public_url=f"{public}services/connauth/",
            connections=connections,
            _db_url=f"sqlite:///{hub_dir / 'connauth.sqlite'}",
        ),
        service_env={
            "JUPYTERHUB_CRYPT_KEY": crypt_key(),
            "JUPYTER_CONNAUTH_CLIENT_SECRET": idp.client_secret or "",
        },
        authenticator="generic-oauth",
        extra_config=extra,
        port=port,
    )
    say(f"Starting JupyterHub on {public} (configurable-http-proxy, the connauth service)")
    stack.callback(hub.stop)
    hub.start()
    if hub._proc is not None:
        RUNNING.append(hub._proc)
    return HubDemo(hub, idp, connections)


def run_hub(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        announce_fresh_start()
        demo = start_hub_demo(stack, args.port)
        say_ready()
        if args.check:
            from demo.hub_check import run_hub_check

            return run_hub_check(demo.url, list(demo.connections))
        print(
            f"\n  JupyterHub:  {demo.url}\n"
            f"  Demo users:  {', '.join(USERS)} (any password), each in their own browser\n"
            "               (or a private window): each gets a server of their own.\n"
            "  Databricks uses your hub login (no popup); Snowflake and BigQuery ask once.\n"
            f"  IdP:         {demo.idp.issuer}\n"
            f"  Logs:        {demo.hub.log_path}\n\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        wait_for_ctrl_c("JupyterHub")
    return 0
