"""The HTTP transports of every IdP call: the environment's proxies and CA certificates.

httpx2 reads ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` only when
a client is built without a transport of its own; the IdP clients here pass one (for
retries on connect and a shared pool), so :func:`idp_transports` builds the proxy
mounts from the environment itself, the way httpx2 would. TLS verification uses the
default context (which honours ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``) plus
``c.ConnAuth.ca_bundle`` when set (a corporate CA in front of the IdP).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

import httpcore2
import httpx2
from httpx2._utils import get_environment_proxies  # what httpx2 itself reads

from ..core.errors import ConfigError


@dataclass
class Transports:
    """The default transport and the per-URL-pattern proxy mounts of one IdP."""

    transport: httpx2.AsyncBaseTransport
    mounts: dict[str, httpx2.AsyncBaseTransport | None] = field(default_factory=dict)

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for an httpx2 (or authlib's httpx) client."""
        return {"transport": self.transport, "mounts": dict(self.mounts)}

    async def aclose(self) -> None:
        for t in {id(t): t for t in [self.transport, *self.mounts.values()] if t}.values():
            await t.aclose()


def ssl_context(ca_bundle: str = "") -> ssl.SSLContext | bool:
    """True (the default context, SSL_CERT_FILE honoured) or one that also trusts
    ``ca_bundle``."""
    if not ca_bundle:
        return True
    ctx = httpcore2.default_ssl_context()
    try:
        ctx.load_verify_locations(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            "c.ConnAuth.ca_bundle",
            f"{ca_bundle} cannot be read as PEM CA certificates ({type(e).__name__})",
            "point it at a PEM file of the CA certificates that sign the IdP's TLS "
            "certificate (or the TLS-inspecting proxy's)",
        ) from None
    return ctx


def idp_transports(
    *, ca_bundle: str = "", transport: httpx2.AsyncBaseTransport | None = None
) -> Transports:
    """The transports for one IdP. An injected ``transport`` (tests) is used as is."""
    if transport is not None:
        return Transports(transport)
    verify = ssl_context(ca_bundle)
    mounts: dict[str, httpx2.AsyncBaseTransport | None] = {
        pattern: None
        if proxy is None
        else httpx2.AsyncHTTPTransport(retries=1, verify=verify, proxy=proxy)
        for pattern, proxy in get_environment_proxies().items()
    }
    return Transports(httpx2.AsyncHTTPTransport(retries=1, verify=verify), mounts)
