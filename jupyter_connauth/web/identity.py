"""Where a request's user comes from: one identity strategy per host.

jupyter_server separates who the user is (its ``IdentityProvider``) from what the
handlers do (they only read ``current_user``). The broker API does the same on its
two hosts: the handlers in :mod:`.handlers` are written once against
:class:`IdentityStrategy`, and each host supplies a tornado base class implementing it:

- the single-user Jupyter server (``server/handlers.py``): the server's owner,
  authenticated by Jupyter's ``@authorized`` or by the kernels' ``X-ConnAuth-Token``;
- the JupyterHub service (``hub/handlers.py``): the hub user of the request (the
  service's OAuth cookie or a hub API token); admins are the hub's admins.

No tornado, jupyter_server or JupyterHub import here.
"""

from __future__ import annotations

from typing import Protocol

from ..broker.principal import Principal


class IdentityStrategy(Protocol):
    """What a host's handler base class answers for the shared handlers."""

    #: ``"jupyter_server"`` or ``"jupyterhub"`` (``GET info``'s ``host``).
    host_kind: str

    async def authenticate(self) -> Principal:
        """The principal of an API request; raises HTTP 403 when there is none."""
        ...

    async def browser_user(self) -> str | None:
        """The user whose browser session brings the IdP's answer to the callback
        (a cookie, never a kernel's or an API token), None without a session. Raises
        HTTP 403 for a session that may not use the broker at all."""
        ...

    def login_redirect(self) -> str | None:
        """Where a browser without a session signs in and comes back to this very URL
        (query included); None where signing in cannot help."""
        ...

    async def usernames(self) -> list[str]:
        """Every user the host knows (the admin overview with ``all=1``)."""
        ...

    def callback_requires_session(self) -> bool:
        """Whether the callback needs a session (False only on hubs without logins)."""
        ...

    async def refresh_connections(self) -> None:
        """Before the callback: pick up connections another process edited."""
        ...
