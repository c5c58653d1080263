"""One identity provider, as this client sees it: its discovery document and keys
(:mod:`.oidc`), its token endpoint (:mod:`.rfc6749`), revocation (:mod:`.rfc7009`).

Every request goes through one injectable httpx2 transport, or else the transports of
:mod:`.http` (the environment's proxies, ``SSL_CERT_FILE`` and ``ca_bundle``). The
client's authentication at the token endpoint is a
:class:`.rfc6749.ClientAuthentication`: given, or ``auth_method`` by name, or else the
flavour's choice among discovery's ``token_endpoint_auth_methods_supported``
(:meth:`.flavours.base.IdPFlavour.auth_method`), settled at the first request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2
from joserfc.jwk import KeySet

from . import oidc, rfc7009
from .flavours.base import IdPFlavour
from .http import idp_transports
from .rfc6749 import ClientAuthentication, TokenEndpoint, TokenResponse
from .rfc7523 import PrivateKeyJWT


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
        client_auth: ClientAuthentication | None = None,
        auth_method: str = "",
        private_key: PrivateKeyJWT | None = None,
        flavour: IdPFlavour | None = None,
        ca_bundle: str = "",
        allowed_tenants: tuple[str, ...] = (),
    ) -> None:
        self.discovery_url = discovery_url
        self.client_id = client_id
        self.timeout = timeout
        self.flavour = flavour or IdPFlavour()
        self.allowed_tenants = allowed_tenants
        self._secret = client_secret
        self._private_key = private_key
        self._auth_method = auth_method
        self._transports = idp_transports(ca_bundle=ca_bundle, transport=transport)
        self._http = httpx2.AsyncClient(timeout=timeout, **self._transports.client_kwargs())  # type: ignore[arg-type]
        self.discovery = oidc.Discovery(discovery_url, self._http, ttl=metadata_ttl)
        self.token_endpoint = TokenEndpoint(
            client_id,
            client_auth or ClientAuthentication("none"),
            transport=self._transports.transport,
            mounts=self._transports.mounts,
            timeout=timeout,
        )
        self._auth_settled = client_auth is not None

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._transports.aclose()

    @property
    def auth_method(self) -> str:
        """The client authentication in use (settled at the first request)."""
        return self.token_endpoint.auth.method

    def _settle_auth(self, meta: dict[str, Any]) -> None:
        method = self._auth_method or self.flavour.auth_method(
            meta, has_secret=bool(self._secret), has_key=self._private_key is not None
        )
        if method == "private_key_jwt":
            auth = ClientAuthentication(method, None, signer=self._private_key)
        elif method in ("client_secret_basic", "client_secret_post"):
            auth = ClientAuthentication(method, self._secret)
        else:
            auth = ClientAuthentication("none")
        self.token_endpoint.auth = auth
        self._auth_settled = True

    async def metadata(self) -> dict[str, Any]:
        meta = await self.discovery.metadata()
        if not self._auth_settled:
            self._settle_auth(meta)
        return meta

    async def jwks(self, *, force: bool = False) -> KeySet:
        return await self.discovery.jwks(force=force)

    async def authorization_url(
        self,
        *,
        redirect_uri: str,
        scopes: list[str],
        state: str,
        code_verifier: str,
        nonce: str,
        extra: Mapping[str, str],
    ) -> str:
        meta = await self.metadata()
        return self.token_endpoint.authorization_url(
            meta["authorization_endpoint"],
            redirect_uri=redirect_uri,
            scopes=scopes,
            state=state,
            code_verifier=code_verifier,
            extra={"nonce": nonce, **extra},
        )

    async def exchange_code(
        self, *, code: str, code_verifier: str, redirect_uri: str, extra: Mapping[str, str]
    ) -> TokenResponse:
        meta = await self.metadata()
        return await self.token_endpoint.exchange_code(
            meta["token_endpoint"],
            code=code,
            code_verifier=code_verifier,
            redirect_uri=redirect_uri,
            extra=extra,
        )

    async def refresh(
        self, *, refresh_token: str, scope: list[str] | None, extra: Mapping[str, str]
    ) -> TokenResponse:
        meta = await self.metadata()
        return await self.token_endpoint.refresh(
            meta["token_endpoint"], refresh_token=refresh_token, scope=scope, extra=extra
        )

    async def grant(self, grant_type: str, params: Mapping[str, str]) -> TokenResponse:
        """Any other grant at the token endpoint (token exchange, jwt-bearer)."""
        meta = await self.metadata()
        return await self.token_endpoint.request(meta["token_endpoint"], grant_type, params)

    async def revoke(self, token: str, hint: str) -> bool:
        """Revoke at the IdP when discovery advertises an endpoint. True if it said OK."""
        return await rfc7009.revoke_token(self.token_endpoint, await self.metadata(), token, hint)

    async def userinfo(self, access_token: str) -> dict[str, Any] | None:
        """UserInfo's claims for a fresh access token (:func:`.oidc.fetch_userinfo`)."""
        return await oidc.fetch_userinfo(self._http, await self.metadata(), access_token)

    async def verify_id_token(
        self, id_token: str, nonce: str | None, access_token: str | None = None
    ) -> dict[str, Any]:
        """The verified claims of an ID token (:func:`.oidc.verify_id_token`)."""
        return await oidc.verify_id_token(
            self.discovery,
            id_token,
            client_id=self.client_id,
            nonce=nonce,
            access_token=access_token,
            allowed_tenants=self.allowed_tenants,
        )
