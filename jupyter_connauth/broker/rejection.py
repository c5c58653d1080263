"""A warehouse rejected a token the broker believed valid (the IdP was reset or its keys
rotated, the warehouse's trust configuration changed, the token was revoked at the IdP).

The kernel or the server's Test reports it once for the grant it was given
(``POST connections/NAME/rejected``). The first report forces ONE refresh of that grant
(single-flight, :meth:`.refresh.Refresher.single_flight`) and marks the new token
``refreshed``; a report for that refreshed token marks the grant ``rejected``: status
says so, and the next token request answers ``consent_required`` (``warehouse_rejected``)
where a new consent can help, else the warehouse's admin fix (:func:`refusal`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from ..core.connections import ConnectionSpec
from .flows import FlowStart
from .grants import TokenGrant
from .refresh import Refresher

log = logging.getLogger(__name__)


@dataclass
class Rejection:
    """What the caller reports: the grant and the ``expires_at`` of the token it used
    (tells an old token from the refreshed one), the warehouse's error and whether its
    fix is the admin's (consent cannot help, e.g. Snowflake 390303 issuer mismatch)."""

    grant: str
    expires_at: float | None
    message: str
    fix: str | None
    admin_fix: bool = False

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Rejection:
        grant, message = body.get("grant"), body.get("message", "")
        expires_at, fix = body.get("expires_at"), body.get("fix")
        admin_fix = body.get("admin_fix", False)
        if not isinstance(grant, str) or not grant:
            raise ValueError("'grant' must be the grant id the token answer gave")
        if expires_at is not None and not isinstance(expires_at, (int, float)):
            raise ValueError("'expires_at' must be the token answer's expires_at (a number)")
        if not isinstance(message, str) or not (fix is None or isinstance(fix, str)):
            raise ValueError("'message' and 'fix' must be strings")
        if not isinstance(admin_fix, bool):
            raise ValueError("'admin_fix' must be true or false")
        return cls(grant, expires_at, message[:500], fix[:500] if fix else None, admin_fix)


async def report(
    refresher: Refresher,
    user: str,
    spec: ConnectionSpec,
    seen: Rejection,
    expected_email: str | None = None,
) -> TokenGrant | FlowStart:
    """Handle one report; the answer is the token request's (a fresh token to retry
    with once, a consent flow, or the admin fix raised)."""
    stored = await refresher.read(refresher.store.get_token, user, spec.name)
    rec = stored.record if stored else None
    if stored is None or rec is None or rec.grant_id != seen.grant:
        # another grant now: no verdict on it
        return await refresher.grant(user, spec, expected_email)
    if seen.expires_at != rec.expires_at:
        # an older token: use the current one
        return await refresher.grant(user, spec, expected_email)
    mark = rec.rejection
    if mark is None and rec.refresh_token:
        log.info("jupyter-connauth: the warehouse rejected %s of %s: refreshing", spec.name, user)
        return await refresher.single_flight(user, spec, expected_email, force=rec.expires_at)
    if mark is None or mark.get("state") == "refreshed":
        consent_helps = spec.auth != "oauth-jwt" and not seen.admin_fix
        rejected = dataclasses.replace(
            rec,
            rejection={
                "state": "rejected",
                "message": seen.message,
                "fix": seen.fix,
                "consent_helps": consent_helps,
            },
        )
        put = refresher.store.put_token
        args = (user, spec.name, stored.fingerprint, rejected)
        if await refresher.io(put, *args, expect_version=stored.version):
            log.warning(
                "jupyter-connauth: the warehouse rejected %s of %s after a refresh: %s",
                spec.name,
                user,
                "consent offered" if consent_helps else "the admin's fix",
            )
    return await refresher.grant(user, spec, expected_email)
