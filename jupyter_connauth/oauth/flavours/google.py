"""Google (developers.google.com/identity).

- There is no ``offline_access`` scope ("Error 400: invalid_scope"): it is never sent;
  refresh tokens come with ``access_type=offline``, always sent
  (identity/protocols/oauth2/web-server#offline);
- Google issues a refresh token on a user's first authorization of the app only; a
  later one (after a scope edit, a revoked or expired grant, an explicit re-authorize)
  gets a new refresh token only with ``prompt=consent``, so that is sent then and never
  on first use (web-server#creatingclient, ``prompt``);
- client authentication: ``client_secret_post`` and ``client_secret_basic`` both work.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import DoctorFacts, Finding, IdPFlavour

#: Consent reasons on which Google would issue no new refresh token without
#: prompt=consent: every one but the first use.
FIRST_USE = "first_use"


class Google(IdPFlavour):
    name = "google"
    label = "Google"
    unknown_scopes = frozenset({"offline_access"})
    offline_needs_consent = False

    def prompt_params(
        self,
        scopes: list[str],
        params: Mapping[str, str],
        *,
        switch_account: bool,
        reason: str = "",
    ) -> dict[str, str]:
        out = {"access_type": "offline", **params}
        if reason and reason != FIRST_USE:
            out.setdefault("prompt", "consent")
        return super().prompt_params(scopes, out, switch_account=switch_account, reason=reason)

    def doctor(self, facts: DoctorFacts) -> list[Finding]:
        out = super().doctor(facts)
        spec = facts.connection
        if "offline_access" in spec.scopes:
            out.append(
                Finding(
                    "offline_access",
                    None,
                    "Google has no offline_access scope: it is left out of the request, "
                    "and access_type=offline asks for the refresh token",
                    f"remove offline_access from the scopes of {spec.name!r}",
                )
            )
        if facts.authorize_params.get("access_type") == "online":
            out.append(
                Finding(
                    "access_type",
                    False,
                    "access_type=online: Google issues no refresh token, so users consent "
                    "again whenever the access token expires (every hour)",
                    "remove access_type from c.ConnAuth.authorize_params",
                )
            )
        return out


FLAVOUR = Google()
