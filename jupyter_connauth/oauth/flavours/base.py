"""What every IdP flavour answers, with plain OpenID Connect's answers.

A flavour module (:mod:`.azure`, :mod:`.google`, :mod:`.okta`, :mod:`.keycloak`,
:mod:`.oidc`) subclasses :class:`IdPFlavour` where its vendor documents another
behaviour: the authentication request's ``prompt`` and extra parameters, which scopes
may be sent, how granted scopes answer requested ones, the refresh request, the client
authentication it prefers and what ``doctor`` checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...core.scopes import missing_scopes
from ..oidc import prompt_params

#: Client authentication methods this client can use (RFC 7591 2 names).
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")


@dataclass(frozen=True)
class Finding:
    """One line of ``doctor``: ``ok`` None is information only."""

    check: str
    ok: bool | None
    detail: str
    fix: str | None = None


@dataclass
class DoctorFacts:
    """What a flavour's doctor checks look at (no secrets)."""

    client_id: str
    metadata: Mapping[str, Any]
    auth_method: str
    authorize_params: Mapping[str, str]
    connection: Any  # ConnectionSpec
    consent_scopes: Sequence[str]
    #: Claims of the user's stored access token (unverified; for diagnosis only).
    token_claims: Mapping[str, Any] = field(default_factory=dict)
    allowed_tenants: Sequence[str] = ()


class IdPFlavour:
    """Plain OpenID Connect (Core 1.0, RFC 6749)."""

    name: ClassVar[str] = "oidc"
    label: ClassVar[str] = "OpenID Connect"
    #: Preferred client authentication when discovery lists several (RFC 8414 2:
    #: absent means client_secret_basic).
    auth_preference: ClassVar[tuple[str, ...]] = ("client_secret_basic", "client_secret_post")
    #: Whether a refresh request names the scopes (Entra requires them; RFC 6749 6 makes
    #: them optional, meaning "as originally granted").
    refresh_scope: ClassVar[bool] = True
    #: Whether ``offline_access`` needs ``prompt=consent`` for a refresh token (OpenID
    #: Connect Core 11); IdPs that issue one without say False.
    offline_needs_consent: ClassVar[bool] = True
    #: Scopes this IdP does not know and must never be sent.
    unknown_scopes: ClassVar[frozenset[str]] = frozenset()

    # -- the authentication request ------------------------------------------------
    def request_scopes(self, scopes: Iterable[str]) -> list[str]:
        return [s for s in scopes if s not in self.unknown_scopes]

    def prompt_params(
        self,
        scopes: list[str],
        params: Mapping[str, str],
        *,
        switch_account: bool,
        reason: str = "",
    ) -> dict[str, str]:
        """The :class:`~..oidc.PromptRules` of this flavour: OpenID Connect's, without
        its ``prompt=consent`` for ``offline_access`` where the IdP does not need it."""
        if not self.offline_needs_consent:
            scopes = [s for s in scopes if s != "offline_access"]
        return prompt_params(scopes, params, switch_account=switch_account, reason=reason)

    # -- the token responses -------------------------------------------------------
    def missing_scopes(self, requested: Iterable[str], granted: Iterable[str] | None) -> list[str]:
        """Requested scopes the answer's ``scope`` does not satisfy."""
        return missing_scopes(requested, granted)

    def misconfigured(self, description: str | None) -> bool:
        """Whether an ``invalid_grant`` means the app's setup is wrong (asking the user to
        sign in again would loop), not that the user's grant is gone."""
        return False

    def refresh_params(self) -> dict[str, str]:
        return {}

    def exchange_params(self, params: dict[str, str], resource: str | None) -> dict[str, str]:
        """An RFC 8693 request's parameters as this IdP wants them."""
        return params

    # -- client authentication -----------------------------------------------------
    def auth_method(self, metadata: Mapping[str, Any], *, has_secret: bool, has_key: bool) -> str:
        """The default ``token_endpoint_auth_method`` from discovery's
        ``token_endpoint_auth_methods_supported``."""
        if has_key:
            return "private_key_jwt"
        if not has_secret:
            return "none"
        listed = metadata.get("token_endpoint_auth_methods_supported")
        supported = listed if isinstance(listed, list) and listed else ["client_secret_basic"]
        for method in self.auth_preference:
            if method in supported:
                return method
        return self.auth_preference[0]

    # -- doctor --------------------------------------------------------------------
    def doctor(self, facts: DoctorFacts) -> list[Finding]:
        out: list[Finding] = []
        listed = facts.metadata.get("token_endpoint_auth_methods_supported")
        if isinstance(listed, list) and listed and facts.auth_method not in listed:
            out.append(
                Finding(
                    "client authentication",
                    False,
                    f"{facts.auth_method} is not among the IdP's "
                    f"token_endpoint_auth_methods_supported ({', '.join(map(str, listed))})",
                    "set c.ConnAuth.token_endpoint_auth_method to the method the IdP app "
                    "uses (or leave it unset to follow discovery)",
                )
            )
        else:
            out.append(Finding("client authentication", True, facts.auth_method))
        return out
