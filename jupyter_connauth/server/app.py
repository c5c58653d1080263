"""The Jupyter server extension: hosts the broker for the server's owner."""

from __future__ import annotations

import getpass
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Unicode, default

from .._version import __version__
from ..broker.broker import Broker
from ..broker.config import ConnAuth
from ..broker.store import SQLiteTokenStore
from ..broker.warehouse import WarehouseCalls
from ..core.crypto import CryptKeeper
from ..core.errors import ConfigError
from .handlers import HANDLERS

CALLBACK_PATH = "oauth/connector/callback"
API_PATH = "connauth/api/"
WILDCARD_IPS = ("", "0.0.0.0", "::")  # noqa: S104 - names, not a bind


class ConnAuthApp(ExtensionApp):
    """Per-user OAuth for data connectors (server side)."""

    name = "jupyter_connauth"
    description = __doc__ or ""
    load_other_extensions = True
    classes = [ConnAuth]

    owner = Unicode(
        help="""Whose tokens this server holds: a single-user server acts for its owner.
        Default: $JUPYTERHUB_USER, else the operating-system user.""",
    ).tag(config=True)

    @default("owner")
    def _default_owner(self) -> str:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    def initialize_settings(self) -> None:
        self.connauth = ConnAuth(parent=self)
        try:
            crypt = CryptKeeper.from_env_or_file(Path(self.connauth.key_file))
        except ConfigError as e:
            self.log.error("jupyter-connauth: %s", e)
            raise SystemExit(f"jupyter-connauth: {e}") from None
        store = SQLiteTokenStore(self.connauth.store_path, crypt)
        self.broker = Broker(self.connauth, store, redirect_uri=self.redirect_uri())
        if self.broker.config_error:
            self.log.warning("jupyter-connauth: %s", self.broker.config_error)
        for name, err in self.broker.registry.errors.items():
            self.log.error("jupyter-connauth: connection %s is unusable: %s", name, err)
        self.kernel_token = secrets.token_urlsafe(32)
        self.warehouse = WarehouseCalls(self.broker)
        self.settings.update(
            connauth_broker=self.broker,
            connauth_warehouse=self.warehouse,
            connauth_owner=self.owner,
            connauth_kernel_token=self.kernel_token,
            connauth_version=__version__,
        )
        self._export_kernel_env()
        self.log.info(
            "jupyter-connauth %s: %d connection(s), redirect URI %s",
            __version__,
            len(self.broker.registry.names()),
            self.broker.redirect_uri,
        )

    def initialize_handlers(self) -> None:
        self.handlers.extend(HANDLERS)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # The port is final only now (port_retries): refresh what depends on it.
        self.broker.set_redirect_uri(self.redirect_uri())
        self._export_kernel_env()

    async def stop_extension(self) -> None:
        self.warehouse.close()
        await self.broker.aclose()

    # -- URLs -------------------------------------------------------------------
    def _server_base(self, *, local: bool) -> str:
        app = self.serverapp
        assert app is not None
        proto = "https" if app.certfile else "http"
        if local:
            host = "[::1]" if ":" in (app.ip or "") else "127.0.0.1"
        else:
            host = app.ip if app.ip not in WILDCARD_IPS else socket.gethostname()
            if ":" in host:
                host = f"[{host}]"
        return f"{proto}://{host}:{app.port}{app.base_url}"

    def redirect_uri(self) -> str:
        base = self.connauth.public_url or self._server_base(local=False)
        return url_path_join(base, CALLBACK_PATH)

    def kernel_api_url(self) -> str:
        return url_path_join(self._server_base(local=True), API_PATH)

    def _export_kernel_env(self) -> None:
        """Kernels this server starts inherit these and reach the broker with them."""
        os.environ["JUPYTER_CONNAUTH_URL"] = self.kernel_api_url()
        os.environ["JUPYTER_CONNAUTH_TOKEN"] = self.kernel_token


main = launch_new_instance = ConnAuthApp.launch_instance
