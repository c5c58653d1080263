"""RFC 7523 section 2.2, JWT client authentication: ``private_key_jwt``.

The client proves itself with a short-lived JWT signed by its private key
(``client_assertion``, ``client_assertion_type`` in the request body; OpenID Connect
Core 9): ``iss`` = ``sub`` = the client id, ``aud`` = the token endpoint, a unique
``jti``, five minutes of life. Signed with joserfc; the key never leaves this process.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LIFETIME = 300


class PrivateKeyJWT:
    """An authlib client-auth method (``name`` + call) that appends the assertion."""

    name = "private_key_jwt"

    def __init__(self, key: RSAKey | ECKey, *, kid: str | None = None) -> None:
        self._key = key
        self.alg = "ES256" if isinstance(key, ECKey) else "RS256"
        self.kid = kid or key.thumbprint()

    def __repr__(self) -> str:
        return f"PrivateKeyJWT(alg={self.alg!r}, kid={self.kid!r})"

    def assertion(self, client_id: str, audience: str) -> str:
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + LIFETIME,
        }
        return jwt.encode({"alg": self.alg, "kid": self.kid}, claims, self._key)

    def __call__(
        self, auth: Any, method: str, uri: str, headers: Any, body: str | bytes | None
    ) -> tuple[str, Any, str]:
        text = body.decode() if isinstance(body, bytes) else (body or "")
        extra = urlencode(
            {
                "client_id": auth.client_id,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(auth.client_id, uri.split("?", 1)[0]),
            }
        )
        return uri, headers, f"{text}&{extra}" if text else extra


def load_private_key(pem: bytes) -> RSAKey | ECKey:
    """An RSA or EC private key from PEM (ValueError otherwise)."""
    for cls in (RSAKey, ECKey):
        try:
            key = cls.import_key(pem)
        except Exception:  # noqa: S112 - try the next key type
            continue
        if key.is_private:
            return key
    raise ValueError("not an RSA or EC private key in PEM")
