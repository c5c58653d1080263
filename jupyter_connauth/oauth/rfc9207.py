"""RFC 9207, authorization server issuer identification: the mix-up defence.

The authorization response names its issuer in ``iss``; a client that knows the
server's issuer compares it (section 2.4), and when the server's metadata promises
the parameter (``authorization_response_iss_parameter_supported``) a response
without it is refused as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .rfc6749 import OAuthProtocolError


class IssuerMismatchError(OAuthProtocolError):
    """The response came from another issuer than the one the request went to."""

    error = "issuer_mismatch"


class IssuerMissingError(OAuthProtocolError):
    """The server promises ``iss`` in its responses, and this one has none."""

    error = "issuer_missing"


def check_issuer(
    params: Mapping[str, str], metadata: Mapping[str, Any], allowed_tenants: tuple[str, ...] = ()
) -> None:
    """Raise unless the authorization response ``params`` come from ``metadata``'s issuer
    (for a multi-tenant template ``{tenantid}``, the issuer of an allowed tenant)."""
    iss = params.get("iss")
    issuer = str(metadata.get("issuer"))
    names = (
        {issuer.replace("{tenantid}", t) for t in allowed_tenants}
        if "{tenantid}" in issuer
        else {issuer}
    )
    if iss is not None and iss not in names:
        raise IssuerMismatchError(description="the response names another issuer")
    if iss is None and metadata.get("authorization_response_iss_parameter_supported"):
        raise IssuerMissingError(description="the response has no iss parameter")
