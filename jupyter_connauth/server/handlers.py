"""The single-user server's identity strategy: every request acts for the server's owner.

Browser requests are authenticated and authorized by Jupyter's own machinery
(``@authorized`` on the ``connauth`` resource); kernels present the per-server secret
in ``X-ConnAuth-Token``. The OAuth callback needs a browser signed in to Jupyter: one
without a session goes through Jupyter's login page and comes back (``?next=`` keeps
the callback's query, state included). The routes are the shared ones of
:mod:`jupyter_connauth.web.routes`.
"""

from __future__ import annotations

import hmac
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..broker.principal import Principal
from ..web.routes import routes

KERNEL_TOKEN_HEADER = "X-ConnAuth-Token"  # noqa: S105 - a header name
API = "connauth/api"
CALLBACK = "/oauth/connector/callback"


class OwnerIdentity(ExtensionHandlerMixin, JupyterHandler):
    """The identity strategy of a single-user server (see jupyter_connauth.web.identity)."""

    auth_resource = "connauth"
    host_kind = "jupyter_server"
    kernel_authenticated = False

    @property
    def owner(self) -> str:
        return cast(str, self.settings["connauth_owner"])

    def _owner(self) -> Principal:
        # The owner administers their own server's connections.
        return Principal(name=self.owner, admin=True)

    @authorized
    async def _jupyter_authorized(self) -> None:
        """Jupyter's own check: signed in, and allowed to use ``connauth``."""

    async def authenticate(self) -> Principal:
        if not self.kernel_authenticated:
            await self._jupyter_authorized()
        return self._owner()

    async def browser_user(self) -> str | None:
        if not self.current_user:
            return None
        await self._jupyter_authorized()  # a session that may not use connauth: 403
        return self.owner

    def login_redirect(self) -> str | None:
        """Jupyter's login page with ``next`` = this URL, as ``@web.authenticated`` does
        (jupyter_server's login redirects only to paths under its base_url)."""
        if not self.login_available:
            return None
        url = self.get_login_url()
        if "?" not in url:
            here = self.request.full_url() if urlsplit(url).scheme else self.request.uri
            url += "?" + urlencode({"next": here})
        return url

    async def usernames(self) -> list[str]:
        return [self.owner]

    def callback_requires_session(self) -> bool:
        return True  # always: the owner's consent, in the owner's browser

    async def refresh_connections(self) -> None:
        return None  # this process is the only writer of its connections


class ServerAPIBase(OwnerIdentity, APIHandler):
    """The API's base: the kernel secret, or Jupyter's authentication and XSRF."""

    async def prepare(self) -> None:  # type: ignore[override]
        presented = self.request.headers.get(KERNEL_TOKEN_HEADER)
        if presented is not None:
            expected = cast(str, self.settings["connauth_kernel_token"])
            if not hmac.compare_digest(presented.encode(), expected.encode()):
                raise web.HTTPError(403, "invalid kernel token")
            self.kernel_authenticated = True
            self.current_user = self._jupyter_current_user = None
            return
        await super().prepare()

    def check_xsrf_cookie(self) -> None:
        if self.kernel_authenticated:
            return
        super().check_xsrf_cookie()


class ServerCallbackBase(OwnerIdentity):
    """The callback's base: an HTML page for browsers (never the kernel secret)."""


HANDLERS: list[tuple[str, type[Any]]] = routes(
    ServerAPIBase, ServerCallbackBase, api=f"/{API}", callback=CALLBACK
)
