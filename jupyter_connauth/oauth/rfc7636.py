"""RFC 7636, Proof Key for Code Exchange: the verifier this client keeps server-side.

The S256 challenge itself is computed by authlib when the authorization URL is built
(:meth:`.rfc6749.TokenEndpoint.authorization_url`); ``plain`` is never used (RFC 9700
2.1.1).
"""

from __future__ import annotations

import secrets

from authlib.oauth2.rfc7636 import create_s256_code_challenge

__all__ = ["CODE_CHALLENGE_METHOD", "create_s256_code_challenge", "new_code_verifier"]

CODE_CHALLENGE_METHOD = "S256"


def new_code_verifier() -> str:
    """A high-entropy verifier (section 4.1: 43 to 128 unreserved characters): 86 here."""
    return secrets.token_urlsafe(64)
