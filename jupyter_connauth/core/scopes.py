"""Scope sets: parsing, fingerprints and the granted-versus-requested check."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .flavours import OIDC_SCOPES


def parse_scopes(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Space-separated string or list → ordered tuple without duplicates."""
    if value is None:
        return ()
    items = value.split() if isinstance(value, str) else [s for v in value for s in str(v).split()]
    return tuple(dict.fromkeys(items))


def scope_fingerprint(scopes: Iterable[str], *extra: str | None) -> str:
    """A short, order-independent fingerprint of a scope set (plus e.g. the resource)."""
    h = hashlib.sha256()
    for scope in sorted(set(scopes)):
        h.update(scope.encode())
        h.update(b"\0")
    for item in extra:
        h.update(b"\1" + (item or "").encode())
    return h.hexdigest()[:16]


def missing_scopes(requested: Iterable[str], granted: Iterable[str] | None) -> list[str]:
    """Requested warehouse scopes the IdP did not grant.

    OIDC identity scopes are ignored: IdPs routinely leave them out of ``scope``.
    ``granted`` None means the IdP sent no ``scope``, which RFC 6749 (5.1) defines as
    "identical to the requested scope".
    """
    if granted is None:
        return []
    got = set(granted)
    return [s for s in requested if s not in OIDC_SCOPES and s not in got]
