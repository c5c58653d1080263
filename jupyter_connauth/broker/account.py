"""Whose IdP account a consent signed in with, and whether it may be stored.

Two checks bind a consent to the right person, on every path that starts a flow:

- the host's verified email of the user (JupyterHub's), when it knows one;
- the IdP subject (``sub`` and ``iss``) of the grant already stored for this user and
  connection (or of the one dropped last, ``StoredToken.previous_identity``): a consent
  by another account is refused unless the user asked to switch accounts.

What an ID token and UserInfo say about who signed in is read in
:mod:`jupyter_connauth.oauth.oidc` (``identity_from_claims``, ``add_userinfo``).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..core.errors import FlowError
from ..core.tokens import Flow, StoredToken


def stored_identity(stored: StoredToken | None) -> dict[str, str] | None:
    """The IdP account of the user's grant for a connection: the current one, else the
    one dropped last for any reason but the user's own revoke."""
    if stored is None:
        return None
    if stored.record is not None:
        return stored.record.identity or None
    previous = getattr(stored, "previous_identity", None)
    return dict(previous) if isinstance(previous, dict) and previous else None


def _shown(identity: Mapping[str, str] | None) -> str:
    if not identity:
        return "an account without a name"
    return (
        identity.get("email")
        or identity.get("preferred_username")
        or f"the account with subject {identity.get('sub', '?')}"
    )


def check_expected_email(flow: Flow, identity: Mapping[str, str]) -> None:
    expected = (flow.expected_email or "").lower()
    if expected and not identity.get("email"):
        raise FlowError(
            f"The identity provider said no email for this sign-in (neither in the ID "
            f"token nor from UserInfo), so it cannot be checked against {expected}.",
            "have the IdP app put the verified email claim in the ID token (Entra: the "
            "optional claim 'email'; Okta, Keycloak: the email scope's claims in the ID "
            "token), then authorize again",
            code="no_email",
        )
    if expected and identity.get("email", "").lower() != expected:
        # Someone else signed in with this user's link: their token must not land here.
        got = identity.get("email") or "an account without an email"
        raise FlowError(
            f"You signed in at the identity provider as {got}, but this authorization "
            f"belongs to {expected}.",
            "sign in at the identity provider with the same account you use for "
            "Jupyter, then authorize again",
            code="identity_mismatch",
        )


def same_account(old: Mapping[str, str], new: Mapping[str, str]) -> bool:
    """The same IdP subject: ``sub`` (and ``iss`` where both have one) equal."""
    if not old.get("sub"):
        return True  # nothing to compare with (a grant without an ID token)
    if old.get("sub") != new.get("sub"):
        return False
    return not (old.get("iss") and new.get("iss") and old["iss"] != new["iss"])


def check_same_account(flow: Flow, stored: StoredToken | None, identity: Mapping[str, str]) -> None:
    """Refuse a consent by another IdP account than the stored grant's, unless the
    user asked to switch (``POST connections/NAME/authorize {"switch_account": true}``)."""
    if flow.switch_account:
        return
    old = stored_identity(stored)
    if old is None or same_account(old, identity):
        return
    raise FlowError(
        f"You signed in at the identity provider as {_shown(identity)}, but "
        f"{flow.connection!r} is authorized for {_shown(old)}. Nothing was changed.",
        f"sign in as {_shown(old)}; to use {_shown(identity)} from now on, switch "
        f"accounts on purpose: %sql_connector authorize {flow.connection} "
        "--switch-account (or Switch account in the sidebar)",
        code="account_mismatch",
    )
