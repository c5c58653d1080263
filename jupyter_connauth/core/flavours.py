"""IdP flavour detection and the default-scope table (the README's "Default scopes")."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

Flavour = Literal["azure", "google", "okta", "keycloak", "oidc"]
FLAVOURS: tuple[Flavour, ...] = ("azure", "google", "okta", "keycloak", "oidc")

#: Scopes that ask for identity or refresh tokens rather than warehouse access.
#: IdPs often leave them out of the granted ``scope``, so the mismatch check skips them.
OIDC_SCOPES = frozenset({"openid", "email", "profile", "offline_access"})

#: The Azure resource id of Azure Databricks.
AZURE_DATABRICKS_RESOURCE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"

_DEFAULT_SCOPES: dict[tuple[str, Flavour], tuple[str, ...]] = {
    ("bigquery", "oidc"): ("https://www.googleapis.com/auth/bigquery",),
    # Google has no offline_access scope: access_type=offline asks for refresh tokens.
    ("bigquery", "google"): ("https://www.googleapis.com/auth/bigquery",),
    ("bigquery", "azure"): ("https://bigquery.googleapis.com/.default", "offline_access"),
    ("databricks", "azure"): (f"{AZURE_DATABRICKS_RESOURCE}/user_impersonation", "offline_access"),
    ("databricks", "oidc"): ("offline_access",),
    # Snowflake External OAuth: Okta-style custom scope on a generic IdP. On Azure the
    # scope names the admin's own Snowflake app registration, so there is no default.
    ("snowflake", "oidc"): ("session:role-any", "offline_access"),
    # Okta and Keycloak: as any OpenID provider (Snowflake's Okta guide uses
    # session:role-any on a custom authorization server).
    ("databricks", "okta"): ("offline_access",),
    ("snowflake", "okta"): ("session:role-any", "offline_access"),
    ("databricks", "keycloak"): ("offline_access",),
    ("snowflake", "keycloak"): ("session:role-any", "offline_access"),
}

#: Scopes the broker asks for when it mints Snowflake JWTs itself: the identity, kept
#: fresh by refresh so a user disabled at the IdP gets no more JWTs.
JWT_IDENTITY_SCOPES = ("openid", "email", "offline_access")

#: What the user consents to for pass-through modes (the subject token), by default.
SUBJECT_SCOPES = ("openid", "email", "offline_access")

EXCHANGE_MODES = ("on-behalf-of", "token-exchange")


#: Entra ID's login hosts: the public cloud and the sovereign clouds.
AZURE_LOGIN_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.partner.microsoftonline.cn",
        "login.chinacloudapi.cn",
    }
)


def detect_flavour(discovery_url: str) -> Flavour:
    """The flavour a discovery URL shows: ``login.microsoftonline.com`` (and the
    sovereign clouds) → azure, ``accounts.google.com`` → google, ``*.okta.com`` (and
    ``*.oktapreview.com``) → okta, a ``/realms/`` path → keycloak, else oidc."""
    parts = urlsplit(discovery_url)
    host = (parts.hostname or "").lower()
    if host in AZURE_LOGIN_HOSTS:
        return "azure"
    if host == "accounts.google.com":
        return "google"
    if host.endswith((".okta.com", ".oktapreview.com", ".okta-emea.com")):
        return "okta"
    if "/realms/" in parts.path:
        return "keycloak"
    return "oidc"


def default_scopes(connector: str, flavour: Flavour, auth: str = "oauth") -> tuple[str, ...] | None:
    """The template scopes for a connector, or None when the admin must choose them."""
    if auth == "oauth-jwt":
        return JWT_IDENTITY_SCOPES
    template = _DEFAULT_SCOPES.get((connector, flavour))
    if template is not None and auth in EXCHANGE_MODES:
        # An exchange asks for the resource's default permissions: X/user_impersonation
        # becomes X/.default (Azure OBO); refresh is the subject's business.
        return tuple(
            dict.fromkeys(
                s.rsplit("/", 1)[0] + "/.default" if "/" in s and not s.startswith("http") else s
                for s in template
                if s not in OIDC_SCOPES
            )
        )
    return template


def scope_templates(flavour: Flavour) -> dict[str, list[str] | None]:
    """``"connector/auth"`` → the default scopes, for forms (None: the admin must choose)."""
    from .connections import AUTH_MODES, CONNECTORS

    out: dict[str, list[str] | None] = {}
    for connector in CONNECTORS:
        for auth in AUTH_MODES:
            if auth == "oauth-jwt" and connector != "snowflake":
                continue
            template = default_scopes(connector, flavour, auth)
            out[f"{connector}/{auth}"] = list(template) if template is not None else None
    return out
