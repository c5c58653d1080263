"""HTTP handlers: the broker API under ``connauth/api/`` and the OAuth callback.

Browser requests are authenticated and authorized by Jupyter's own machinery;
kernels present the per-server secret in ``X-ConnAuth-Token``. Every method carries
an explicit decorator: :func:`connauth_authorized` or ``allow_unauthenticated``.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..broker.broker import Broker
from ..broker.flows import FlowStart
from ..broker.http import JSONAPIMixin
from ..broker.pages import CALLBACK_HEADERS, render_callback
from ..broker.warehouse import WarehouseCalls
from ..core.flavours import scope_templates
from ..core.tokens import Flow

log = logging.getLogger(__name__)

KERNEL_TOKEN_HEADER = "X-ConnAuth-Token"  # noqa: S105 - a header name
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def connauth_authorized(method: F) -> F:
    """Kernel secret, or Jupyter's ``@authorized`` on the ``connauth`` resource."""
    jupyter_checked = authorized(method)

    @functools.wraps(method)
    async def wrapper(self: BrokerAPIHandler, *args: Any, **kwargs: Any) -> Any:
        if self.kernel_authenticated:
            return await method(self, *args, **kwargs)
        return await jupyter_checked(self, *args, **kwargs)

    return cast(F, wrapper)


class ConnAuthMixin(ExtensionHandlerMixin):
    @property
    def broker(self) -> Broker:
        return cast(Broker, self.settings["connauth_broker"])

    @property
    def warehouse(self) -> WarehouseCalls:
        return cast(WarehouseCalls, self.settings["connauth_warehouse"])

    @property
    def owner(self) -> str:
        return cast(str, self.settings["connauth_owner"])


class BrokerAPIHandler(ConnAuthMixin, JSONAPIMixin, APIHandler):
    auth_resource = "connauth"
    kernel_authenticated = False

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

    @property
    def connauth_user(self) -> str:
        """Whose tokens this request reaches: a single-user server has one owner."""
        return self.owner


class InfoHandler(BrokerAPIHandler):
    @connauth_authorized
    async def get(self) -> None:
        b = self.broker
        self.write_json(
            {
                "version": self.settings["connauth_version"],
                "user": self.connauth_user,
                "flavour": b.flavour,
                "redirect_uri": b.redirect_uri,
                "discovery_url": b.config.discovery_url,
                "client_id": b.config.client_id,
                "config_error": b.config_error.to_json() if b.config_error else None,
                "allow_api_connections": b.config.allow_api_connections,
                "scope_templates": scope_templates(b.flavour),
            }
        )


class ConnectionsHandler(BrokerAPIHandler):
    @connauth_authorized
    async def get(self) -> None:
        self.write_json({"connections": self.broker.statuses(self.connauth_user)})

    @connauth_authorized
    async def post(self) -> None:
        body = self.body_json()
        name = body.get("name")
        if not isinstance(name, str):
            raise web.HTTPError(400, "the connection needs a 'name'")
        self.broker.create_connection(name, body)
        self.write_json(self.broker.status(self.connauth_user, name), status=201)


class ConnectionHandler(BrokerAPIHandler):
    @connauth_authorized
    async def get(self, name: str) -> None:
        self.broker.connection(name)
        self.write_json(self.broker.status(self.connauth_user, name))

    @connauth_authorized
    async def put(self, name: str) -> None:
        _spec, dropped = self.broker.update_connection(name, self.body_json())
        self.warehouse.forget_connection(name)
        out = self.broker.status(self.connauth_user, name)
        out["tokens_invalidated"] = dropped
        self.write_json(out)

    @connauth_authorized
    async def delete(self, name: str) -> None:
        self.broker.delete_connection(name)
        self.warehouse.forget_connection(name)
        self.set_status(204)
        self.finish()


class TokenHandler(BrokerAPIHandler):
    @connauth_authorized
    async def post(self, name: str) -> None:
        result = await self.broker.token(self.connauth_user, name)
        self.write_json(result.to_json())


class AuthorizeHandler(BrokerAPIHandler):
    @connauth_authorized
    async def post(self, name: str) -> None:
        started = await self.broker.authorize(self.connauth_user, name)
        self.write_json(started.to_json())


class RevokeHandler(BrokerAPIHandler):
    @connauth_authorized
    async def post(self, name: str) -> None:
        result = await self.broker.revoke(self.connauth_user, name)
        self.warehouse.forget(self.connauth_user, name)  # no more queries on the old session
        self.write_json(result)


class PrivateKeyHandler(BrokerAPIHandler):
    @connauth_authorized
    async def put(self, name: str) -> None:
        pem = self.request.body
        if b"PRIVATE KEY-----" not in pem or len(pem) > 64 * 1024:
            raise web.HTTPError(400, "expected a PEM private key")
        self.broker.store_private_key(name, pem)
        self.write_json({"connection": name, "private_key_configured": True})


class TestHandler(BrokerAPIHandler):
    """A trivial query through the broker (the sidebar's Test button)."""

    @connauth_authorized
    async def post(self, name: str) -> None:
        result = await self.warehouse.test(self.connauth_user, name)
        self.write_json(result.to_json() if isinstance(result, FlowStart) else result)


class BrowseHandler(BrokerAPIHandler):
    """The browse tree: ?path= (empty) → catalogs, a → schemas, a/b → tables, a/b/c → columns."""

    @connauth_authorized
    async def get(self, name: str) -> None:
        raw = self.get_query_argument("path", "")
        path = [p for p in raw.split("/") if p] if raw else []
        result = await self.warehouse.browse(self.connauth_user, name, path)
        if isinstance(result, FlowStart):
            self.write_json(result.to_json())
        else:
            self.write_json({"status": "ok", "connection": name, "path": path, "items": result})


class DoctorHandler(BrokerAPIHandler):
    @connauth_authorized
    async def get(self, name: str) -> None:
        from ..broker.doctor import diagnose

        checks = await diagnose(self.broker, self.connauth_user, name)
        self.write_json({"connection": name, "checks": checks})


class FlowHandler(BrokerAPIHandler):
    @connauth_authorized
    async def get(self, flow_id: str) -> None:
        flow: Flow = self.broker.flow_status(self.connauth_user, flow_id)
        self.write_json(flow.public_dict())


class CallbackHandler(ConnAuthMixin, JupyterHandler):
    """``{base_url}oauth/connector/callback``: where the IdP sends the browser back.

    Open to unauthenticated requests (the state proves the flow); a browser that is
    signed in to Jupyter as someone else than the flow's user is refused.
    """

    @allow_unauthenticated
    async def get(self) -> None:
        caller = self.owner if self.current_user else None
        status, page = await render_callback(self.broker, self.request.query_arguments, caller)
        if status != 200:
            log.info("jupyter-connauth: callback refused (HTTP %s)", status)
        self.set_status(status)
        for header, value in CALLBACK_HEADERS.items():
            self.set_header(header, value)
        self.finish(page)


_NAME = r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]{0,63})"
API = "connauth/api"

HANDLERS: list[tuple[str, type[JupyterHandler]]] = [
    (rf"/{API}/info", InfoHandler),
    (rf"/{API}/connections", ConnectionsHandler),
    (rf"/{API}/connections/{_NAME}", ConnectionHandler),
    (rf"/{API}/connections/{_NAME}/token", TokenHandler),
    (rf"/{API}/connections/{_NAME}/authorize", AuthorizeHandler),
    (rf"/{API}/connections/{_NAME}/revoke", RevokeHandler),
    (rf"/{API}/connections/{_NAME}/private_key", PrivateKeyHandler),
    (rf"/{API}/connections/{_NAME}/doctor", DoctorHandler),
    (rf"/{API}/connections/{_NAME}/test", TestHandler),
    (rf"/{API}/connections/{_NAME}/browse", BrowseHandler),
    (rf"/{API}/flows/(?P<flow_id>[A-Za-z0-9_\-]{{1,64}})", FlowHandler),
    (r"/oauth/connector/callback", CallbackHandler),
]
