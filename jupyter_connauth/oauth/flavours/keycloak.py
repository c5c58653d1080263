"""Keycloak (keycloak.org/docs/latest/server_admin/#_oidc).

- A realm's issuer is ``{base}/realms/{realm}``: detected from ``/realms/`` in the
  discovery URL;
- a refresh token comes with every code exchange, an offline token with
  ``offline_access`` (server_admin/#_offline-access): no ``prompt=consent`` needed,
  and Keycloak shows its consent screen only for clients with "Consent required";
- PKCE S256 (the client's "Proof Key for Code Exchange Code Challenge Method"), which
  this client always sends;
- a refresh names no scope (RFC 6749 6: the scopes as granted), so it never asks for
  one the session's token does not carry (``offline_access`` when the client got no
  offline token), which is ``invalid_scope``.
"""

from __future__ import annotations

from .base import IdPFlavour


class Keycloak(IdPFlavour):
    name = "keycloak"
    label = "Keycloak"
    refresh_scope = False
    offline_needs_consent = False


FLAVOUR = Keycloak()
