"""``python -m jupyter_connauth.hub``: the broker as a JupyterHub managed service.

JupyterHub starts it with ``JUPYTERHUB_SERVICE_URL``, ``JUPYTERHUB_SERVICE_PREFIX``,
``JUPYTERHUB_API_URL`` and ``JUPYTERHUB_API_TOKEN``; it listens there and serves the
broker API under ``<prefix>api/`` and the one OAuth callback for every user at
``<prefix>oauth/connector/callback``. All secrets (client secret, private keys, the
encryption key, the database URL) live in this process's config and environment only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from tornado import web
from traitlets import Bool, Dict, Float, Int, Unicode, default
from traitlets.config import Application

from .._version import __version__
from ..broker.config import ConnAuth
from ..broker.flows import FlowStart
from ..broker.grants import TokenGrant
from ..broker.store import open_store
from ..broker.warehouse import TokenSource, WarehouseCalls
from ..core.crypto import CryptKeeper, keys_from_env
from ..core.errors import ConfigError
from .broker import HubBroker
from .handlers import handlers
from .identity import HubUsers

log = logging.getLogger("jupyter_connauth")
CALLBACK = "oauth/connector/callback"


def warehouse_token_source(broker: HubBroker, hub_users: HubUsers) -> TokenSource:
    """The credential of a server-side warehouse call (the sidebar's Test and browse):
    what ``POST connections/NAME/token`` answers the same user (``token_for`` with the
    hub's identity: the hub's email for JWTs, the login token for pass-through)."""

    async def token(user: str, name: str) -> TokenGrant | FlowStart:
        leeway = float(broker.config.refresh_leeway)
        return await broker.token_for(await hub_users.identity(user, leeway=leeway), name)

    return token


class ConnAuthHub(Application):
    """Per-user OAuth for data connectors, as a JupyterHub service."""

    name = "jupyter-connauth-hub"
    description = __doc__ or ""
    version = __version__
    classes = [ConnAuth]

    config_file = Unicode(
        "connauth_hub_config.py", help="Config file to load (c.ConnAuth..., c.ConnAuthHub...)"
    ).tag(config=True)
    db_url = Unicode(
        help="""SQLAlchemy URL of the token store, like JupyterHub's own db_url: the default
        SQLite file for one replica, postgresql+psycopg://user@host/db for several.
        Default: $JUPYTER_CONNAUTH_DB_URL, else sqlite:///jupyterhub-connauth.sqlite.""",
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        return os.environ.get("JUPYTER_CONNAUTH_DB_URL", "sqlite:///jupyterhub-connauth.sqlite")

    email_claim = Unicode(
        "email", help="The claim of the authenticator's auth_state user info holding the email."
    ).tag(config=True)
    email_map = Dict(
        help="""Hub user name → email, for users whose authenticator gives no email (the JWT
        minted for Snowflake names the user by email). Wins over auth_state.""",
    ).tag(config=True)
    email_template = Unicode(
        help="""Fallback email from the user name, e.g. "{username}@example.com".""",
    ).tag(config=True)
    identity_cache_ttl = Float(
        30.0, help="Seconds a user's hub model (admin flag, auth_state) is cached."
    ).tag(config=True)
    connections_reload_interval = Float(
        1.0,
        help="""Seconds between re-reads of the API-defined connections from the database
        (an admin's edit through another replica shows up within this time; this
        replica's own edits at once). 0: on every request.""",
    ).tag(config=True)
    warehouse_workers = Int(
        8,
        help="""Worker threads for the sidebar's Test and browse calls (warehouse drivers
        block); one driver session per (user, connection) is kept while its token is valid.""",
    ).tag(config=True)
    callback_requires_login = Bool(
        True,
        help="""The browser that brings back the IdP's answer must be signed in to the hub
        as the user who started the authorization (it is sent through the hub's login
        first when it is not). This stops anyone else from completing a user's consent
        link with their own IdP account. Turn off only for hubs without browser logins.""",
    ).tag(config=True)
    bind_url = Unicode(help="Where to listen. Default: $JUPYTERHUB_SERVICE_URL.").tag(config=True)

    @default("bind_url")
    def _default_bind_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101/services/connauth/")

    prefix = Unicode(help="URL prefix. Default: $JUPYTERHUB_SERVICE_PREFIX.").tag(config=True)

    @default("prefix")
    def _default_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or urlsplit(self.bind_url).path or "/"

    aliases = {
        "config": "ConnAuthHub.config_file",
        "db-url": "ConnAuthHub.db_url",
        "log-level": "Application.log_level",
    }

    def redirect_uri(self) -> str:
        """The one callback URL to register at the IdP."""
        base = self.connauth.public_url or os.environ.get("JUPYTERHUB_PUBLIC_URL", "")
        if not base:
            base = self.bind_url
            log.warning(
                "jupyter-connauth: neither c.ConnAuth.public_url nor JupyterHub's public_url "
                "is set; the redirect URI uses the service's own URL %s",
                base,
            )
        return base.rstrip("/") + "/" + CALLBACK

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        if self.config_file and os.path.exists(self.config_file):
            self.load_config_file(self.config_file)
        logging.getLogger("jupyter_connauth").setLevel(self.log.level)
        self.connauth = ConnAuth(parent=self)
        if keys_from_env() is None:
            raise SystemExit(
                "jupyter-connauth: set JUPYTERHUB_CRYPT_KEY (or JUPYTER_CONNAUTH_CRYPT_KEY) in "
                "the service's environment: every replica must encrypt with the same keys"
            )
        self.crypt_keys = keys_from_env()[0]  # type: ignore[index]
        try:
            crypt = CryptKeeper(self.crypt_keys)
            store = open_store(self.db_url, crypt)
        except ConfigError as e:
            raise SystemExit(f"jupyter-connauth: {e}") from None
        self.broker = HubBroker(self.connauth, store, redirect_uri=self.redirect_uri())
        if self.broker.config_error:
            log.warning("jupyter-connauth: %s", self.broker.config_error)
        self.hub_users = HubUsers(
            os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api"),
            os.environ.get("JUPYTERHUB_API_TOKEN", ""),
            cache_ttl=self.identity_cache_ttl,
            email_claim=self.email_claim,
            email_map={str(k): str(v) for k, v in self.email_map.items()},
            email_template=self.email_template,
        )
        # Test and browse run in the service, with the credential token_for gives.
        self.warehouse = WarehouseCalls(
            self.broker,
            self.warehouse_workers,
            token=warehouse_token_source(self.broker, self.hub_users),
        )

    def make_app(self) -> web.Application:
        return web.Application(
            handlers(self.prefix),
            # Shared by every replica, so the service's OAuth cookies work on any of them.
            cookie_secret=hashlib.sha256(b"connauth-cookie\0" + self.crypt_keys[0]).digest(),
            xsrf_cookies=False,
            connauth_broker=self.broker,
            connauth_hub_users=self.hub_users,
            connauth_warehouse=self.warehouse,
            connauth_reload={"interval": self.connections_reload_interval, "at": 0.0},
            connauth_callback_login=self.callback_requires_login,
        )

    async def serve(self) -> None:
        app = self.make_app()
        bind = urlsplit(self.bind_url)
        server = app.listen(bind.port or 80, address=bind.hostname or "127.0.0.1", xheaders=True)
        log.info(
            "jupyter-connauth %s hub service on %s (%s); register the redirect URI %s",
            __version__,
            self.bind_url,
            self.broker.store,
            self.broker.redirect_uri,
        )
        try:
            await asyncio.Event().wait()
        finally:
            server.stop()
            self.warehouse.close()
            await self.hub_users.aclose()
            await self.broker.aclose()

    def start(self) -> None:
        try:
            asyncio.run(self.serve())
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(stream=sys.stderr, format="[%(levelname)s %(name)s] %(message)s")
    app = ConnAuthHub.instance()
    app.initialize(argv)
    app.start()
