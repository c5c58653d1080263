"""The Jupyter server extension: hosts the broker for the server's owner."""

from __future__ import annotations

import getpass
import logging
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Unicode, default

from .._version import __version__
from ..broker.broker import Broker
from ..broker.config import ConnAuth
from ..broker.environ import withhold_from_kernels
from ..broker.store import open_store
from ..broker.warehouse import WarehouseCalls
from ..core.crypto import CryptKeeper
from ..core.errors import ConfigError
from .forward import FORWARD_HANDLERS, SERVICE_URL_ENV, HubForwarder, hub_forwarder
from .handlers import HANDLERS

CALLBACK_PATH = "oauth/connector/callback"
API_PATH = "connauth/api/"


class ConnAuthApp(ExtensionApp):
    """Per-user OAuth for data connectors (server side)."""

    classes = [ConnAuth]
    load_other_extensions = True
    #: The extension point's name; the default config file is jupyter_connauth_config.py
    #: (``jupyter_{name}_config``), settings stay ``c.ConnAuthApp.*``.
    name, description = "connauth", __doc__ or ""

    owner = Unicode(
        help="""Whose tokens this server holds: a single-user server acts for its owner.
        Default: $JUPYTERHUB_USER, else the operating-system user.""",
    ).tag(config=True)

    kernel_secret = Unicode(
        help="""The secret kernels present to the broker API (exported to them as
        JUPYTER_CONNAUTH_TOKEN). Default: random per server start. Set it only for
        automation that runs kernels outside this server (e.g. a headless check).""",
    ).tag(config=True)

    @default("owner")
    def _default_owner(self) -> str:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    hub_service_url = Unicode(
        help="""URL of the JupyterHub connauth service (e.g.
        http://127.0.0.1:10101/services/connauth/). When set on a JupyterHub user server,
        the broker API is forwarded there and this server holds no secrets.
        Default: $JUPYTER_CONNAUTH_HUB_SERVICE_URL.""",
    ).tag(config=True)

    @default("hub_service_url")
    def _default_hub_service_url(self) -> str:
        return os.environ.get(SERVICE_URL_ENV, "")

    forwarder: HubForwarder | None = None

    def initialize_settings(self) -> None:
        # Our modules' loggers speak through the server's log, as tornado's do.
        pkg_log = logging.getLogger("jupyter_connauth")
        pkg_log.parent = self.log
        pkg_log.propagate = True
        self.connauth = ConnAuth(parent=self)
        self.kernel_token = self.kernel_secret or secrets.token_urlsafe(32)
        self.forwarder = hub_forwarder(self.hub_service_url)
        if self.forwarder is not None:  # hub mode: the hub service is the broker
            self.settings.update(
                connauth_forwarder=self.forwarder,
                connauth_owner=self.owner,
                connauth_kernel_token=self.kernel_token,
            )
            self._export_kernel_env()
            self.log.info(
                "jupyter-connauth: forwarding to the hub service %s", self.hub_service_url
            )
            return
        try:
            crypt = CryptKeeper.from_env_or_file(Path(self.connauth.key_file))
        except ConfigError as e:
            self.log.error("jupyter-connauth: %s", e)
            raise SystemExit(f"jupyter-connauth: {e}") from None
        store = open_store(self.connauth.store_path, crypt)
        self.broker = Broker(self.connauth, store, redirect_uri=self.redirect_uri())
        if self.broker.config_error:
            self.log.warning("jupyter-connauth: %s", self.broker.config_error)
        for name, err in self.broker.registry.errors.items():
            self.log.error("jupyter-connauth: connection %s is unusable: %s", name, err)
        self.warehouse = WarehouseCalls(self.broker)
        self.settings.update(
            connauth_broker=self.broker,
            connauth_warehouse=self.warehouse,
            connauth_owner=self.owner,
            connauth_kernel_token=self.kernel_token,
        )
        self._export_kernel_env()
        self.log.info(
            "jupyter-connauth %s: %d connection(s), redirect URI %s",
            __version__,
            len(self.broker.registry.names()),
            self.broker.redirect_uri,
        )

    def initialize_handlers(self) -> None:
        self.handlers.extend(FORWARD_HANDLERS if self.forwarder else HANDLERS)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # The port is final only now (port_retries): refresh what depends on it.
        self._export_kernel_env()
        if self.forwarder is None:
            self.broker.set_redirect_uri(self.redirect_uri())

    async def stop_extension(self) -> None:
        if self.forwarder is not None:
            await self.forwarder.aclose()
            return
        self.warehouse.close()
        await self.broker.aclose()

    # -- URLs -------------------------------------------------------------------
    def redirect_uri(self) -> str:
        """``c.ConnAuth.public_url`` first, else Jupyter's own connectable URL (a
        wildcard ``ip`` replaced by the host name, base_url included)."""
        app = self.serverapp
        assert app is not None
        return url_path_join(self.connauth.public_url or app.connection_url, CALLBACK_PATH)

    def kernel_api_url(self) -> str:
        """The API as kernels on this machine reach it: Jupyter's URL on loopback."""
        app = self.serverapp
        assert app is not None
        loopback = "[::1]" if ":" in (app.ip or "") else "127.0.0.1"
        parts = urlsplit(app.connection_url)._replace(netloc=f"{loopback}:{app.port}")
        return url_path_join(urlunsplit(parts), API_PATH)

    def _export_kernel_env(self) -> None:
        """Kernels this server starts inherit these and reach the broker with them."""
        withhold_from_kernels(self.connauth)  # and none of the broker's secrets
        os.environ["JUPYTER_CONNAUTH_URL"] = self.kernel_api_url()
        os.environ["JUPYTER_CONNAUTH_TOKEN"] = self.kernel_token


main = launch_new_instance = ConnAuthApp.launch_instance
