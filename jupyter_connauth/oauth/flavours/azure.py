"""Microsoft Entra ID (learn.microsoft.com/entra/identity-platform).

- ``offline_access`` alone yields a refresh token (scopes-oidc#offline_access):
  ``prompt=consent`` is never sent by default. It would ask the user to consent again,
  which a tenant that restricts user consent answers with "Need admin approval"
  (AADSTS90094) even after an admin consented for everyone;
- ``<resource>/.default`` is granted as the resource's concrete permissions
  (scopes-oidc#the-default-scope): any granted scope of that resource satisfies it;
- on-behalf-of needs an assertion for this app's own API (v2-oauth2-on-behalf-of-flow):
  the subject consent asks for ``api://<client_id>/access_as_user`` (Expose an API),
  not the Microsoft Graph token ``openid email offline_access`` would give
  (AADSTS500131);
- Conditional Access answers silent requests with ``interaction_required`` and a
  ``claims`` challenge (claims-challenge): the next consent passes it as ``claims``;
- multi-tenant apps (``common``, ``organizations``) have the issuer template
  ``https://login.microsoftonline.com/{tenantid}/v2.0`` (v2-protocols-oidc).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ...core.scopes import missing_scopes
from .base import DoctorFacts, Finding, IdPFlavour

GRAPH_RESOURCES = ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")
#: The scope an app exposes for on-behalf-of by default (Expose an API → Add a scope).
OBO_SCOPE_NAME = "access_as_user"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def resource_of(scope: str) -> str | None:
    """``https://x/.default`` → ``https://x``; ``guid/perm`` → ``guid``; a Graph short
    name (``User.Read``) → None."""
    if "/" not in scope:
        return None
    return scope.rsplit("/", 1)[0].rstrip("/").lower()


def app_api(client_id: str) -> str:
    return f"api://{client_id}"


class Azure(IdPFlavour):
    name = "azure"
    label = "Microsoft Entra ID"
    auth_preference = ("client_secret_post", "client_secret_basic")
    offline_needs_consent = False

    def missing_scopes(self, requested: Iterable[str], granted: Iterable[str] | None) -> list[str]:
        if granted is None:
            return []
        got = list(granted)
        resources = {resource_of(s) for s in got}
        if any("/" not in s for s in got):  # Graph answers with short names
            resources.update(r.lower() for r in GRAPH_RESOURCES)
        wanted = [
            s for s in requested if not (s.endswith("/.default") and resource_of(s) in resources)
        ]
        return missing_scopes(wanted, got)

    def misconfigured(self, description: str | None) -> bool:
        # AADSTS500131: the on-behalf-of assertion is not for this app (its audience).
        return "AADSTS500131" in (description or "")

    @staticmethod
    def subject_scopes(client_id: str) -> tuple[str, ...]:
        """The on-behalf-of subject's consent: a token for this app's own API."""
        return ("openid", "email", "offline_access", f"{app_api(client_id)}/{OBO_SCOPE_NAME}")

    def doctor(self, facts: DoctorFacts) -> list[Finding]:
        out = super().doctor(facts)
        spec = facts.connection
        if "consent" in facts.authorize_params.get("prompt", "").split():
            out.append(
                Finding(
                    "prompt",
                    False,
                    "c.ConnAuth.authorize_params sends prompt=consent: in tenants that "
                    "restrict user consent every user gets 'Need admin approval' "
                    "(AADSTS90094), even after an admin consented",
                    "remove prompt from c.ConnAuth.authorize_params: Entra issues refresh "
                    "tokens for offline_access without it",
                )
            )
        if "{tenantid}" in str(facts.metadata.get("issuer")) and not facts.allowed_tenants:
            out.append(
                Finding(
                    "tenants",
                    False,
                    "a multi-tenant discovery URL (common / organizations) and no allowed "
                    "tenant: every sign-in is refused",
                    "list the tenant ids whose users may sign in in c.ConnAuth.allowed_tenants "
                    "(or use the tenant's own discovery URL)",
                )
            )
        defaults = [s for s in spec.scopes if s.endswith("/.default")]
        if defaults:
            out.append(
                Finding(
                    ".default",
                    None,
                    f"{' '.join(defaults)} is granted as every permission the app "
                    "registration has on that API",
                    "an Entra admin adds the API's delegated permissions (API permissions "
                    "→ Add a permission) and grants admin consent for the tenant",
                )
            )
        if spec.auth == "on-behalf-of":
            out.extend(self._obo_checks(facts))
        return out

    def _obo_checks(self, facts: DoctorFacts) -> list[Finding]:
        cid = facts.client_id
        own = (app_api(cid).lower(), cid.lower())
        expose = (
            f"in the app registration {cid}: Expose an API → Application ID URI "
            f"{app_api(cid)} → Add a scope '{OBO_SCOPE_NAME}' (who can consent: admins and "
            "users), then API permissions → Add a permission → My APIs → this app → "
            f"{OBO_SCOPE_NAME} → Grant admin consent"
        )
        subject = [s for s in facts.consent_scopes if resource_of(s) in own]
        out: list[Finding] = []
        if subject:
            out.append(
                Finding(
                    "on-behalf-of subject",
                    True,
                    f"the user consents to {' '.join(subject)} (this app's own API)",
                    expose,
                )
            )
        else:
            out.append(
                Finding(
                    "on-behalf-of subject",
                    False,
                    "the subject scopes name no scope of this app's own API: Entra gives a "
                    "Microsoft Graph token, which it refuses as an on-behalf-of assertion "
                    "(AADSTS500131)",
                    f"{expose}; and set subject_scopes of {facts.connection.name!r} to "
                    f"'openid email offline_access {app_api(cid)}/{OBO_SCOPE_NAME}' (or "
                    "c.ConnAuth.app_api_scope)",
                )
            )
        aud = facts.token_claims.get("aud")
        auds = [aud] if isinstance(aud, str) else list(aud or [])
        if auds and not any(str(a).lower() in own for a in auds):
            out.append(
                Finding(
                    "subject token audience",
                    False,
                    f"your stored subject token is for {' '.join(map(str, auds))}, not this "
                    f"app ({cid}): Entra refuses it for on-behalf-of (AADSTS500131)",
                    f"{expose}; then authorize {facts.connection.name!r} again",
                )
            )
        return out


FLAVOUR = Azure()
