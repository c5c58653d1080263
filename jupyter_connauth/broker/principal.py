"""Who a broker request acts for, as the host authenticated them.

The host decides (the single-user server: its owner; the JupyterHub service: the hub
user of the request) and the broker only reads this, as jupyter_server's handlers
only read ``current_user`` from its IdentityProvider.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Principal:
    """A user of the broker. No field is a secret except ``login_token`` (not in repr)."""

    name: str
    #: May create, edit and delete connections, and use the admin routes.
    admin: bool = False
    groups: list[str] = field(default_factory=list)
    #: A verified email the host knows (the hub's): a consent must sign in with it.
    email: str | None = None
    #: The user's login access token at the same IdP (hub pass-through), if any.
    login_token: str | None = field(default=None, repr=False)
    login_expires_at: float | None = None
    #: The IdP's claims the host knows (hub auth_state's user info), e.g. for
    #: c.ConnAuth.jwt_subject_claim.
    claims: dict[str, Any] = field(default_factory=dict, repr=False)

    def login_token_valid(self, leeway: float) -> bool:
        if not self.login_token:
            return False
        return self.login_expires_at is None or self.login_expires_at - leeway > time.time()
