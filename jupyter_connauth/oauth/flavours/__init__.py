"""IdP flavours: each vendor's documented deviations from OpenID Connect, one module
per vendor (:mod:`.azure`, :mod:`.google`, :mod:`.okta`, :mod:`.keycloak`), plain
OpenID Connect in :mod:`.oidc`. :func:`flavour_of` gives the one to use."""

from __future__ import annotations

from ...core.errors import ConfigError
from ...core.flavours import FLAVOURS, Flavour, detect_flavour
from . import azure, google, keycloak, oidc, okta
from .base import AUTH_METHODS, DoctorFacts, Finding, IdPFlavour

__all__ = ["AUTH_METHODS", "DoctorFacts", "Finding", "IdPFlavour", "flavour_of", "named"]

_BY_NAME: dict[str, IdPFlavour] = {
    f.FLAVOUR.name: f.FLAVOUR for f in (azure, google, okta, keycloak, oidc)
}


def named(name: Flavour) -> IdPFlavour:
    return _BY_NAME[name]


def flavour_of(setting: str, discovery_url: str, where: str = "c.ConnAuth.flavour") -> IdPFlavour:
    """The flavour ``setting`` names, or the one the discovery URL shows when empty."""
    if not setting:
        return _BY_NAME[detect_flavour(discovery_url)]
    if setting not in FLAVOURS:
        raise ConfigError(
            where, f"unknown flavour {setting!r}", f"use one of: {', '.join(FLAVOURS)}"
        )
    return _BY_NAME[setting]
