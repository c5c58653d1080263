"""Snowflake OAuth (JWT): the broker mints a short-lived RS256 JWT per connection use.

Claims as Snowflake's EXTERNAL_OAUTH integration expects them: ``iss`` the Jupyter URL,
``aud`` the configured JWT Audience, the user's email in the claim named by
EXTERNAL_OAUTH_TOKEN_USER_MAPPING_CLAIM (``email`` by default), the role in ``scp``
(``session:role:ANALYST``), 10 minutes of life and a unique ``jti``. The private key
never leaves the broker; its loaded form is cached per source.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..core.connections import ConnectionSpec
from ..core.errors import ConfigError

JWT_LIFETIME = 600
MISSING_KEY = "Private key is required for OAuth (JWT) authentication"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_key_fingerprint(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """Snowflake's RSA_PUBLIC_KEY_FP: ``SHA256:`` + base64 of the DER public key's hash."""
    pub = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    der = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()


@dataclass(frozen=True)
class MintedJWT:
    token: str
    expires_at: float
    jti: str

    def __repr__(self) -> str:
        return f"MintedJWT(jti={self.jti!r}, expires_at={self.expires_at!r})"


class JWTMinter:
    def __init__(self, issuer: str, stored_key: Callable[[str], bytes | None]) -> None:
        self.issuer = issuer
        self._stored_key = stored_key
        self._cache: dict[tuple[str, str, float], rsa.RSAPrivateKey] = {}

    def _pem(self, spec: ConnectionSpec) -> tuple[bytes, tuple[str, str, float]]:
        where = f"c.ConnAuth.connections[{spec.name!r}]"
        path = spec.extra.get("private_key_path")
        if path:
            p = Path(str(path)).expanduser()
            try:
                key = ("path", str(p), p.stat().st_mtime)
                if key in self._cache:  # unchanged since loaded: no need to read it again
                    return b"", key
                return p.read_bytes(), key
            except OSError as e:
                raise ConfigError(
                    f"{where}.private_key_path",
                    f"{MISSING_KEY}: the key file cannot be read ({e.strerror})",
                    "point private_key_path at the PEM file, readable by the Jupyter server",
                ) from None
        env = spec.extra.get("private_key_env")
        if env:
            value = os.environ.get(str(env), "")
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

    def private_key(self, spec: ConnectionSpec) -> rsa.RSAPrivateKey:
        pem, cache_key = self._pem(spec)
        key = self._cache.get(cache_key)
        if key is not None:
            return key
        try:
            loaded = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ConfigError(
                f"c.ConnAuth.connections[{spec.name!r}].private_key",
                "the private key is not an unencrypted PEM RSA key",
                "export it with: openssl pkcs8 -topk8 -nocrypt -in key.p8 -out key.pem",
            ) from None
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ConfigError(
                f"c.ConnAuth.connections[{spec.name!r}].private_key",
                "Snowflake External OAuth needs an RSA key",
                "generate one with: openssl genrsa 2048 | openssl pkcs8 -topk8 -nocrypt",
            )
        self._cache = {cache_key: loaded}  # one entry per connection is plenty
        return loaded

    def mint(self, spec: ConnectionSpec, email: str, now: float | None = None) -> MintedJWT:
        key = self.private_key(spec)
        now = time.time() if now is None else now
        role = spec.params.get("role")
        claims = {
            "iss": self.issuer,
            "aud": spec.extra["jwt_audience"],
            "sub": email,
            str(spec.extra.get("jwt_user_claim") or "email"): email,
            "scp": f"session:role:{role}" if role else "session:role-any",
            "iat": int(now),
            "nbf": int(now) - 5,
            "exp": int(now + JWT_LIFETIME),
            "jti": (jti := uuid.uuid4().hex),
        }
        header = {"alg": "RS256", "typ": "JWT"}
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return MintedJWT(signing_input + "." + _b64(signature), now + JWT_LIFETIME, jti)
