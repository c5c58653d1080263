"""BigQuery credentials from the broker: google-auth's ``Credentials(token, expiry=...,
refresh_handler=...)``, the form google-auth provides for tokens from a token broker."""

from __future__ import annotations

import time
from typing import Any

from ..core.errors import ConsentRequired
from .base import Credential, Renew

#: google-auth asks the refresh handler again at most this many seconds later.
RECHECK_SECONDS = 10.0


def token_rejected(name: str) -> ConsentRequired:
    return ConsentRequired(
        f"BigQuery rejected the access token for connection {name!r} "
        "(it expired, was revoked, or is not valid for BigQuery).",
        f"the access token was rejected: re-authorize through the broker "
        f"(%sql_connector authorize {name})",
        code="token_rejected",
    )


def broker_credentials(cred: Credential, name: str, renew: Renew | None) -> Any:
    """google-auth credentials for ``cred``, refreshed through ``renew`` (the broker)."""
    from google.oauth2.credentials import Credentials

    if renew is None:
        return _static_credentials(cred.token, name)

    def refresh_handler(request: Any, scopes: Any = None) -> tuple[str, Any]:
        fresh = renew()  # on the driver's thread; the renewer never logs the token
        return fresh.token, ask_again_at(fresh.expires_at)

    return Credentials(  # type: ignore[no-untyped-call]
        cred.token, expiry=ask_again_at(cred.expires_at), refresh_handler=refresh_handler
    )


def ask_again_at(expires_at: float | None) -> Any:
    """The naive-UTC ``expiry`` to give google-auth for a token expiring at ``expires_at``:
    google-auth calls the handler ``REFRESH_THRESHOLD`` before it, so that is when three
    quarters of the token's remaining life have passed (at most ``RECHECK_SECONDS``).
    An expired token gives "now", which google-auth refuses (``RefreshError``)."""
    import datetime as dt

    from google.auth import _helpers

    now = time.time()
    left = 3600.0 if expires_at is None else expires_at - now
    ahead = max(0.0, min(RECHECK_SECONDS, 0.75 * left))
    at = dt.datetime.fromtimestamp(now + ahead, dt.UTC).replace(tzinfo=None)
    threshold: dt.timedelta = _helpers.REFRESH_THRESHOLD
    return at + threshold


def _static_credentials(token: str, name: str) -> Any:
    """google-auth credentials holding only the user's token; refresh() is the broker's job."""
    from google.oauth2.credentials import Credentials

    class BrokerCredentials(Credentials):
        """Refreshing needs the broker (it owns the refresh token): raise, clearly."""

        def refresh(self, request: Any) -> None:
            raise token_rejected(name)

    return BrokerCredentials(token)  # type: ignore[no-untyped-call]
