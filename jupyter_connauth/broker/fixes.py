"""What to do about each error an IdP can send: OAuth and OpenID error codes (RFC 6749,
OpenID Connect Core 3.1.2.6, RFC 8707) and Entra ID's AADSTS codes, each with the fix
users see beside the error."""

from __future__ import annotations

import re

_FIXES: dict[str, str] = {
    "redirect_uri_mismatch": (
        "Add the redirect URI {redirect_uri} exactly (scheme, host, port and path) to the "
        "IdP app's redirect URIs (Azure: App registrations → Authentication → Web)."
    ),
    "invalid_scope": (
        "Align the connection's Scopes field with the IdP's policy: request only scopes the "
        "IdP app may grant (requested: {scopes})."
    ),
    "consent_required": (
        "Add offline_access to the connection's scopes and authorize again; if the IdP "
        "requires it, an admin must grant consent for the app first."
    ),
    "interaction_required": "Authorize again in the popup; the IdP needs you to sign in.",
    "login_required": "Authorize again in the popup; the IdP needs you to sign in.",
    "access_denied": (
        "Consent was cancelled or refused. Click Authorize again and accept, or ask your "
        "admin to give you access to the app."
    ),
    "invalid_client": (
        "The IdP rejected the app's credentials: check c.ConnAuth.client_id and "
        "c.ConnAuth.client_secret (or JUPYTER_CONNAUTH_CLIENT_SECRET); the secret may have "
        "expired; and the app's client authentication (c.ConnAuth.token_endpoint_auth_method: "
        "Okta apps use client_secret_basic, the default when discovery lists it)."
    ),
    "unauthorized_client": (
        "The IdP app may not use this grant: enable the authorization code flow (and refresh "
        "tokens) for the app at the IdP."
    ),
    "invalid_target": (
        "The IdP does not know the connection's resource {resource}: fix the 'resource' "
        "setting or register the resource at the IdP."
    ),
    "invalid_grant": "The grant is no longer valid: authorize again.",
    "unsupported_grant_type": "The IdP does not support this grant type for the app.",
    "server_error": "The IdP failed; try again later or ask your IdP admin.",
    "temporarily_unavailable": "The IdP is temporarily unavailable; try again in a minute.",
    # Azure AD / Entra ID codes, found in error_description
    "AADSTS65001": (
        "The app has no consent for these permissions: an Entra ID admin must grant admin "
        "consent (App registrations → API permissions → Grant admin consent), or add the "
        "delegated permission the scopes need."
    ),
    "AADSTS50011": (
        "Add the redirect URI {redirect_uri} exactly to the app registration "
        "(Authentication → Web → Redirect URIs)."
    ),
    "AADSTS70011": (
        "Align the connection's Scopes field with the IdP's policy: a scope is invalid for "
        "this app (requested: {scopes})."
    ),
    "AADSTS7000215": (
        "The client secret is wrong or expired: create a new one in App registrations → "
        "Certificates & secrets and update c.ConnAuth.client_secret."
    ),
    "AADSTS700082": "The refresh token expired after inactivity: authorize again.",
    "AADSTS500131": (
        "On-behalf-of needs a subject token for this app's own API: in the app registration "
        "Expose an API (Application ID URI api://<client_id>, scope access_as_user), and "
        "let the connection's subject_scopes (or c.ConnAuth.app_api_scope) ask for it; "
        "%sql_connector doctor NAME shows the exact values."
    ),
    "AADSTS90094": (
        "The tenant lets only admins consent: an admin grants consent for the organization "
        "(Enterprise applications → Permissions → Grant admin consent), and "
        "c.ConnAuth.authorize_params must not send prompt=consent."
    ),
}

_AADSTS = re.compile(r"\bAADSTS\d+\b")


def fix_for(
    error: str,
    description: str | None = None,
    *,
    redirect_uri: str = "",
    scopes: str = "",
    resource: str = "",
) -> str | None:
    """The fix for an OAuth error code, preferring an Azure AADSTS code when present."""
    template = None
    if description:
        for code in _AADSTS.findall(description):
            template = _FIXES.get(code)
            if template:
                break
    if template is None:
        template = _FIXES.get(error)
    if template is None:
        return None
    return template.format(redirect_uri=redirect_uri, scopes=scopes, resource=resource)


def error_code(error: str) -> str:
    """An IdP's error code as the ``code`` of our error: itself where it is a plain name."""
    return error if error.isidentifier() else "idp_error"


#: The device authorization grant's answers (RFC 8628 3.5) and the IdP saying it has
#: no device flow, each with what the user does next; ``{name}``: the connection.
_DEVICE_FIXES: dict[str, str] = {
    "authorization_pending": (
        "Open the verification URI, enter the code and consent; the broker keeps waiting "
        "until the code expires."
    ),
    "slow_down": (
        "Nothing to do: the IdP asked to poll more slowly and the broker now waits 5 "
        "seconds longer between polls."
    ),
    "access_denied": (
        "Consent was refused at the IdP. Run %sql_connector authorize {name} --device again "
        "and accept, or ask your admin to give you access to the app."
    ),
    "expired_token": (
        "The code expired before it was entered: run %sql_connector authorize {name} "
        "--device again and enter the new code before it expires."
    ),
    "device_flow_unsupported": (
        "The IdP has no device authorization endpoint: enable the device code flow for the "
        "app at the IdP (Entra: Authentication → Allow public client flows; Okta: the "
        "Device Authorization grant type) or authorize in a browser instead."
    ),
    "unauthorized_client": (
        "The IdP app may not use the device code grant: enable it for the app at the IdP "
        "(Entra: Allow public client flows; Okta/Keycloak: the Device Authorization grant)."
    ),
}


def device_fix(error: str, name: str) -> str | None:
    """The fix for a device flow error code (RFC 8628 3.5), else the general one."""
    template = _DEVICE_FIXES.get(error)
    if template is not None:
        return template.format(name=name)
    return fix_for(error)
