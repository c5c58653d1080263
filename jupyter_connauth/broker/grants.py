"""What the broker hands out: a :class:`TokenGrant` for one user and connection, made
from a stored grant or an exchanged token (:func:`grant_of`) or a minted JWT; and when
a stored grant can no longer be used (:func:`consent_reason`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.connections import ConnectionSpec
from ..core.errors import ConnAuthError
from ..core.redact import remember
from ..core.tokens import StoredToken, TokenRecord
from ..oauth.google_sts import GoogleToken
from ..oauth.rfc6749 import TokenResponse


@dataclass
class TokenGrant:
    """A usable access token for one user and connection."""

    connection: str
    access_token: str
    expires_at: float | None
    token_type: str
    identity: str | None
    warning: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Which grant the token comes from: changes on revoke, re-authorize, scope edits.
    grant: str = ""

    def __post_init__(self) -> None:
        remember(self.access_token)  # masked wherever it shows up in a text from now on

    def __repr__(self) -> str:
        return f"TokenGrant(connection={self.connection!r}, expires_at={self.expires_at!r})"

    def to_json(self) -> dict[str, Any]:
        out = {
            "status": "ok",
            "connection": self.connection,
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "identity": self.identity,
            "warning": self.warning,
            "grant": self.grant,
        }
        private = ("email", "claims", "id_token")
        out.update((k, v) for k, v in self.extra.items() if k not in private)
        return out


def grant_of(
    spec: ConnectionSpec,
    token: TokenRecord | TokenResponse | GoogleToken,
    *,
    identity: str | None,
    grant: str,
    warning: str | None = None,
    **extra: Any,
) -> TokenGrant:
    """The answer for an OAuth access token: the user's stored one, or one a
    pass-through exchange got for them (``extra``: what else the kernel learns)."""
    return TokenGrant(
        connection=spec.name,
        access_token=token.access_token,
        expires_at=token.expires_at,
        token_type=token.token_type,
        identity=identity,
        warning=warning,
        extra={"info": spec.kernel_info(), "kind": "oauth", **extra},
        grant=grant,
    )


def stored_grant(
    spec: ConnectionSpec, record: TokenRecord, warning: str | None = None
) -> TokenGrant:
    """The answer for the user's own stored token."""
    return grant_of(
        spec,
        record,
        identity=record.display_identity,
        grant=record.grant_id,
        warning=warning,
        email=record.identity.get("email"),
        claims=record.identity,  # the JWT subject's source; never sent
        id_token=record.id_token,  # a federation subject; never sent
    )


def consent_reason(spec: ConnectionSpec, stored: StoredToken | None) -> str | None:
    """Why the user must consent again, or None when the stored grant is usable."""
    if stored is None:
        return "first_use"
    if stored.fingerprint != spec.fingerprint:
        return "scopes_changed"
    if stored.record is None:
        return stored.reason or "first_use"
    if stored.record.expires_within(0) and not stored.record.refresh_token:
        return "refresh_expired"
    rejection = stored.record.rejection
    if rejection and rejection.get("state") == "rejected" and rejection.get("consent_helps"):
        return "warehouse_rejected"
    return None


def rejection_refusal(spec: ConnectionSpec, record: TokenRecord) -> ConnAuthError | None:
    """The error for a grant the warehouse rejected where consent cannot help."""
    mark = record.rejection
    if not mark or mark.get("state") != "rejected" or mark.get("consent_helps"):
        return None
    err = ConnAuthError(
        f"The warehouse rejected your token for {spec.name!r}, also after a refresh: "
        f"{mark.get('message') or 'no details'}",
        mark.get("fix") or "ask the admin to check the warehouse's trust of the IdP",
        code="warehouse_rejected",
    )
    err.status = 502  # the warehouse's answer, not the broker's failure
    return err
