"""The JupyterHub service's identity strategy: the hub user of each request.

Every request is authenticated by JupyterHub (the service's OAuth cookie, or a token:
a user's server forwards its kernels' requests with its ``JUPYTERHUB_API_TOKEN``) and
must hold ``access:services!service=<name>``. The user is the token's owner: no route
takes a user name except the admin routes, which require a hub admin. The routes are
the shared ones of :mod:`jupyter_connauth.web.routes`, plus JupyterHub's OAuth
callback for signing in to the service.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from tornado import web

from ..broker.principal import Principal
from ..web.http import JSONAPIMixin
from ..web.routes import routes
from .broker import HubBroker
from .identity import HubUsers


class HubUserIdentity(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """The identity strategy of the hub service (see jupyter_connauth.web.identity)."""

    host_kind = "jupyterhub"

    @property
    def hub_users(self) -> HubUsers:
        return cast(HubUsers, self.settings["connauth_hub_users"])

    async def _hub_user(self) -> str | None:
        model = await self.hub_auth.get_user(self, sync=False)
        if model and model.get("kind", "user") == "user":
            return str(model["name"])
        return None

    async def authenticate(self) -> Principal:
        model = cast(dict[str, Any], self.current_user)  # checked in prepare
        broker = cast(HubBroker, self.settings["connauth_broker"])
        leeway = float(broker.config.refresh_leeway)
        return await self.hub_users.identity(str(model["name"]), leeway=leeway)

    async def browser_user(self) -> str | None:
        return await self._hub_user()

    def login_redirect(self) -> str | None:
        # The hub's OAuth comes back to this very URL (query included, state unused).
        return self.get_login_url()

    async def usernames(self) -> list[str]:
        return await self.hub_users.usernames()

    def callback_requires_session(self) -> bool:
        return bool(self.settings.get("connauth_callback_login", True))

    async def refresh_connections(self) -> None:
        """Connections edited through another replica: a database query, so off the
        event loop, and at most once a reload interval (0: every request)."""
        broker = cast(HubBroker, self.settings["connauth_broker"])
        reload = self.settings.get("connauth_reload")
        now = time.monotonic()
        if reload is not None and now - reload["at"] < reload["interval"]:
            return
        if reload is not None:
            reload["at"] = now
        await asyncio.to_thread(broker.registry.reload)


class HubAPIBase(HubUserIdentity, JSONAPIMixin):
    """The API's base: a hub user, or 403 (JSON)."""

    async def prepare(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        if model:
            try:
                model = self.check_hub_user(model)
            except UserNotAllowed:
                model = None
        self._hub_auth_user_cache = model
        if model is None:
            raise web.HTTPError(403, "sign in to JupyterHub (or present a hub API token)")
        if model.get("kind", "user") != "user":
            raise web.HTTPError(403, "only hub users hold connections, not services")
        await self.refresh_connections()


class HubCallbackBase(HubUserIdentity):
    """The callback's base: one URL for every user; the state says whose flow it is."""

    async def refresh_connections(self) -> None:
        # Rare, and the flow's connection may have been made through another replica
        # a moment ago: always re-read (off the event loop).
        broker = cast(HubBroker, self.settings["connauth_broker"])
        await asyncio.to_thread(broker.registry.reload)


def handlers(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    base = prefix.rstrip("/")
    served = routes(
        HubAPIBase, HubCallbackBase, api=f"{base}/api", callback=f"{base}/oauth/connector/callback"
    )
    served.append((f"{base}/oauth_callback", HubOAuthCallbackHandler))
    return served
