"""The hub service's HTTP API: the broker API of the server extension, for every hub user.

Every request is authenticated by JupyterHub (the service's OAuth cookie, or a token:
a user's server forwards its kernels' requests with its ``JUPYTERHUB_API_TOKEN``) and
must hold ``access:services!service=<name>``. The user is the token's owner: no route
takes a user name except the admin routes, which require a hub admin.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from tornado import web

from ..broker.flows import FlowStart
from ..broker.http import JSONAPIMixin
from ..broker.pages import CALLBACK_HEADERS, render_callback
from ..broker.warehouse import WarehouseCalls
from ..core.errors import AccessDenied
from .broker import HubBroker
from .identity import HubIdentity, HubUsers

log = logging.getLogger(__name__)


class ServiceHandler(HubOAuthenticated, JSONAPIMixin):  # type: ignore[misc]
    """Base: hub authentication, JSON answers, errors as ``{"error", "message", "fix"}``."""

    @property
    def broker(self) -> HubBroker:
        return cast(HubBroker, self.settings["connauth_broker"])

    @property
    def hub_users(self) -> HubUsers:
        return cast(HubUsers, self.settings["connauth_hub_users"])

    @property
    def warehouse(self) -> WarehouseCalls:
        return cast(WarehouseCalls, self.settings["connauth_warehouse"])

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
        # Connections edited through another replica: pick them up (at most once a
        # reload interval: it is a database query, as costly as the token read itself).
        reload = self.settings.get("connauth_reload")
        now = time.monotonic()
        if reload is None or now - reload["at"] >= reload["interval"]:
            self.broker.registry.reload()
            if reload is not None:
                reload["at"] = now

    async def identity(self) -> HubIdentity:
        model = cast(dict[str, Any], self.current_user)
        return await self.hub_users.identity(str(model["name"]), leeway=self._leeway)

    @property
    def _leeway(self) -> float:
        return float(self.broker.config.refresh_leeway)

    async def admin(self) -> HubIdentity:
        ident = await self.identity()
        if not ident.admin:
            raise AccessDenied(
                "Only JupyterHub admins may do this.", "ask a hub admin", code="access_denied"
            )
        return ident


class InfoHandler(ServiceHandler):
    async def get(self) -> None:
        ident = await self.identity()
        b = self.broker
        self.write_json(
            {
                "version": self.settings["connauth_version"],
                "user": ident.name,
                "admin": ident.admin,
                "host": "jupyterhub",
                "flavour": b.flavour,
                "redirect_uri": b.redirect_uri,
                "discovery_url": b.config.discovery_url,
                "client_id": b.config.client_id,
                "config_error": b.config_error.to_json() if b.config_error else None,
                "allow_api_connections": b.config.allow_api_connections,
                "login_passthrough": ident.login_token is not None,
            }
        )


class ConnectionsHandler(ServiceHandler):
    async def get(self) -> None:
        ident = await self.identity()
        b = self.broker
        self.write_json({"connections": [b.status_for(ident, n) for n in b.registry.names()]})

    async def post(self) -> None:
        ident = await self.admin()
        body = self.body_json()
        name = body.get("name")
        if not isinstance(name, str):
            raise web.HTTPError(400, "the connection needs a 'name'")
        self.broker.create_connection(name, body)
        self.write_json(self.broker.status_for(ident, name), status=201)


class ConnectionHandler(ServiceHandler):
    async def get(self, name: str) -> None:
        ident = await self.identity()
        self.broker.connection(name)
        self.write_json(self.broker.status_for(ident, name))

    async def put(self, name: str) -> None:
        ident = await self.admin()
        _spec, dropped = self.broker.update_connection(name, self.body_json())
        self.warehouse.forget_connection(name)
        out = self.broker.status_for(ident, name)
        out["tokens_invalidated"] = dropped
        self.write_json(out)

    async def delete(self, name: str) -> None:
        await self.admin()
        self.broker.delete_connection(name)
        self.warehouse.forget_connection(name)
        self.set_status(204)
        self.finish()


class TokenHandler(ServiceHandler):
    async def post(self, name: str) -> None:
        result = await self.broker.token_for(await self.identity(), name)
        self.write_json(result.to_json())


class AuthorizeHandler(ServiceHandler):
    async def post(self, name: str) -> None:
        ident = await self.identity()
        started = await self.broker.authorize(ident.name, name, expected_email=ident.email)
        self.write_json(started.to_json())


class RevokeHandler(ServiceHandler):
    async def post(self, name: str) -> None:
        ident = await self.identity()
        result = await self.broker.revoke(ident.name, name)
        self.warehouse.forget(ident.name, name)
        self.write_json(result)


class ConnectionTestHandler(ServiceHandler):
    """``POST connections/NAME/test``: a trivial query in the service (the sidebar's Test)."""

    async def post(self, name: str) -> None:
        ident = await self.identity()
        result = await self.warehouse.test(ident.name, name)
        self.write_json(result.to_json() if isinstance(result, FlowStart) else result)


class BrowseHandler(ServiceHandler):
    """``GET connections/NAME/browse?path=``: '' → catalogs, a → schemas, a/b → tables,
    a/b/c → columns, read with the user's own credential."""

    async def get(self, name: str) -> None:
        ident = await self.identity()
        raw = self.get_query_argument("path", "")
        path = [p for p in raw.split("/") if p] if raw else []
        result = await self.warehouse.browse(ident.name, name, path)
        if isinstance(result, FlowStart):
            self.write_json(result.to_json())
        else:
            self.write_json({"status": "ok", "connection": name, "path": path, "items": result})


class PrivateKeyHandler(ServiceHandler):
    async def put(self, name: str) -> None:
        await self.admin()
        pem = self.request.body
        if b"PRIVATE KEY-----" not in pem or len(pem) > 64 * 1024:
            raise web.HTTPError(400, "expected a PEM private key")
        self.broker.store_private_key(name, pem)
        self.write_json({"connection": name, "private_key_configured": True})


class DoctorHandler(ServiceHandler):
    async def get(self, name: str) -> None:
        from ..broker.doctor import diagnose

        ident = await self.identity()
        checks = await diagnose(self.broker, ident.name, name)
        self.write_json({"connection": name, "checks": checks})


class FlowHandler(ServiceHandler):
    async def get(self, flow_id: str) -> None:
        ident = await self.identity()
        self.write_json(self.broker.flow_status(ident.name, flow_id).public_dict())


class CallbackHandler(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """The one callback for every user: the state says whose flow it is.

    A browser not signed in to the service is sent through the hub's login first
    (``c.ConnAuthHub.callback_requires_login``), then the flow must belong to that user.
    """

    async def get(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        caller = str(model["name"]) if model and model.get("kind", "user") == "user" else None
        if caller is None and self.settings.get("connauth_callback_login", True):
            # Bind the consent to this browser's hub login: sign in to the service first;
            # the hub's OAuth comes back to this very URL (query included, state unused).
            self.redirect(self.get_login_url())
            return
        broker = cast(HubBroker, self.settings["connauth_broker"])
        broker.registry.reload()
        status, page = await render_callback(broker, self.request.query_arguments, caller)
        if status != 200:
            log.info("jupyter-connauth: callback refused (HTTP %s)", status)
        self.set_status(status)
        for header, value in CALLBACK_HEADERS.items():
            self.set_header(header, value)
        self.finish(page)

    def check_xsrf_cookie(self) -> None:
        return  # a GET from the IdP's redirect


_NAME = r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]{0,63})"


def handlers(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    from .admin import ADMIN_HANDLERS

    api = prefix.rstrip("/") + "/api"
    routes: list[tuple[str, type[web.RequestHandler]]] = [
        (rf"{api}/info", InfoHandler),
        (rf"{api}/connections", ConnectionsHandler),
        (rf"{api}/connections/{_NAME}", ConnectionHandler),
        (rf"{api}/connections/{_NAME}/token", TokenHandler),
        (rf"{api}/connections/{_NAME}/authorize", AuthorizeHandler),
        (rf"{api}/connections/{_NAME}/revoke", RevokeHandler),
        (rf"{api}/connections/{_NAME}/test", ConnectionTestHandler),
        (rf"{api}/connections/{_NAME}/browse", BrowseHandler),
        (rf"{api}/connections/{_NAME}/private_key", PrivateKeyHandler),
        (rf"{api}/connections/{_NAME}/doctor", DoctorHandler),
        (rf"{api}/flows/(?P<flow_id>[A-Za-z0-9_\-]{{1,64}})", FlowHandler),
        (prefix.rstrip("/") + "/oauth/connector/callback", CallbackHandler),
        (prefix.rstrip("/") + "/oauth_callback", HubOAuthCallbackHandler),
    ]
    routes += [(f"{api}/admin/{path}", h) for path, h in ADMIN_HANDLERS]
    return routes
