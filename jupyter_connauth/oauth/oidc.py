"""OpenID Connect: discovery, the signing keys, the ID token, UserInfo and who signed in.

- Discovery 1.0 section 4: the provider's metadata, cached (last good copy kept when a
  refresh fails);
- the JWKS (``jwks_uri``), read again once when a token's key is unknown (rotation);
- Core 3.1.3.7: the ID token of the code flow, signed with an algorithm the provider
  announces (``id_token_signing_alg_values_supported``, never ``none``, never an HMAC
  keyed by the client secret), checked by authlib's :class:`CodeIDToken` claims
  (``iss``, ``aud``, ``exp``, ``iat``, ``nonce``, ``azp`` when there are several
  audiences, ``at_hash`` when present);
- Core 5.3: UserInfo; 5.4 and 5.3.2: the claims it may add;
- Core 3.1.2.1 and 11: the ``prompt`` a consent asks for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import httpx2
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwk import KeySet

from ..core.errors import ConfigError, IdPUnavailable
from .rfc6749 import OAuthProtocolError, strip_query

log = logging.getLogger(__name__)

#: Seconds of clock skew allowed on ``exp`` / ``iat``.
ID_TOKEN_LEEWAY = 120
#: Signature algorithms an ID token may use here: asymmetric ones (Core 10.1; an HMAC
#: would be keyed by the client secret, which this client does not verify with).
ASYMMETRIC_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class InvalidIDTokenError(OAuthProtocolError):
    error = "invalid_id_token"


class Discovery:
    """The provider's metadata and signing keys, fetched through ``http``."""

    def __init__(self, url: str, http: httpx2.AsyncClient, *, ttl: float = 3600.0) -> None:
        self.url = url
        self._http = http
        self._ttl = ttl
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: KeySet | None = None
        self._jwks_at = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._metadata is not None and time.monotonic() - self._metadata_at < self._ttl

    async def metadata(self) -> dict[str, Any]:
        if self._fresh():
            assert self._metadata is not None
            return self._metadata
        async with self._lock:
            if self._fresh():
                assert self._metadata is not None
                return self._metadata
            try:
                self._metadata = await self._fetch()
            except IdPUnavailable:
                if self._metadata is not None:  # keep serving the last good copy
                    log.warning("jupyter-connauth: discovery refresh failed; using cached copy")
                    return self._metadata
                raise
            self._metadata_at = time.monotonic()
            return self._metadata

    async def _fetch(self) -> dict[str, Any]:
        url = self.url
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
        if self._jwks is not None and not force and time.monotonic() - self._jwks_at < self._ttl:
            return self._jwks
        uri = (await self.metadata()).get("jwks_uri")
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


def id_token_algs(metadata: Mapping[str, Any]) -> list[str]:
    """The algorithms an ID token of this provider may be signed with: the asymmetric
    ones its discovery lists (Discovery 3: RS256 must be among them), else RS256."""
    listed = metadata.get("id_token_signing_alg_values_supported")
    algs = [a for a in listed if a in ASYMMETRIC_ALGS] if isinstance(listed, list) else []
    return algs or ["RS256"]


async def verify_id_token(
    discovery: Discovery,
    id_token: str,
    *,
    client_id: str,
    nonce: str | None,
    access_token: str | None = None,
    allowed_tenants: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The claims of an ID token from the token endpoint (Core 3.1.3.7), else
    :class:`InvalidIDTokenError` naming the check that failed (never the token).
    ``nonce`` None: the request carried none (RFC 8628's device authorization request
    has no nonce), so the token need not either.

    A multi-tenant issuer template (Entra's ``common``: ``…/{tenantid}/v2.0``) is
    filled with the token's ``tid``, for the tenants in ``allowed_tenants`` only."""
    meta = await discovery.metadata()
    algs = id_token_algs(meta)
    try:
        try:
            token = jwt.decode(id_token, await discovery.jwks(), algorithms=algs)
        except UnsupportedAlgorithmError:
            raise
        except JoseError:  # maybe a key the cached set does not have yet
            token = jwt.decode(id_token, await discovery.jwks(force=True), algorithms=algs)
        issuer = tenant_issuer(meta["issuer"], token.claims.get("tid"), allowed_tenants)
        claims = CodeIDToken(
            token.claims,
            token.header,
            options={
                "iss": {"essential": True, "value": issuer},
                "aud": {"essential": True, "values": [client_id]},
                **({"nonce": {"essential": True, "value": nonce}} if nonce else {}),
            },
            params={"client_id": client_id, "nonce": nonce, "access_token": access_token},
        )
        claims.validate(leeway=ID_TOKEN_LEEWAY)
    except UnsupportedAlgorithmError:
        raise InvalidIDTokenError(
            description="the ID token is signed with an algorithm the IdP does not announce "
            f"(allowed: {', '.join(algs)})"
        ) from None
    except JoseError as e:
        raise InvalidIDTokenError(
            description=f"the ID token failed validation ({e.error}: {e.description})"
        ) from None
    return dict(claims)


TENANT_TEMPLATE = "{tenantid}"


def tenant_issuer(issuer: str, tid: object, allowed: tuple[str, ...]) -> str:
    """The issuer an ID token must name: ``issuer`` itself, or for a template with
    ``{tenantid}`` the token's tenant's, when the admin allows that tenant."""
    if TENANT_TEMPLATE not in issuer:
        return issuer
    if not isinstance(tid, str) or not tid:
        raise InvalidIDTokenError(
            description="the ID token of a multi-tenant issuer has no tid claim"
        )
    if tid not in allowed:
        raise InvalidIDTokenError(
            description=f"the ID token is from tenant {tid}, which c.ConnAuth.allowed_tenants "
            "does not list"
        )
    return issuer.replace(TENANT_TEMPLATE, tid)


async def fetch_userinfo(
    http: httpx2.AsyncClient, metadata: Mapping[str, Any], access_token: str
) -> dict[str, Any] | None:
    """The UserInfo endpoint's claims for a fresh access token (Core 5.3).

    Core 5.4: with the code flow a provider may return the ``email`` scope's claims from
    UserInfo only, not in the ID token. None when discovery names no endpoint, or it
    refuses this token (Entra's tokens for a warehouse are not Graph tokens) or answers
    something other than JSON (a signed UserInfo JWT is not read here).
    """
    endpoint = metadata.get("userinfo_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        return None
    where = strip_query(endpoint)
    try:
        resp = await http.get(endpoint, headers={"Authorization": f"Bearer {access_token}"})
    except httpx2.HTTPError as e:
        log.warning("jupyter-connauth: UserInfo at %s failed (%s)", where, type(e).__name__)
        return None
    if resp.status_code != 200:
        log.info(
            "jupyter-connauth: UserInfo at %s answered HTTP %s for this token",
            where,
            resp.status_code,
        )
        return None
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# -- who signed in --------------------------------------------------------------------
#: Claims kept from the ID token (and UserInfo): who signed in, never a secret.
IDENTITY_CLAIMS = ("sub", "email", "preferred_username", "upn", "name", "iss")

_PROTOCOL_CLAIMS = frozenset({"aud", "azp", "nonce", "at_hash", "c_hash", "s_hash", "sid", "jti"})


def identity_from_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    """The identity to store from verified ID token claims."""
    identity = {c: v for c in IDENTITY_CLAIMS if isinstance(v := claims.get(c), str)}
    # No email from upn / preferred_username: some IdPs let users edit them. Keep the
    # other string claims (oid, tid, ...): c.ConnAuth.jwt_subject_claim may name one;
    # not the ID token's protocol claims.
    for claim, value in claims.items():
        if isinstance(value, str) and claim not in _PROTOCOL_CLAIMS:
            identity.setdefault(claim, value)
    if claims.get("email_verified") is False:
        identity.pop("email", None)
    return identity


def add_userinfo(identity: dict[str, str], info: Mapping[str, Any]) -> None:
    """Core 5.4: claims the provider returns from UserInfo only. 5.3.2: UserInfo's
    ``sub`` must be the ID token's, else its answer must not be used."""
    if info.get("sub") != identity.get("sub"):
        return
    email = info.get("email")
    if isinstance(email, str) and email and info.get("email_verified") is not False:
        identity.setdefault("email", email)
    for claim in ("preferred_username", "name"):
        value = info.get(claim)
        if isinstance(value, str):
            identity.setdefault(claim, value)


# -- the authentication request -------------------------------------------------------
class PromptRules(Protocol):
    """What a provider's authentication request needs besides the scopes: the
    ``prompt`` and the like. :func:`prompt_params` is plain OpenID Connect's; an IdP
    flavour with other rules passes its own function to the consent flows."""

    def __call__(
        self,
        scopes: list[str],
        params: Mapping[str, str],
        *,
        switch_account: bool,
        reason: str = "",
    ) -> dict[str, str]: ...


def prompt_params(
    scopes: list[str], params: Mapping[str, str], *, switch_account: bool, reason: str = ""
) -> dict[str, str]:
    """``params`` with the ``prompt`` plain OpenID Connect asks for: ``consent`` with
    ``offline_access`` (Core 11: else no refresh token), and ``login`` first when the
    user switches accounts (Core 3.1.2.1: the provider asks who signs in, even with a
    session). ``reason`` is why consent is asked (``first_use``, ``scopes_changed``,
    ...), for providers whose rules depend on it. A flavour whose provider has other
    rules passes its own function (:mod:`.flavours`)."""
    out = dict(params)
    if "offline_access" in scopes:
        out.setdefault("prompt", "consent")
    if switch_account:
        out["prompt"] = " ".join(dict.fromkeys(["login", *out.get("prompt", "").split()]))
    return out
