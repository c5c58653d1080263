"""RFC 6749, OAuth 2.0: the authorization request, the token endpoint and its errors.

:class:`TokenEndpoint` is the client of one authorization server's token endpoint: the
authorization code grant (with PKCE, :mod:`.rfc7636`), refresh (section 6) and any
other grant by its URN (:mod:`.rfc8693`, :mod:`.entra_obo`, and next to them the
device grant of RFC 8628 or Google's STS with ``endpoint=``). How the client
authenticates is a :class:`ClientAuthentication` the caller passes in (section 2.3,
OpenID Connect Core 9: ``client_secret_basic``, ``client_secret_post``,
``private_key_jwt``, ``none``), so a flavour module chooses it without touching this
one. Every failure comes out as :class:`OAuthProtocolError` (the server answered an
RFC 6749 5.2 error), :class:`~jupyter_connauth.core.errors.IdPBusy` (retry later) or
:class:`~jupyter_connauth.core.errors.IdPUnavailable` (no usable answer), with no
token, code or secret in its text.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import httpx2
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from ..core.errors import IdPBusy, IdPUnavailable


def strip_query(url: str) -> str:
    """Log-safe URL: codes and tokens live in query strings."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


#: OAuth errors and HTTP statuses that mean "try again later" (RFC 6749 5.2, RFC 8628 3.5).
RETRYABLE_ERRORS = ("temporarily_unavailable", "slow_down")
RETRYABLE_STATUSES = (429, 503)
RETRY_FIX = "the stored token is kept; try again in a moment (after Retry-After seconds)"
KEPT_FIX = "the stored token is kept; try again when the IdP is back"


def retry_after(headers: httpx2.Headers | None, default: float = 5.0) -> float:
    """Seconds from a Retry-After header (seconds or HTTP date), bounded to 1..300."""
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return min(max(seconds, 1.0), 300.0)


# -- errors (section 5.2, and the codes of the extensions) ----------------------------
class OAuthProtocolError(Exception):
    """The authorization server answered with an OAuth error: ``(error, description,
    uri)`` as authlib carries them. :func:`protocol_error` picks the subclass that
    names the code; unknown codes stay this class, with ``error`` set."""

    error: str = "invalid_request"
    _by_code: ClassVar[dict[str, type[OAuthProtocolError]]] = {}

    def __init__(
        self, error: str | None = None, description: str | None = None, uri: str | None = None
    ) -> None:
        if error is not None:
            self.error = error
        super().__init__(f"{self.error}: {description}" if description else self.error)
        self.description = description
        self.uri = uri
        #: A claims challenge (OpenID Connect Core 5.5 syntax; Entra's Conditional
        #: Access sends one with interaction_required): the next authorization request
        #: passes it as ``claims``.
        self.claims: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "error" in cls.__dict__:
            OAuthProtocolError._by_code[cls.error] = cls


def protocol_error(
    error: str, description: str | None = None, uri: str | None = None
) -> OAuthProtocolError:
    """The error for an answer's ``error`` code: the subclass naming it where there is one."""
    cls = OAuthProtocolError._by_code.get(error, OAuthProtocolError)
    return cls(error, description, uri)


class InvalidRequestError(OAuthProtocolError):
    error = "invalid_request"


class InvalidClientError(OAuthProtocolError):
    error = "invalid_client"


class InvalidGrantError(OAuthProtocolError):
    """The code, refresh token or subject token is invalid, expired or revoked."""

    error = "invalid_grant"


class UnauthorizedClientError(OAuthProtocolError):
    error = "unauthorized_client"


class UnsupportedGrantTypeError(OAuthProtocolError):
    error = "unsupported_grant_type"


class InvalidScopeError(OAuthProtocolError):
    error = "invalid_scope"


class InvalidTargetError(OAuthProtocolError):
    """RFC 8707 2 / RFC 8693 2.2.2: the requested resource or audience is unknown."""

    error = "invalid_target"


# -- the token response (section 5.1) ------------------------------------------------
@dataclass
class TokenResponse:
    access_token: str
    expires_at: float | None
    refresh_token: str | None
    token_type: str
    scope: tuple[str, ...] | None
    id_token: str | None
    #: Other members of the answer (``issued_token_type`` of RFC 8693, ...); no secrets.
    extra: dict[str, Any] = field(default_factory=dict)
    #: When the refresh token expires, where the IdP says so (Keycloak's
    #: ``refresh_expires_in``; 0 there means an offline token without a set expiry).
    refresh_expires_at: float | None = None

    def __repr__(self) -> str:
        return f"TokenResponse(expires_at={self.expires_at!r}, scope={self.scope!r})"


_KNOWN = frozenset(
    {"access_token", "expires_in", "expires_at", "refresh_token", "token_type", "scope"}
    | {"id_token", "error", "error_description", "error_uri", "refresh_expires_in"}
)


def _seconds_from_now(value: Any) -> float | None:
    """``now + value`` for a positive number of seconds, else None."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return time.time() + seconds if seconds > 0 else None


def parse_token_response(raw: Mapping[str, Any]) -> TokenResponse:
    """A successful answer of the token endpoint, checked (section 5.1)."""
    access = raw.get("access_token")
    if not isinstance(access, str) or not access:
        if raw.get("error"):
            raise protocol_error(str(raw["error"]), raw.get("error_description"))
        raise IdPUnavailable(
            "The IdP's token response has no access_token.",
            "the stored token is kept; check the IdP",
        )
    expires_at: float | None = None
    try:
        if raw.get("expires_in") is not None:
            expires_at = time.time() + float(raw["expires_in"])
        elif raw.get("expires_at") is not None:
            expires_at = float(raw["expires_at"])
    except (TypeError, ValueError):
        expires_at = None
    refresh_token = raw.get("refresh_token") or None
    scope = raw.get("scope")
    id_token = raw.get("id_token")
    return TokenResponse(
        access_token=access,
        expires_at=expires_at,
        refresh_token=refresh_token,
        token_type=str(raw.get("token_type") or "Bearer"),
        scope=tuple(scope.split()) if isinstance(scope, str) else None,
        id_token=id_token if isinstance(id_token, str) else None,
        extra={k: v for k, v in raw.items() if k not in _KNOWN and isinstance(v, str | int)},
        refresh_expires_at=_seconds_from_now(raw.get("refresh_expires_in"))
        if refresh_token
        else None,
    )


def _claims_challenge(resp: Any) -> str | None:
    """The ``claims`` member of an error answer, if it is a JSON object's string."""
    try:
        body = resp.json() if resp is not None else None
    except ValueError:
        return None
    claims = body.get("claims") if isinstance(body, dict) else None
    return claims if isinstance(claims, str) and claims.startswith("{") else None


# -- client authentication (section 2.3) ---------------------------------------------
@dataclass(frozen=True)
class ClientAuthentication:
    """How the client proves itself at the token and revocation endpoints.

    ``method`` is the ``token_endpoint_auth_method`` name (RFC 7591 2). authlib's
    client knows ``client_secret_basic``, ``client_secret_post`` and ``none`` by name;
    for the others pass ``signer``, an authlib client-auth object such as
    ``authlib.oauth2.rfc7523.PrivateKeyJWT(token_endpoint)`` (with the PEM key as
    ``credential``) or a ``(name, function)`` pair.
    """

    method: str = "none"
    credential: str | None = field(default=None, repr=False)  # the secret, or the key
    signer: Any = field(default=None, repr=False)

    @classmethod
    def for_secret(cls, client_secret: str | None) -> ClientAuthentication:
        """The default: ``client_secret_post`` with a secret, a public client without."""
        if client_secret:
            return cls("client_secret_post", client_secret)
        return cls("none")


class TokenEndpoint:
    """The OAuth client of one authorization server, for one ``client_id``.

    ``metadata`` is an async callable returning the server's metadata (RFC 8414 /
    OpenID discovery): ``authorization_endpoint``, ``token_endpoint``,
    ``revocation_endpoint``. Requests share ``transport`` (and so its connection pool).
    """

    def __init__(
        self,
        client_id: str,
        auth: ClientAuthentication,
        *,
        transport: httpx2.AsyncBaseTransport,
        timeout: float,
        mounts: Mapping[str, httpx2.AsyncBaseTransport | None] | None = None,
    ) -> None:
        self.client_id = client_id
        self.auth = auth
        self.transport = transport
        self.mounts = dict(mounts or {})  # proxies from the environment (:mod:`.http`)
        self.timeout = timeout

    def oauth_client(
        self, redirect_uri: str | None = None, auth: ClientAuthentication | None = None
    ) -> AsyncOAuth2Client:
        """A short-lived authlib client (it keeps per-token state) on the shared pool."""
        auth = auth or self.auth
        client = AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=auth.credential,
            token_endpoint_auth_method=auth.method,
            revocation_endpoint_auth_method=auth.method,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            transport=self.transport,
            mounts=self.mounts,
            timeout=self.timeout,
        )
        if auth.signer is not None:
            client.register_client_auth_method(auth.signer)
        return client

    def authorization_url(
        self,
        endpoint: str,
        *,
        redirect_uri: str,
        scopes: list[str],
        state: str,
        code_verifier: str,
        extra: Mapping[str, str],
    ) -> str:
        """Section 4.1.1 with the S256 challenge of ``code_verifier`` (RFC 7636 4.3)."""
        url, _ = self.oauth_client(redirect_uri).create_authorization_url(
            endpoint, state=state, code_verifier=code_verifier, scope=" ".join(scopes), **extra
        )
        return str(url)

    async def exchange_code(
        self,
        endpoint: str,
        *,
        code: str,
        code_verifier: str,
        redirect_uri: str,
        extra: Mapping[str, str],
    ) -> TokenResponse:
        """Section 4.1.3 with the PKCE verifier (RFC 7636 4.5)."""
        return await self.request(
            endpoint,
            "authorization_code",
            {"code": code, "code_verifier": code_verifier, **extra},
            redirect_uri=redirect_uri,
        )

    async def refresh(
        self,
        endpoint: str,
        *,
        refresh_token: str,
        scope: list[str] | None,
        extra: Mapping[str, str],
    ) -> TokenResponse:
        """Section 6. The answer may or may not rotate the refresh token."""
        params = {"refresh_token": refresh_token, **extra}
        if scope:
            params["scope"] = " ".join(scope)
        return await self.request(endpoint, "refresh_token", params)

    async def request(
        self,
        endpoint: str,
        grant_type: str,
        params: Mapping[str, str],
        *,
        redirect_uri: str | None = None,
        auth: ClientAuthentication | None = None,
        retryable: tuple[str, ...] = RETRYABLE_ERRORS,
    ) -> TokenResponse:
        """One token request of ``grant_type``; ``auth`` overrides the client's own
        authentication for this request (an endpoint with its own rules). The errors in
        ``retryable`` come out as :class:`IdPBusy`; a grant that handles one itself
        (RFC 8628's ``slow_down``) leaves it out to get its :class:`OAuthProtocolError`."""
        client = self.oauth_client(redirect_uri, auth)
        answer: list[httpx2.Response] = []  # the raw answer, for its Retry-After

        def keep(resp: httpx2.Response) -> httpx2.Response:
            answer.append(resp)
            return resp

        for hook in ("access_token_response", "refresh_token_response"):
            client.register_compliance_hook(hook, keep)
        where = strip_query(endpoint)
        try:
            if grant_type == "refresh_token":
                raw = await client.refresh_token(endpoint, **params)
            else:
                raw = await client.fetch_token(endpoint, grant_type=grant_type, **params)
        except OAuthError as e:
            if e.error in retryable:
                raise IdPBusy(
                    f"The IdP's token endpoint {where} asks to retry later ({e.error}).",
                    RETRY_FIX,
                    retry_after=retry_after(answer[-1].headers if answer else None),
                ) from None
            err = protocol_error(e.error or "invalid_request", e.description, e.uri)
            err.claims = _claims_challenge(answer[-1] if answer else None)
            raise err from None
        except httpx2.HTTPStatusError as e:
            status = e.response.status_code
            if status not in RETRYABLE_STATUSES:
                raise IdPUnavailable(
                    f"The IdP's token endpoint {where} is unreachable (HTTP {status}).", KEPT_FIX
                ) from None
            raise IdPBusy(
                f"The IdP's token endpoint {where} is busy (HTTP {status}).",
                RETRY_FIX,
                retry_after=retry_after(e.response.headers),
            ) from None
        except httpx2.TimeoutException as e:
            raise IdPBusy(
                f"The IdP's token endpoint {where} is unreachable ({type(e).__name__}).",
                RETRY_FIX,
                retry_after=self.timeout,
            ) from None
        except httpx2.HTTPError as e:
            raise IdPUnavailable(
                f"The IdP's token endpoint {where} is unreachable ({type(e).__name__}).", KEPT_FIX
            ) from None
        except (ValueError, TypeError, KeyError) as e:
            raise IdPUnavailable(
                f"The IdP's token endpoint {where} answered something that is not an OAuth "
                f"token response ({type(e).__name__}).",
                "the stored token is kept; try again later or check the IdP",
            ) from None
        return parse_token_response(dict(raw))
