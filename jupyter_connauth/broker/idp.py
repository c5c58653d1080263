"""Talking to the IdP: discovery, JWKS, the token endpoint, UserInfo and revocation.

Every request goes through one injectable httpx2 transport. Errors come out as
:class:`IdPUnavailable` (no answer, 5xx, garbage) or :class:`OAuthProtocolError`
(a proper OAuth error answer), with no token, code or secret in their text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..core.errors import ConfigError, IdPBusy, IdPUnavailable

log = logging.getLogger(__name__)


def strip_query(url: str) -> str:
    """Log-safe URL: codes and tokens live in query strings."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


#: OAuth errors and HTTP statuses that mean "try again later" (RFC 6749 5.2, RFC 8628 3.5).
RETRYABLE_ERRORS = ("temporarily_unavailable", "slow_down")
RETRYABLE_STATUSES = (429, 503)
RETRY_FIX = "the stored token is kept; try again in a moment (after Retry-After seconds)"


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


class OAuthProtocolError(Exception):
    """The IdP answered with an OAuth error (RFC 6749 5.2)."""

    def __init__(self, error: str, description: str | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


@dataclass
class TokenResponse:
    access_token: str
    expires_at: float | None
    refresh_token: str | None
    token_type: str
    scope: tuple[str, ...] | None
    id_token: str | None

    def __repr__(self) -> str:
        return f"TokenResponse(expires_at={self.expires_at!r}, scope={self.scope!r})"


class IdPClient:
    """One IdP (OpenID discovery URL + client credentials)."""

    def __init__(
        self,
        discovery_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
        metadata_ttl: float = 3600.0,
    ) -> None:
        self.discovery_url = discovery_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.timeout = timeout
        self._transport = transport or httpx2.AsyncHTTPTransport(retries=1)
        self._http = httpx2.AsyncClient(transport=self._transport, timeout=timeout)
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._metadata_ttl = metadata_ttl
        self._jwks: KeySet | None = None
        self._jwks_at = 0.0
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- discovery ---------------------------------------------------------------
    async def metadata(self) -> dict[str, Any]:
        if self._metadata is not None and time.monotonic() - self._metadata_at < self._metadata_ttl:
            return self._metadata
        async with self._lock:
            if self._metadata is not None and (
                time.monotonic() - self._metadata_at < self._metadata_ttl
            ):
                return self._metadata
            try:
                self._metadata = await self._fetch_metadata()
            except IdPUnavailable:
                if self._metadata is not None:  # keep serving the last good copy
                    log.warning("jupyter-connauth: discovery refresh failed; using cached copy")
                    return self._metadata
                raise
            self._metadata_at = time.monotonic()
            return self._metadata

    async def _fetch_metadata(self) -> dict[str, Any]:
        url = self.discovery_url
        fix = "check c.ConnAuth.discovery_url and that the IdP is reachable from the server"
        try:
            resp = await self._http.get(url)
        except httpx2.HTTPError as e:
            raise IdPUnavailable(
                f"The IdP's discovery document at {strip_query(url)} is unreachable "
                f"({type(e).__name__}).",
                fix,
            ) from None
        if resp.status_code != 200:
            raise IdPUnavailable(
                f"The IdP's discovery document at {strip_query(url)} answered "
                f"HTTP {resp.status_code}.",
                fix,
            )
        try:
            data = resp.json()
        except ValueError:
            data = None
        required = ("issuer", "authorization_endpoint", "token_endpoint")
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in required):
            raise ConfigError(
                "c.ConnAuth.discovery_url",
                f"{strip_query(url)} is not an OpenID discovery document",
                "use the URL ending in /.well-known/openid-configuration",
            )
        return data

    async def jwks(self, *, force: bool = False) -> KeySet:
        if self._jwks is not None and not force and time.monotonic() - self._jwks_at < 3600:
            return self._jwks
        meta = await self.metadata()
        uri = meta.get("jwks_uri")
        if not uri:
            raise IdPUnavailable("The IdP's discovery document has no jwks_uri.")
        try:
            resp = await self._http.get(uri)
            resp.raise_for_status()
            self._jwks = KeySet.import_key_set(resp.json())
        except (httpx2.HTTPError, ValueError, JoseError) as e:
            raise IdPUnavailable(
                f"The IdP's signing keys at {strip_query(uri)} could not be read "
                f"({type(e).__name__})."
            ) from None
        self._jwks_at = time.monotonic()
        return self._jwks

    # -- the OAuth client --------------------------------------------------------
    def _oauth(self, redirect_uri: str | None = None) -> AsyncOAuth2Client:
        # A short-lived client per operation (authlib keeps per-token state on it);
        # the transport, and so the connection pool, is shared.
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret or None,
            token_endpoint_auth_method="client_secret_post" if self.client_secret else "none",
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            transport=self._transport,
            timeout=self.timeout,
        )

    async def authorization_url(
        self,
        *,
        redirect_uri: str,
        scopes: list[str],
        state: str,
        code_verifier: str,
        nonce: str,
        extra: dict[str, str],
    ) -> str:
        meta = await self.metadata()
        client = self._oauth(redirect_uri)
        url, _ = client.create_authorization_url(
            meta["authorization_endpoint"],
            state=state,
            code_verifier=code_verifier,
            scope=" ".join(scopes),
            nonce=nonce,
            **extra,
        )
        return str(url)

    async def _token_call(self, what: str, **kwargs: Any) -> TokenResponse:
        meta = await self.metadata()
        client = self._oauth(kwargs.pop("redirect_uri", None))
        endpoint = meta["token_endpoint"]
        answer: list[httpx2.Response] = []  # the raw answer, for its Retry-After

        def keep(resp: httpx2.Response) -> httpx2.Response:
            answer.append(resp)
            return resp

        for hook in ("access_token_response", "refresh_token_response"):
            client.register_compliance_hook(hook, keep)
        try:
            if what == "refresh":
                raw = await client.refresh_token(endpoint, **kwargs)
            else:
                raw = await client.fetch_token(endpoint, **kwargs)
        except OAuthError as e:
            if e.error in RETRYABLE_ERRORS:
                raise IdPBusy(
                    f"The IdP's token endpoint {strip_query(endpoint)} asks to retry later "
                    f"({e.error}).",
                    RETRY_FIX,
                    retry_after=retry_after(answer[-1].headers if answer else None),
                ) from None
            raise OAuthProtocolError(e.error or "invalid_request", e.description) from None
        except httpx2.HTTPStatusError as e:
            if e.response.status_code not in RETRYABLE_STATUSES:
                raise IdPUnavailable(
                    f"The IdP's token endpoint {strip_query(endpoint)} is unreachable "
                    f"(HTTP {e.response.status_code}).",
                    "the stored token is kept; try again when the IdP is back",
                ) from None
            raise IdPBusy(
                f"The IdP's token endpoint {strip_query(endpoint)} is busy "
                f"(HTTP {e.response.status_code}).",
                RETRY_FIX,
                retry_after=retry_after(e.response.headers),
            ) from None
        except httpx2.TimeoutException as e:
            raise IdPBusy(
                f"The IdP's token endpoint {strip_query(endpoint)} is unreachable "
                f"({type(e).__name__}).",
                RETRY_FIX,
                retry_after=self.timeout,
            ) from None
        except httpx2.HTTPError as e:
            raise IdPUnavailable(
                f"The IdP's token endpoint {strip_query(endpoint)} is unreachable "
                f"({type(e).__name__}).",
                "the stored token is kept; try again when the IdP is back",
            ) from None
        except (ValueError, TypeError, KeyError) as e:
            raise IdPUnavailable(
                f"The IdP's token endpoint {strip_query(endpoint)} answered something that is "
                f"not an OAuth token response ({type(e).__name__}).",
                "the stored token is kept; try again later or check the IdP",
            ) from None
        return self._parse(dict(raw))

    @staticmethod
    def _parse(raw: dict[str, Any]) -> TokenResponse:
        access = raw.get("access_token")
        if not isinstance(access, str) or not access:
            if raw.get("error"):
                raise OAuthProtocolError(str(raw["error"]), raw.get("error_description"))
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
        scope = raw.get("scope")
        return TokenResponse(
            access_token=access,
            expires_at=expires_at,
            refresh_token=raw.get("refresh_token") or None,
            token_type=str(raw.get("token_type") or "Bearer"),
            scope=tuple(scope.split()) if isinstance(scope, str) else None,
            id_token=raw.get("id_token") if isinstance(raw.get("id_token"), str) else None,
        )

    async def exchange_code(
        self, *, code: str, code_verifier: str, redirect_uri: str, extra: dict[str, str]
    ) -> TokenResponse:
        return await self._token_call(
            "code",
            grant_type="authorization_code",
            code=code,
            code_verifier=code_verifier,
            redirect_uri=redirect_uri,
            **extra,
        )

    async def refresh(
        self, *, refresh_token: str, scope: list[str] | None, extra: dict[str, str]
    ) -> TokenResponse:
        kwargs: dict[str, Any] = dict(extra)
        if scope:
            kwargs["scope"] = " ".join(scope)
        return await self._token_call("refresh", refresh_token=refresh_token, **kwargs)

    async def grant(self, grant_type: str, params: dict[str, str]) -> TokenResponse:
        """Any other grant at the token endpoint (token exchange, jwt-bearer)."""
        return await self._token_call("grant", grant_type=grant_type, **params)

    async def revoke(self, token: str, hint: str) -> bool:
        """Revoke at the IdP when discovery advertises an endpoint. True if it said OK."""
        meta = await self.metadata()
        endpoint = meta.get("revocation_endpoint")
        if not endpoint:
            return False
        client = self._oauth()
        try:
            resp = await client.revoke_token(endpoint, token=token, token_type_hint=hint)
        except httpx2.HTTPError:
            log.warning("jupyter-connauth: revocation at %s failed", strip_query(endpoint))
            return False
        return bool(resp.status_code == 200)

    async def userinfo(self, access_token: str) -> dict[str, Any] | None:
        """The UserInfo endpoint's claims for a fresh access token (OpenID Connect Core 5.3).

        Core 5.4: with the code flow an IdP may return the ``email`` scope's claims from
        UserInfo only, not in the ID token. None when discovery names no endpoint, or it
        refuses this token (Entra's tokens for a warehouse are not Graph tokens) or
        answers something other than JSON (a signed UserInfo JWT is not read here).
        """
        meta = await self.metadata()
        endpoint = meta.get("userinfo_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            return None
        try:
            resp = await self._http.get(
                endpoint, headers={"Authorization": f"Bearer {access_token}"}
            )
        except httpx2.HTTPError as e:
            log.warning(
                "jupyter-connauth: UserInfo at %s failed (%s)",
                strip_query(endpoint),
                type(e).__name__,
            )
            return None
        if resp.status_code != 200:
            log.info(
                "jupyter-connauth: UserInfo at %s answered HTTP %s for this token",
                strip_query(endpoint),
                resp.status_code,
            )
            return None
        try:
            data = resp.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """Signature (JWKS), issuer, audience, expiry and nonce of an ID token."""
        meta = await self.metadata()
        try:
            keys = await self.jwks()
            try:
                token = jwt.decode(id_token, keys)
            except JoseError:
                token = jwt.decode(id_token, await self.jwks(force=True))
            claims = token.claims
            registry = jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": meta["issuer"]},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
                leeway=120,
            )
            registry.validate(claims)
        except JoseError as e:
            raise OAuthProtocolError(
                "invalid_id_token", f"the ID token failed validation ({e.error})"
            ) from None
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if self.client_id not in auds:
            raise OAuthProtocolError("invalid_id_token", "the ID token is for another client")
        return dict(claims)
