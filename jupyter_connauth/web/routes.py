"""The one routes table of the broker API, served by both hosts.

A host calls :func:`routes` with its two base classes (one for the JSON API, one for
the callback page): each served handler is the shared class of :mod:`.handlers` on
top of the host's base, which implements :class:`.identity.IdentityStrategy`.
docs/openapi.yaml describes these routes (tests/test_openapi.py checks it).
"""

from __future__ import annotations

from typing import Any

from tornado import web

from . import handlers as h
from .admin import ADMIN_HANDLERS

#: A connection name, as in the path ``connections/NAME``.
NAME = r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]{0,63})"
FLOW_ID = r"(?P<flow_id>[A-Za-z0-9_\-]{1,64})"

#: Path under the API prefix → the shared handler.
API_ROUTES: list[tuple[str, type[h.BrokerHandler]]] = [
    ("info", h.InfoHandler),
    ("connections", h.ConnectionsHandler),
    (f"connections/{NAME}", h.ConnectionHandler),
    (f"connections/{NAME}/token", h.TokenHandler),
    (f"connections/{NAME}/rejected", h.RejectedHandler),
    (f"connections/{NAME}/authorize", h.AuthorizeHandler),
    (f"connections/{NAME}/revoke", h.RevokeHandler),
    (f"connections/{NAME}/private_key", h.PrivateKeyHandler),
    (f"connections/{NAME}/doctor", h.DoctorHandler),
    (f"connections/{NAME}/test", h.TestHandler),
    (f"connections/{NAME}/browse", h.BrowseHandler),
    (f"flows/{FLOW_ID}", h.FlowHandler),
    *((f"admin/{path}", handler) for path, handler in ADMIN_HANDLERS),
]


#: What a host's base class must implement (:class:`.identity.IdentityStrategy`).
HOOKS = (
    "host_kind",
    "authenticate",
    "browser_user",
    "login_redirect",
    "usernames",
    "callback_requires_session",
    "refresh_connections",
)


def hosted(shared: type[web.RequestHandler], base: type[web.RequestHandler]) -> type[Any]:
    """The class a host serves: the shared handler on the host's base."""
    missing = [hook for hook in HOOKS if not hasattr(base, hook)]
    if missing:  # at import, not as a 500 on the first request
        raise TypeError(f"{base.__name__} lacks the identity strategy's {', '.join(missing)}")
    return type(shared.__name__, (shared, base), {"__module__": base.__module__})


def routes(
    api_base: type[web.RequestHandler],
    callback_base: type[web.RequestHandler],
    *,
    api: str,
    callback: str,
) -> list[tuple[str, type[web.RequestHandler]]]:
    """``api``: the API's path prefix (``/connauth/api``); ``callback``: the callback's
    path (``/oauth/connector/callback``)."""
    api = api.rstrip("/")
    served = [(f"{api}/{path}", hosted(shared, api_base)) for path, shared in API_ROUTES]
    served.append((callback, hosted(h.CallbackHandler, callback_base)))
    return served
