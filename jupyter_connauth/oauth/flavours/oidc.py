"""Any other OpenID provider: OpenID Connect Core 1.0 as written.

- ``prompt=consent`` with ``offline_access`` (Core 11: a provider issues a refresh
  token for ``offline_access`` only after consent), ``login`` to switch accounts;
- client authentication: ``client_secret_basic`` unless discovery lists only
  ``client_secret_post`` (RFC 8414 2: absent means basic).
"""

from __future__ import annotations

from .base import IdPFlavour


class OIDC(IdPFlavour):
    pass


FLAVOUR = OIDC()
