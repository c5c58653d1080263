"""Okta (developer.okta.com).

- Apps authenticate at the token endpoint with ``client_secret_basic`` unless set
  otherwise (docs/api/openapi/okta-oauth/guides/client-auth/): a secret in the body
  is ``invalid_client``. Discovery lists every method the server supports, so basic
  is preferred whenever it is listed;
- ``offline_access`` yields a refresh token without ``prompt=consent``
  (docs/guides/refresh-tokens/main/); ``prompt=consent`` is only for apps with user
  consent enabled, so it is not sent;
- token exchange names its target authorization server by ``audience``
  (docs/guides/set-up-token-exchange/main/): the connection's ``resource``.
"""

from __future__ import annotations

from .base import DoctorFacts, Finding, IdPFlavour


class Okta(IdPFlavour):
    name = "okta"
    label = "Okta"
    auth_preference = ("client_secret_basic", "client_secret_post")
    offline_needs_consent = False

    def exchange_params(self, params: dict[str, str], resource: str | None) -> dict[str, str]:
        if resource and "audience" not in params:
            return {**params, "audience": resource}
        return params

    def doctor(self, facts: DoctorFacts) -> list[Finding]:
        out = super().doctor(facts)
        spec = facts.connection
        if spec.auth == "token-exchange" and not spec.resource:
            out.append(
                Finding(
                    "token exchange audience",
                    False,
                    "Okta's token exchange needs the target authorization server's audience",
                    f"set 'resource' of connection {spec.name!r} to the audience of the "
                    "authorization server that issues the warehouse's tokens "
                    "(Security → API → Authorization Servers → Audience)",
                )
            )
        if facts.auth_method == "client_secret_post":
            out.append(
                Finding(
                    "client authentication",
                    None,
                    "client_secret_post: Okta apps use client_secret_basic unless their "
                    "'Client authentication' is set to 'Client secret (post)'",
                    "if the IdP answers invalid_client, remove "
                    "c.ConnAuth.token_endpoint_auth_method (basic is the default)",
                )
            )
        return out


FLAVOUR = Okta()
