"""The broker API and the OAuth callback, written once for both hosts.

Each class here holds what a route does; a host makes the served class by adding its
base (:func:`.routes.routes`), which supplies the :class:`.identity.IdentityStrategy`
and the host's authentication, XSRF and kernel-secret checks. So every route has the
same checks, error JSON (``{"error", "message", "fix"}``, :mod:`.http`) and answers
on the single-user server and on the JupyterHub service.

Every method carries an explicit decorator: :func:`authenticated`,
:func:`admin_only`, or :func:`open_to_browsers` for the callback, which then binds
the consent to the browser's session itself.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tornado import web

from .._version import __version__
from ..broker.broker import Broker
from ..broker.flows import FlowStart
from ..broker.principal import Principal
from ..broker.rejection import Rejection
from ..broker.warehouse import WarehouseCalls
from ..core.errors import AccessDenied
from ..core.flavours import Flavour, scope_templates
from .http import JSONAPIMixin
from .pages import CALLBACK_HEADERS, callback_page, render_callback

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class BrokerAccess(web.RequestHandler):
    """The broker, and the host's hooks: its base class implements them (it comes after
    the shared class in the served class's MRO, so nothing here may define them)."""

    @property
    def broker(self) -> Broker:
        return cast(Broker, self.settings["connauth_broker"])

    @property
    def warehouse(self) -> WarehouseCalls:
        return cast(WarehouseCalls, self.settings["connauth_warehouse"])

    if TYPE_CHECKING:  # the identity strategy (.identity.IdentityStrategy) of the host
        host_kind: str

        async def authenticate(self) -> Principal: ...
        async def browser_user(self) -> str | None: ...
        def login_redirect(self) -> str | None: ...
        async def usernames(self) -> list[str]: ...

        def callback_requires_session(self) -> bool:
            """False only where the admin turned the binding off (hubs without logins)."""

        async def refresh_connections(self) -> None:
            """Pick up connections another process edited (the hub's replicas)."""


def authenticated(method: F) -> F:
    """The host authenticates the request; the method reads ``self.principal``."""

    @functools.wraps(method)
    async def wrapper(self: BrokerHandler, *args: Any, **kwargs: Any) -> Any:
        self.principal = await self.authenticate()
        return await method(self, *args, **kwargs)

    return cast(F, wrapper)


def admin_only(method: F) -> F:
    """:func:`authenticated`, and the principal must be an admin (the single-user
    server's owner; a JupyterHub admin on the hub)."""

    @functools.wraps(method)
    async def wrapper(self: BrokerHandler, *args: Any, **kwargs: Any) -> Any:
        self.principal = await self.authenticate()
        if not self.principal.admin:
            raise AccessDenied(
                "Only JupyterHub admins may do this.", "ask a hub admin", code="access_denied"
            )
        return await method(self, *args, **kwargs)

    return cast(F, wrapper)


def open_to_browsers(method: F) -> F:
    """No authentication before the method (jupyter_server's ``@allow_unauthenticated``
    marker): the callback checks the state and the browser's session itself."""
    setattr(method, "__allow_unauthenticated", True)
    return method


class BrokerHandler(BrokerAccess, JSONAPIMixin):
    principal: Principal


class InfoHandler(BrokerHandler):
    @authenticated
    async def get(self) -> None:
        who, b = self.principal, self.broker
        self.write_json(
            {
                "version": __version__,
                "user": who.name,
                "admin": who.admin,
                "host": self.host_kind,
                "flavour": b.flavour,
                "redirect_uri": b.redirect_uri,
                "discovery_url": b.config.discovery_url,
                "client_id": b.config.client_id,
                "config_error": b.config_error.to_json() if b.config_error else None,
                "allow_api_connections": b.config.allow_api_connections,
                "scope_templates": scope_templates(b.flavour),
                # c.ConnAuth.providers: what a connection's ``provider`` may name, each
                # with its flavour's scope templates (the edit form's templates)
                "providers": [
                    {
                        "name": name,
                        "flavour": lane.provider.flavour.name,
                        "scope_templates": scope_templates(
                            cast(Flavour, lane.provider.flavour.name)
                        ),
                    }
                    for name, lane in b.lanes.items()
                    if name
                ],
                "login_passthrough": who.login_token is not None,
            }
        )


class ConnectionsHandler(BrokerHandler):
    @authenticated
    async def get(self) -> None:
        b = self.broker
        statuses = [b.status_for(self.principal, n) for n in b.registry.names()]
        self.write_json({"connections": statuses})

    @admin_only
    async def post(self) -> None:
        body = self.body_json()
        name = body.get("name")
        if not isinstance(name, str):
            raise web.HTTPError(400, "the connection needs a 'name'")
        self.broker.create_connection(name, body)
        self.write_json(self.broker.status_for(self.principal, name), status=201)


class ConnectionHandler(BrokerHandler):
    @authenticated
    async def get(self, name: str) -> None:
        self.broker.connection(name)
        self.write_json(self.broker.status_for(self.principal, name))

    @admin_only
    async def put(self, name: str) -> None:
        _spec, dropped = self.broker.update_connection(name, self.body_json())
        self.warehouse.forget_connection(name)
        out = self.broker.status_for(self.principal, name)
        out["tokens_invalidated"] = dropped
        self.write_json(out)

    @admin_only
    async def delete(self, name: str) -> None:
        self.broker.delete_connection(name)
        self.warehouse.forget_connection(name)
        self.set_status(204)
        self.finish()


class TokenHandler(BrokerHandler):
    @authenticated
    async def post(self, name: str) -> None:
        result = await self.broker.token_for(self.principal, name)
        self.write_json(result.to_json())


class RejectedHandler(BrokerHandler):
    """``POST connections/NAME/rejected``: the warehouse rejected the token of the grant
    the caller was given (see broker/rejection.py); the answer is a token request's."""

    @authenticated
    async def post(self, name: str) -> None:
        try:
            seen = Rejection.from_json(self.body_json())
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from None
        result = await self.broker.rejected_for(self.principal, name, seen)
        self.write_json(result.to_json())


class AuthorizeHandler(BrokerHandler):
    """``POST connections/NAME/authorize`` ``{"switch_account": true}`` to sign in with
    another IdP account than the stored grant's (else such a consent is refused);
    ``{"method": "device"}`` for a device code (RFC 8628) instead of a browser link."""

    @authenticated
    async def post(self, name: str) -> None:
        body = self.body_json()
        switch = body.get("switch_account", False)
        if not isinstance(switch, bool):
            raise web.HTTPError(400, "'switch_account' must be true or false")
        method = body.get("method", "browser")
        if method not in ("browser", "device"):
            raise web.HTTPError(400, '\'method\' must be "browser" or "device"')
        started = await self.broker.authorize_for(
            self.principal, name, switch_account=switch, method=method
        )
        self.write_json(started.to_json())


class RevokeHandler(BrokerHandler):
    @authenticated
    async def post(self, name: str) -> None:
        user = self.principal.name
        result = await self.broker.revoke(user, name)
        self.warehouse.forget(user, name)  # no more queries on the old session
        self.write_json(result)


class PrivateKeyHandler(BrokerHandler):
    @admin_only
    async def put(self, name: str) -> None:
        pem = self.request.body
        if b"PRIVATE KEY-----" not in pem or len(pem) > 64 * 1024:
            raise web.HTTPError(400, "expected a PEM private key")
        self.broker.store_private_key(name, pem)
        self.write_json({"connection": name, "private_key_configured": True})


class TestHandler(BrokerHandler):
    """``POST connections/NAME/test``: a trivial query with the user's own credential."""

    @authenticated
    async def post(self, name: str) -> None:
        result = await self.warehouse.test(self.principal.name, name)
        self.write_json(result.to_json() if isinstance(result, FlowStart) else result)


class BrowseHandler(BrokerHandler):
    """``GET connections/NAME/browse?path=``: '' → catalogs, a → schemas, a/b → tables,
    a/b/c → columns, read with the user's own credential."""

    @authenticated
    async def get(self, name: str) -> None:
        raw = self.get_query_argument("path", "")
        path = [p for p in raw.split("/") if p] if raw else []
        result = await self.warehouse.browse(self.principal.name, name, path)
        if isinstance(result, FlowStart):
            self.write_json(result.to_json())
        else:
            self.write_json({"status": "ok", "connection": name, "path": path, "items": result})


class DoctorHandler(BrokerHandler):
    @authenticated
    async def get(self, name: str) -> None:
        from ..broker.doctor import diagnose

        checks = await diagnose(self.broker, self.principal.name, name)
        self.write_json({"connection": name, "checks": checks})


class FlowHandler(BrokerHandler):
    @authenticated
    async def get(self, flow_id: str) -> None:
        self.write_json(self.broker.flow_status(self.principal.name, flow_id).public_dict())

    @authenticated
    async def delete(self, flow_id: str) -> None:
        """Cancel a pending consent flow (the balloon's Cancel button)."""
        self.write_json(self.broker.cancel_flow(self.principal.name, flow_id).public_dict())


class CallbackHandler(BrokerAccess):
    """Where the IdP sends the browser back; the state says whose flow it is.

    The consent is bound to the browser: a flow completes only for a browser signed in
    (to Jupyter, or to the hub) as the flow's user. A browser without a session is sent
    through the host's login and back to this very URL, state included; where login
    cannot help it gets a page saying so. Nothing is stored in either case.
    """

    @open_to_browsers
    async def get(self) -> None:
        caller = await self.browser_user()
        if caller is None and self.callback_requires_session():
            login = self.login_redirect()
            if login is not None:
                self.redirect(login)
                return
            self._page(
                403,
                callback_page(
                    ok=False,
                    title="Sign in first",
                    message="This browser is not signed in to Jupyter, so the authorization "
                    "cannot be completed here.",
                    fix="open the authorization link in the browser where you use Jupyter "
                    "and start the authorization again",
                    error="login_required",
                ),
            )
            return
        await self.refresh_connections()
        status, page = await render_callback(self.broker, self.request.query_arguments, caller)
        if status != 200:
            log.info("jupyter-connauth: callback refused (HTTP %s)", status)
        self._page(status, page)

    def _page(self, status: int, page: str) -> None:
        self.set_status(status)
        for header, value in CALLBACK_HEADERS.items():
            self.set_header(header, value)
        self.finish(page)

    def check_xsrf_cookie(self) -> None:
        return  # a GET from the IdP's redirect; the one-shot state is its proof
