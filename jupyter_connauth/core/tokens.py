"""Token records and consent flows as the broker stores them.

``repr()`` of these objects never shows a secret: they end up in logs and tracebacks.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from .redact import remember

ConsentReason = Literal[
    "first_use",
    "scopes_changed",
    "grant_revoked",
    "refresh_expired",
    "revoked",
    "user_request",
    "key_changed",
    "warehouse_rejected",
]

REASON_TEXT: dict[str, str] = {
    "first_use": "this is the first use of the connection",
    "scopes_changed": "the admin changed the connection's scopes",
    "grant_revoked": "the grant was revoked at the identity provider",
    "refresh_expired": "the refresh token expired",
    "revoked": "you revoked the connection's token",
    "user_request": "you asked to authorize again",
    "claims_challenge": "the identity provider asks you to sign in again to satisfy an "
    "access policy (e.g. multi-factor authentication)",
    "key_changed": "the stored token cannot be decrypted with the configured encryption keys "
    "(was JUPYTER_CONNAUTH_CRYPT_KEY or the key file changed?): authorize again, or put the "
    "old key back after the new one",
    "warehouse_rejected": "the warehouse rejected your token, also after a refresh (was the "
    "identity provider reset, its keys rotated, or the token revoked there?): authorize again",
}


@dataclass
class TokenRecord:
    """What the IdP gave one user for one connection."""

    access_token: str
    expires_at: float | None
    refresh_token: str | None = None
    token_type: str = "Bearer"  # noqa: S105 - the token type, not a secret
    scope: tuple[str, ...] | None = None
    identity: dict[str, str] = field(default_factory=dict)
    obtained_at: float = field(default_factory=time.time)
    #: Random, set when a consent completes and kept by refresh: the kernel's sessions
    #: opened under another grant (revoked, re-authorized, scopes edited) are closed.
    grant_id: str = ""
    #: The ID token of the consent or last refresh (a Workforce Identity Federation subject).
    id_token: str | None = None
    #: A warehouse rejected this grant's token: ``{"state": "refreshed"}`` after the one
    #: forced refresh, ``"rejected"`` when the refreshed token was rejected too (with the
    #: warehouse's ``message``, ``fix`` and ``consent_helps``). See broker/rejection.py.
    rejection: dict[str, Any] | None = None
    #: When the refresh token expires where the IdP said so (Keycloak's
    #: ``refresh_expires_in``), else None; ``%sql_connector preflight --for`` reads it.
    refresh_expires_at: float | None = None

    def __post_init__(self) -> None:
        remember(self.access_token, self.refresh_token, self.id_token)  # see core/redact.py

    def __repr__(self) -> str:
        return (
            f"TokenRecord(expires_at={self.expires_at!r}, refresh_token="
            f"{'<set>' if self.refresh_token else None}, scope={self.scope!r}, "
            f"identity={self.identity!r})"
        )

    def expires_within(self, seconds: float, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        return self.expires_at - seconds <= (time.time() if now is None else now)

    @property
    def display_identity(self) -> str | None:
        ident = self.identity
        return ident.get("email") or ident.get("preferred_username") or ident.get("sub")

    def dumps(self) -> bytes:
        data = asdict(self)
        data["scope"] = list(self.scope) if self.scope is not None else None
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes) -> TokenRecord:
        data: dict[str, Any] = json.loads(raw)
        if data.get("scope") is not None:
            data["scope"] = tuple(data["scope"])
        known = {f.name for f in fields(cls)}  # a newer version's fields: ignored
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class StoredToken:
    """A row of the token store: the record (None once dropped) and why it went.

    ``version`` grows with every write of the row (compare-and-set for refreshes and
    drops); ``lease_until`` is when another process's refresh lease of the row ends
    (None: no refresh under way). ``previous_identity`` is the identity of a record
    dropped for any reason but the user's own revoke.
    """

    record: TokenRecord | None
    fingerprint: str
    reason: str | None = None
    updated_at: float = 0.0
    version: int = 0
    lease_until: float | None = None
    previous_identity: dict[str, str] | None = None


FlowStatus = Literal["pending", "complete", "failed"]


@dataclass
class Flow:
    """One consent flow. ``code_verifier`` and ``nonce`` are secrets."""

    flow_id: str
    state_hash: str
    user: str
    connection: str
    fingerprint: str
    code_verifier: str
    nonce: str
    redirect_uri: str
    created_at: float
    expires_at: float
    reason: str = "first_use"
    status: FlowStatus = "pending"
    error: str | None = None
    message: str | None = None
    fix: str | None = None
    identity: str | None = None
    #: The email the user is known by (e.g. JupyterHub's): the IdP sign-in must match.
    expected_email: str | None = None
    #: The user asked to sign in with another IdP account than the stored grant's.
    switch_account: bool = False

    def __repr__(self) -> str:
        return (
            f"Flow(flow_id={self.flow_id!r}, user={self.user!r}, "
            f"connection={self.connection!r}, status={self.status!r})"
        )

    def public_dict(self) -> dict[str, Any]:
        return {
            "flow_id": self.flow_id,
            "connection": self.connection,
            "status": self.status,
            "expires_at": self.expires_at,
            "reason": self.reason,
            "error": self.error,
            "message": self.message,
            "fix": self.fix,
            "identity": self.identity,
        }
