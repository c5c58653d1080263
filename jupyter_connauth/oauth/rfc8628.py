"""RFC 8628, the OAuth 2.0 device authorization grant: consent for a kernel no browser
can reach.

The client asks the device authorization endpoint for a ``user_code`` and a
``verification_uri`` (section 3.1/3.2), shows them, and polls the token endpoint with
the ``device_code`` (section 3.4) until the user has consented somewhere else:
``authorization_pending`` means keep polling, ``slow_down`` means poll 5 seconds
slower from now on (section 3.5), ``access_denied`` and ``expired_token`` end it. The
``device_code`` is a secret: it never leaves :class:`DeviceAuthorization` (not in its
repr, not in an error's text); the ``user_code`` is meant to be shown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2

from ..core.errors import IdPUnavailable
from .rfc6749 import (
    KEPT_FIX,
    OAuthProtocolError,
    TokenEndpoint,
    TokenResponse,
    protocol_error,
    strip_query,
)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
#: Section 3.2: "If no value is provided, clients MUST use 5 as the default."
DEFAULT_INTERVAL = 5.0
#: Section 3.5: on ``slow_down`` "the interval MUST be increased by 5 seconds".
SLOW_DOWN_STEP = 5.0


class AuthorizationPendingError(OAuthProtocolError):
    """Section 3.5: the user has not finished yet; keep polling."""

    error = "authorization_pending"


class SlowDownError(OAuthProtocolError):
    """Section 3.5: still pending, and poll 5 seconds slower from now on."""

    error = "slow_down"


class AccessDeniedError(OAuthProtocolError):
    """Section 3.5: the user declined."""

    error = "access_denied"


class ExpiredTokenError(OAuthProtocolError):
    """Section 3.5: the device code expired before the user finished."""

    error = "expired_token"


class NoDeviceEndpointError(OAuthProtocolError):
    """The IdP's metadata names no ``device_authorization_endpoint`` (RFC 8414 / RFC 8628 4)."""

    error = "device_flow_unsupported"


@dataclass
class DeviceAuthorization:
    """The device authorization response (section 3.2), with absolute times."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_at: float
    interval: float

    @property
    def expires_in(self) -> int:
        return max(0, int(self.expires_at - time.time()))


def device_endpoint(metadata: Mapping[str, Any]) -> str | None:
    endpoint = metadata.get("device_authorization_endpoint")
    return endpoint if isinstance(endpoint, str) and endpoint else None


async def request_device_authorization(
    client: TokenEndpoint,
    metadata: Mapping[str, Any],
    *,
    scopes: list[str],
    extra: Mapping[str, str],
) -> DeviceAuthorization:
    """Section 3.1: the client, authenticated like at the token endpoint, asks for codes."""
    endpoint = device_endpoint(metadata)
    if endpoint is None:
        raise NoDeviceEndpointError(
            description="the IdP's discovery document has no device_authorization_endpoint"
        )
    where = strip_query(endpoint)
    oauth = client.oauth_client()
    try:
        resp = await oauth.post(
            endpoint,
            data={"scope": " ".join(scopes), **extra},
            auth=oauth.client_auth(oauth.token_endpoint_auth_method),
            headers={"Accept": "application/json"},
        )
        raw = resp.json()
    except httpx2.HTTPError as e:
        raise IdPUnavailable(
            f"The IdP's device authorization endpoint {where} is unreachable ({type(e).__name__}).",
            KEPT_FIX,
        ) from None
    except ValueError:
        raise IdPUnavailable(
            f"The IdP's device authorization endpoint {where} answered HTTP "
            f"{resp.status_code} without JSON.",
            "try again later or check the IdP",
        ) from None
    if not isinstance(raw, dict):
        raw = {}
    if resp.status_code != 200 or raw.get("error"):
        raise protocol_error(
            str(raw.get("error") or f"http_{resp.status_code}"), raw.get("error_description")
        )
    try:
        device_code, user_code, uri = raw["device_code"], raw["user_code"], raw["verification_uri"]
        expires_in = float(raw["expires_in"])
        interval = float(raw.get("interval") or DEFAULT_INTERVAL)
    except (KeyError, TypeError, ValueError):
        raise IdPUnavailable(
            f"The IdP's device authorization endpoint {where} answered without the codes "
            "RFC 8628 3.2 requires.",
            "check the IdP",
        ) from None
    complete = raw.get("verification_uri_complete")
    return DeviceAuthorization(
        device_code=str(device_code),
        user_code=str(user_code),
        verification_uri=str(uri),
        verification_uri_complete=str(complete) if complete else None,
        expires_at=time.time() + expires_in,
        interval=max(interval, 1.0),
    )


async def poll_once(
    client: TokenEndpoint, metadata: Mapping[str, Any], device: DeviceAuthorization
) -> TokenResponse:
    """One token request of section 3.4; ``slow_down`` comes out as :class:`SlowDownError`."""
    return await client.request(
        metadata["token_endpoint"],
        GRANT_TYPE,
        {"device_code": device.device_code},
        retryable=("temporarily_unavailable",),
    )


async def poll(
    client: TokenEndpoint,
    metadata: Mapping[str, Any],
    device: DeviceAuthorization,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> TokenResponse:
    """Poll until the user has decided (section 3.4/3.5): wait ``interval`` seconds
    before each request, 5 more after each ``slow_down``, and stop at the device
    code's expiry with :class:`ExpiredTokenError` without a request past it."""
    interval = device.interval
    unavailable: IdPUnavailable | None = None  # the IdP's last failure, if it failed last
    while True:
        remaining = device.expires_at - time.time()
        if remaining < interval:
            if remaining > 0:
                await sleep(remaining)
            if unavailable is not None:  # not the user's fault: say what failed
                raise unavailable
            raise ExpiredTokenError(description="the device code expired before consent")
        await sleep(interval)
        try:
            return await poll_once(client, metadata, device)
        except AuthorizationPendingError:
            unavailable = None
        except SlowDownError:
            unavailable = None
            interval += SLOW_DOWN_STEP
        except IdPUnavailable as e:
            unavailable = e  # a network blip or a 503 is not the user's answer: poll on
