"""Admin-only routes (``api/admin/...``): JupyterHub's admins on the hub service, the
owner on a single-user server.

They show each user's connection status (never a token), revoke one user's or every
user's tokens, and edit a connection's scopes (which makes every user consent again).
"""

from __future__ import annotations

from typing import Any

from tornado import web

from ..core.errors import AccessDenied
from .handlers import BrokerHandler, admin_only


class UsersHandler(BrokerHandler):
    """``GET admin/users``: every user with a stored grant, and their status per connection."""

    @admin_only
    async def get(self) -> None:
        store_users = getattr(self.broker.store, "users", None)
        names = set(store_users()) if callable(store_users) else set()
        if self.get_query_argument("all", "") in ("1", "true"):
            names.update(await self.usernames())
        users = []
        for name in sorted(names):
            statuses = [self._status(name, c) for c in self.broker.registry.names()]
            users.append({"name": name, "connections": statuses})
        self.write_json({"users": users})

    def _status(self, user: str, connection: str) -> dict[str, Any]:
        full = self.broker.status(user, connection)
        keep = ("name", "status", "reason", "authorized_as", "expires_at", "refreshable", "error")
        return {k: full[k] for k in keep if k in full}


class UserRevokeHandler(BrokerHandler):
    """``POST admin/users/USER/revoke`` ``{"connection": NAME}`` (absent: every connection)."""

    @admin_only
    async def post(self, user: str) -> None:
        names = _connections(self, self.body_json())
        results = [await self.broker.revoke(user, n) for n in names]
        for n in names:
            self.warehouse.forget(user, n)
        self.write_json({"user": user, "results": results})


class RevokeAllHandler(BrokerHandler):
    """``POST admin/revoke`` ``{"connection": NAME}``: every user's tokens."""

    @admin_only
    async def post(self) -> None:
        body = self.body_json()
        names = _connections(self, body)
        dropped = 0
        for name in names:
            dropped += self.broker.store.drop_connection_tokens(name, "revoked")
        store_users = getattr(self.broker.store, "users", None)
        for user in store_users() if callable(store_users) else []:
            for name in names:
                self.broker.forget_exchanged(user, name)
        for name in names:
            self.warehouse.forget_connection(name)
        self.write_json({"connections": names, "tokens_revoked": dropped})


class ScopesHandler(BrokerHandler):
    """``PUT admin/connections/NAME/scopes`` ``{"scopes": "a b"}``: every user re-consents."""

    @admin_only
    async def put(self, name: str) -> None:
        scopes = self.body_json().get("scopes")
        if isinstance(scopes, list):
            scopes = " ".join(str(s) for s in scopes)
        if not isinstance(scopes, str) or not scopes.strip():
            raise web.HTTPError(400, "give the new scopes as {'scopes': 'a b c'}")
        spec = self.broker.connection(name)
        if spec.source != "api":
            raise AccessDenied(
                f"Connection {name!r} comes from the service's configuration.",
                f"edit c.ConnAuth.connections[{name!r}]['scopes'] and restart the service; "
                "every user is then asked to consent again",
            )
        raw = dict(self.broker.store.connection_defs().get(name, {}))
        raw["scopes"] = scopes
        spec, dropped = self.broker.update_connection(name, raw)
        self.warehouse.forget_connection(name)
        self.write_json(
            {"connection": name, "scopes": list(spec.scopes), "tokens_invalidated": dropped}
        )


def _connections(handler: BrokerHandler, body: dict[str, Any]) -> list[str]:
    name = body.get("connection")
    if name is None:
        return handler.broker.registry.names()
    if not isinstance(name, str):
        raise web.HTTPError(400, "'connection' must be a connection's name")
    handler.broker.connection(name)
    return [name]


_USER = r"(?P<user>[^/]{1,255})"
_NAME = r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]{0,63})"

ADMIN_HANDLERS: list[tuple[str, type[BrokerHandler]]] = [
    ("users", UsersHandler),
    (f"users/{_USER}/revoke", UserRevokeHandler),
    ("revoke", RevokeAllHandler),
    (f"connections/{_NAME}/scopes", ScopesHandler),
]
