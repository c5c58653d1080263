"""Bearer-token checks of the local Databricks SQL warehouse (test only).

Mirrors Databricks OAuth token federation: a federation policy accepts JWTs from one
issuer with one (or more) audiences, signed by a key of the issuer's JWKS; the
subject claim names the Databricks user, who must exist in the workspace.

* no/invalid/expired/wrong-issuer/wrong-audience token -> HTTP 401
* valid token whose subject is not a workspace user     -> HTTP 403
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import jwt


class AuthError(Exception):
    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass
class Identity:
    email: str
    name: str
    claims: dict[str, Any] = field(default_factory=dict)


INVALID_TOKEN = "Invalid access token."
NO_CREDENTIAL = "Credential was not sent or was of an unsupported type for this API."


class _Jwks:
    """JWKS cache: refetched when a token names an unknown kid (at most every 5 s)."""

    def __init__(self, url: str | None, inline: dict | None) -> None:
        self._url = url
        self._inline = inline
        self._keys: dict[str | None, Any] = {}
        self._fetched = 0.0
        self._lock = threading.Lock()
        if inline:
            self._load(inline)

    def _load(self, doc: dict) -> None:
        keys: dict[str | None, Any] = {}
        for k in doc.get("keys", []):
            if k.get("use", "sig") != "sig":
                continue
            try:
                keys[k.get("kid")] = jwt.PyJWK(k).key
            except jwt.PyJWTError:
                continue
        self._keys = keys

    def _fetch(self) -> None:
        if not self._url:
            return
        req = urllib.request.Request(self._url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            self._load(json.loads(resp.read()))
        self._fetched = time.monotonic()

    def key_for(self, kid: str | None) -> Any:
        with self._lock:
            if not self._fetched and self._url:
                self._fetch()
            if kid not in self._keys and self._url and time.monotonic() - self._fetched > 5:
                self._fetch()
            if kid in self._keys:
                return self._keys[kid]
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
        raise AuthError(401, INVALID_TOKEN, f"no key for kid {kid!r} in the issuer's JWKS")


class TokenVerifier:
    """Config keys: jwks_url | jwks, issuer, audience (str or list), subject_claim,
    leeway_s, users {email: {name}}, static_tokens {token: email}."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.issuer = cfg.get("issuer")
        aud = cfg.get("audience")
        self.audience = [aud] if isinstance(aud, str) else list(aud or [])
        self.subject_claim = cfg.get("subject_claim")  # None: email, else sub
        self.leeway = float(cfg.get("leeway_s", 0))
        self.algorithms = list(cfg.get("algorithms", ["RS256"]))
        self.users: dict[str, dict[str, Any]] = {
            k.lower(): dict(v or {}) for k, v in (cfg.get("users") or {}).items()
        }
        self.static_tokens: dict[str, str] = dict(cfg.get("static_tokens") or {})
        self._jwks = _Jwks(cfg.get("jwks_url"), cfg.get("jwks"))
        # Tokens minted by our /oidc/v1/token exchange (Databricks OAuth tokens).
        self.own_issuer = "connauth-test-databricks/oidc"
        self._secret = secrets.token_bytes(32)
        self.exchange_ttl = int(cfg.get("exchange_token_ttl_s", 3600))
        self.accept_idp_tokens = bool(cfg.get("accept_idp_tokens_directly", True))
        # A careless warehouse (or proxy) that quotes the rejected token in its error:
        # what the client's redaction must catch whatever the token's shape.
        self.echo_rejected_token = bool(cfg.get("echo_rejected_token", False))
        # Runtime knob (POST /__test__/not_before): IdP tokens issued before this time
        # are rejected, as after a federation policy change or a token revoked at the
        # IdP (Databricks answers 401 for a token its policy no longer accepts:
        # https://docs.databricks.com/en/dev-tools/auth/oauth-federation.html).
        self.not_before = 0.0
        if not (cfg.get("jwks_url") or cfg.get("jwks") or self.static_tokens):
            raise ValueError("config needs jwks_url (or jwks, or static_tokens)")
        if (cfg.get("jwks_url") or cfg.get("jwks")) and not (self.issuer and self.audience):
            raise ValueError("config needs issuer and audience with jwks_url")

    def authenticate(self, authorization: str | None) -> Identity:
        try:
            return self._authenticate(authorization)
        except AuthError as e:
            if not (self.echo_rejected_token and authorization):
                raise
            token = authorization.split(None, 1)[-1]
            raise AuthError(e.status, f"{e.reason} Rejected token {token}", e.detail) from None

    def _authenticate(self, authorization: str | None) -> Identity:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError(401, NO_CREDENTIAL, "no bearer token")
        token = authorization[7:].strip()
        if token in self.static_tokens:
            return self._user(self.static_tokens[token], {})
        own = self._verify_own(token)
        if own is not None:
            return self._user(own["sub"], own)
        if not self.accept_idp_tokens:
            raise AuthError(401, INVALID_TOKEN, "IdP tokens must be exchanged at /oidc/v1/token")
        claims = self._verify(token)
        return self._user(self._subject(claims), claims)

    def _subject(self, claims: dict[str, Any]) -> str:
        claim = self.subject_claim or ("email" if claims.get("email") else "sub")
        subject = claims.get(claim)
        if not isinstance(subject, str) or not subject:
            raise AuthError(401, INVALID_TOKEN, f"token has no {claim!r} claim")
        return subject

    def _verify_own(self, token: str) -> dict[str, Any] | None:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        if unverified.get("iss") != self.own_issuer:
            return None
        try:
            return jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=self.own_issuer,
                audience="databricks-sql",
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, INVALID_TOKEN, "Databricks token expired") from None
        except jwt.PyJWTError as e:
            raise AuthError(401, INVALID_TOKEN, f"Databricks token rejected: {e}") from None

    def exchange(self, form: dict[str, str]) -> dict[str, Any]:
        """RFC 8693 token exchange as Databricks' ``/oidc/v1/token`` does for token
        federation: a JWT accepted by the federation policy -> a Databricks token.
        Raises AuthError(400, ...) with an OAuth error code as reason."""
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
            raise AuthError(400, "unsupported_grant_type", "only token-exchange is supported")
        if form.get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt":
            raise AuthError(400, "invalid_request", "subject_token_type must be a JWT")
        try:
            claims = self._verify(form.get("subject_token", ""))
            subject = self._subject(claims)
        except AuthError as e:
            raise AuthError(400, "invalid_request", e.detail or e.reason) from None
        now = int(time.time())
        exp = min(int(claims["exp"]), now + self.exchange_ttl)
        token = jwt.encode(
            {
                "iss": self.own_issuer,
                "aud": "databricks-sql",
                "sub": subject,
                "iat": now,
                "exp": exp,
                "scope": form.get("scope", "sql"),
            },
            self._secret,
            algorithm="HS256",
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": exp - now,
            "scope": form.get("scope", "sql"),
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        }

    def _verify(self, token: str) -> dict[str, Any]:
        if not self.audience:
            raise AuthError(401, INVALID_TOKEN, "no federation policy configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise AuthError(401, INVALID_TOKEN, f"malformed token: {e}") from None
        key = self._jwks.key_for(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, INVALID_TOKEN, "token expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError(
                401, INVALID_TOKEN, "audience not accepted by any federation policy"
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthError(
                401, INVALID_TOKEN, "issuer not accepted by any federation policy"
            ) from None
        except jwt.PyJWTError as e:
            raise AuthError(401, INVALID_TOKEN, f"token rejected: {e}") from None
        if float(claims.get("iat") or 0) < self.not_before:
            raise AuthError(401, INVALID_TOKEN, "token rejected: issued before the policy change")
        return claims

    def _user(self, subject: str, claims: dict[str, Any]) -> Identity:
        entry = self.users.get(subject.lower())
        if entry is None:
            raise AuthError(
                403,
                f"PERMISSION_DENIED: User {subject} is not a member of this workspace.",
                "unknown user",
            )
        return Identity(email=subject.lower(), name=str(entry.get("name", subject)), claims=claims)
