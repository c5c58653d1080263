"""Snowflake OAuth (JWT): the broker mints a short-lived RS256 JWT per connection use.

Claims as Snowflake's EXTERNAL_OAUTH integration expects them: ``iss`` the stable
``c.ConnAuth.jwt_issuer``, ``aud`` the configured JWT Audience, the user's subject in
``sub`` and in the claim named by EXTERNAL_OAUTH_TOKEN_USER_MAPPING_CLAIM (the
connection's ``jwt_user_claim``, ``email`` by default), the role in ``scp``
(``session:role:ANALYST``), 10 minutes of life and a unique ``jti``; the header names
the key by its RFC 7638 thumbprint (``kid``). Signed with joserfc.

Whoever reads the private key can mint a token for any Snowflake user, so minting runs
only where notebook users cannot read the key: the JupyterHub service, or a
single-user server whose admin opted in (``c.ConnAuth.allow_jwt_signing_as_user``).
The subject is a verified claim the admin names (``c.ConnAuth.jwt_subject_claim``),
never something the user can type or edit.

A parsed key is cached per connection (parsing an RSA key costs ~40 ms) and parsing
and signing run on a worker thread, off the event loop (:meth:`JWTMinter.amint`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from ..core.connections import ConnectionSpec
from ..core.errors import ConfigError, NoSubject, SigningRefused
from .environ import private_key_from_env

JWT_LIFETIME = 600
MISSING_KEY = "Private key is required for OAuth (JWT) authentication"
OPT_IN = "c.ConnAuth.allow_jwt_signing_as_user"


def public_key_fingerprint(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """Snowflake's RSA_PUBLIC_KEY_FP: ``SHA256:`` + base64 of the DER public key's hash."""
    pub = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    der = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()


def signing_refusal(config: Any, isolated: bool) -> SigningRefused | None:
    """Why this broker may not mint Snowflake JWTs, or None when it may.

    ``isolated``: the broker runs where notebook users cannot read its files (the hub
    service). Elsewhere (a single-user server, a kernel) the process runs as the user.
    """
    if isolated or getattr(config, "allow_jwt_signing_as_user", False):
        return None
    return SigningRefused(
        "Snowflake OAuth (JWT) is off on this server: it runs as you, so whoever can run "
        "code here could read the signing key and mint a Snowflake token for any user.",
        "run the broker as the JupyterHub service (docs/jupyterhub.md), where users cannot "
        f"read the key; or, for a server only trusted people use, set {OPT_IN} = True "
        "knowingly; or use auth 'oauth' with the IdP's own Snowflake tokens",
    )


def jwt_subject(claims: Mapping[str, Any], claim: str, connection: str) -> str:
    """The JWT's subject: the named claim of the user's verified identity."""
    value = claims.get(claim)
    if claim == "email" and claims.get("email_verified") is False:
        value = None
    if isinstance(value, str) and value.strip():
        return value
    what = "a verified email" if claim == "email" else f"the claim {claim!r}"
    raise NoSubject(
        f"The identity provider did not give {what} for you, so no Snowflake token can "
        f"be minted for {connection!r}.",
        f"the IdP must return {what} in the ID token (add the scope / claim to the IdP "
        "app), then authorize again; or the admin names another immutable claim in "
        "c.ConnAuth.jwt_subject_claim (e.g. oid or sub, mapped to the Snowflake LOGIN_NAME)",
        code="no_email" if claim == "email" else None,
    )


@dataclass(frozen=True)
class MintedJWT:
    token: str
    expires_at: float
    jti: str

    def __repr__(self) -> str:
        return f"MintedJWT(jti={self.jti!r}, expires_at={self.expires_at!r})"


@dataclass(frozen=True)
class _Loaded:
    source: tuple[str, str, float]
    key: RSAKey
    kid: str


class JWTMinter:
    def __init__(self, issuer: str, stored_key: Callable[[str], bytes | None]) -> None:
        self.issuer = issuer
        self._stored_key = stored_key
        self._keys: dict[str, _Loaded] = {}  # connection name → its parsed key
        self._lock = threading.Lock()

    def _pem(self, spec: ConnectionSpec) -> tuple[bytes, tuple[str, str, float]]:
        """The PEM (empty when the cached key is still current) and where it came from."""
        where = f"c.ConnAuth.connections[{spec.name!r}]"
        cached = self._keys.get(spec.name)
        path = spec.extra.get("private_key_path")
        if path:
            p = Path(str(path)).expanduser()
            try:
                source = ("path", str(p), p.stat().st_mtime)
                if cached is not None and cached.source == source:
                    return b"", source  # unchanged since loaded: no need to read it again
                return p.read_bytes(), source
            except OSError as e:
                raise ConfigError(
                    f"{where}.private_key_path",
                    f"{MISSING_KEY}: the key file cannot be read ({e.strerror})",
                    "point private_key_path at the PEM file, readable by the Jupyter server",
                ) from None
        env = spec.extra.get("private_key_env")
        if env:
            value = private_key_from_env(str(env))
            if not value.strip():
                raise ConfigError(
                    f"{where}.private_key_env",
                    f"{MISSING_KEY}: the environment variable {env} is empty",
                    f"set {env} to the PEM private key in the Jupyter server's environment",
                )
            return value.encode(), ("env", str(env), float(hash(value)))
        stored = self._stored_key(spec.name)
        if stored:
            return stored, ("stored", spec.name, float(hash(stored)))
        raise ConfigError(
            f"{where}.private_key_path",
            MISSING_KEY,
            "upload the private key in the connection's form, or set private_key_path or "
            "private_key_env in the connection",
        )

    def _loaded(self, spec: ConnectionSpec) -> _Loaded:
        pem, source = self._pem(spec)
        cached = self._keys.get(spec.name)
        if cached is not None and cached.source == source:
            return cached
        field = f"c.ConnAuth.connections[{spec.name!r}].private_key"
        try:
            raw = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ConfigError(
                field,
                "the private key is not an unencrypted PEM RSA key",
                "export it with: openssl pkcs8 -topk8 -nocrypt -in key.p8 -out key.pem",
            ) from None
        if not isinstance(raw, rsa.RSAPrivateKey):
            raise ConfigError(
                field,
                "Snowflake External OAuth needs an RSA key",
                "generate one with: openssl genrsa 2048 | openssl pkcs8 -topk8 -nocrypt",
            )
        try:
            key = RSAKey.import_key(raw)
        except JoseError:  # pragma: no cover - cryptography accepted it
            raise ConfigError(field, "the RSA key cannot be used for RS256") from None
        loaded = _Loaded(source, key, key.thumbprint())
        with self._lock:
            self._keys[spec.name] = loaded
        return loaded

    def private_key(self, spec: ConnectionSpec) -> rsa.RSAPrivateKey:
        key = self._loaded(spec).key.private_key
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    def kid(self, spec: ConnectionSpec) -> str:
        """The key's RFC 7638 thumbprint, the ``kid`` of every JWT minted with it."""
        return self._loaded(spec).kid

    def mint(self, spec: ConnectionSpec, subject: str, now: float | None = None) -> MintedJWT:
        loaded = self._loaded(spec)
        now = time.time() if now is None else now
        role = spec.params.get("role")
        claims = {
            "iss": self.issuer,
            "aud": spec.extra["jwt_audience"],
            "sub": subject,
            str(spec.extra.get("jwt_user_claim") or "email"): subject,
            "scp": f"session:role:{role}" if role else "session:role-any",
            "iat": int(now),
            "nbf": int(now) - 5,
            "exp": int(now + JWT_LIFETIME),
            "jti": (jti := uuid.uuid4().hex),
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": loaded.kid}
        token = jwt.encode(header, claims, loaded.key, algorithms=["RS256"])
        return MintedJWT(token, now + JWT_LIFETIME, jti)

    async def amint(self, spec: ConnectionSpec, subject: str) -> MintedJWT:
        """:meth:`mint` on a worker thread: key reading, parsing and signing block."""
        return await asyncio.to_thread(self.mint, spec, subject)
