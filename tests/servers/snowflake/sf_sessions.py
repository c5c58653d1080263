"""Snowflake's session and master tokens, with their validity and renewal.

What Snowflake does, and what this models (docs.snowflake.com, "Snowflake sessions and
session policies"): a session begins at login and "is independent of an identity provider
(IdP) session"; it "is maintained indefinitely with continued user activity", and after
the idle session timeout (four hours by default for programmatic clients) "the user must
authenticate to Snowflake again". The OAuth token is checked only at login: its expiry
does not end the session.

On the wire (the drivers' ``network.py`` / sf_core ``token request``): the login answers a
session token (``validityInSeconds``) and a master token (``masterValidityInSeconds``).
A request with an expired session token is refused with code **390112** ("Your session
has expired. Please login again."), before it runs; the driver then posts
``/session/token-request`` with the master token in ``Authorization`` and
``{"oldSessionToken", "requestType": "RENEW"}``, gets a new session token
(``sessionToken``, ``validityInSecondsST``, ``masterToken``, ``validityInSecondsMT``,
``sessionId``; whole seconds) and
sends the request again. A master token past its validity answers **390114**
("Authentication token has expired.  The user must authenticate again."), an unknown one
390113: the driver raises ``ReauthenticationRequest`` and the session is over.

Here the master token's validity is the idle timeout: each accepted request restarts it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

SESSION_EXPIRED = ("390112", "Your session has expired. Please login again.")
MASTER_NOT_FOUND = ("390113", "Master token not found.")
MASTER_EXPIRED = ("390114", "Authentication token has expired.  The user must authenticate again.")


@dataclass
class Tokens:
    master: str
    session_expires: float
    master_expires: float
    session_id: int


class SessionTokens:
    """Validity of each session's tokens, keyed by the current session token."""

    def __init__(self, session_validity: float, master_validity: float) -> None:
        self.session_validity = session_validity
        self.master_validity = master_validity
        self.by_session: dict[str, Tokens] = {}
        self.by_master: dict[str, str] = {}  # master token -> current session token
        self.renewals = 0
        self.session_expired = 0
        self.master_expired = 0

    def login(self, session_token: str, session_id: int) -> str:
        """A new session: its master token."""
        master = "master-" + secrets.token_urlsafe(32)
        now = time.time()
        self.by_session[session_token] = Tokens(
            master, now + self.session_validity, now + self.master_validity, session_id
        )
        self.by_master[master] = session_token
        return master

    def check(self, session_token: str | None) -> tuple[str, str] | None:
        """The error of a request with ``session_token`` (None: go ahead). Unknown tokens
        are left to fakesnow (390104). An accepted request restarts the idle timeout."""
        tokens = self.by_session.get(session_token or "")
        if tokens is None:
            return None
        now = time.time()
        if tokens.session_expires <= now:
            self.session_expired += 1
            return SESSION_EXPIRED
        tokens.master_expires = max(tokens.master_expires, now + self.master_validity)
        return None

    def renew(self, master: str | None) -> tuple[str, str, Tokens] | tuple[str, str]:
        """``/session/token-request`` RENEW: (old session token, new one, the tokens), or
        an error (code, message). The caller moves the session to the new token."""
        current = self.by_master.get(master or "")
        tokens = self.by_session.get(current or "")
        if current is None or tokens is None:
            return MASTER_NOT_FOUND
        now = time.time()
        if tokens.master_expires <= now:
            self.master_expired += 1
            self.forget(current)
            return MASTER_EXPIRED
        new = "session-" + secrets.token_urlsafe(32)
        del self.by_session[current]
        tokens.session_expires = now + self.session_validity
        tokens.master_expires = max(tokens.master_expires, now + self.master_validity)
        self.by_session[new] = tokens
        self.by_master[tokens.master] = new
        self.renewals += 1
        return current, new, tokens

    def touch(self, session_token: str | None) -> None:
        """A request finished: activity, so the idle timeout restarts from now."""
        tokens = self.by_session.get(session_token or "")
        if tokens is not None:
            tokens.master_expires = max(tokens.master_expires, time.time() + self.master_validity)

    def forget(self, session_token: str) -> None:
        tokens = self.by_session.pop(session_token, None)
        if tokens is not None:
            self.by_master.pop(tokens.master, None)

    def stats(self) -> dict[str, Any]:
        return {
            "session_renewals": self.renewals,
            "session_expired_answers": self.session_expired,
            "master_expired_answers": self.master_expired,
        }
