"""A local Google Security Token Service (STS) for Workforce Identity Federation tests.

Implements ``POST /v1/token`` as documented for sts.googleapis.com
(cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token): an RFC 8693 token
exchange of a token from an external IdP (the test IdP) for a Google access token of a
workforce pool principal. It checks what Google checks: the audience names a known,
enabled workforce pool provider (cloud.google.com/iam/docs/reference/rest/v1/
locations.workforcePools.providers), the subject token is a JWT signed by a key of the
provider's issuer (its JWKS), its ``iss`` is the provider's issuer URI, its ``aud`` the
provider's client id, it is not expired, the attribute condition accepts it and the
attribute mapping yields a ``google.subject``
(cloud.google.com/iam/docs/workforce-identity-federation#attribute-mappings,
#attribute-conditions). Minted tokens are opaque (``ya29.`` like Google's); the local
BigQuery asks ``/__test__/tokeninfo`` what one stands for (Google resolves its tokens
internally).

Run: ``python server.py --config cfg.json [--parent-pid PID]``; prints ``READY <port>``.
Never prints token values.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TYPES = (
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:jwt",
    ACCESS_TOKEN,
)
WORKFORCE_AUDIENCE = re.compile(
    r"^//iam\.googleapis\.com/locations/global/workforcePools/([^/]+)/providers/([^/]+)$"
)
GOOGLE_SCOPES = {
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/bigquery",
    "https://www.googleapis.com/auth/bigquery.readonly",
}
# Google's documented / observed answers (see README.md for their sources).
BAD_AUDIENCE = (
    'Invalid value for "audience". This value should be the full resource name of the '
    "Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/"
    "TopLevel/token for the list of possible formats."
)
UNKNOWN_TARGET = (
    'The target service indicated by the "audience" parameters is invalid. This might '
    "either be because the pool or provider is disabled or deleted or because it doesn't "
    "exist."
)
CONDITION_REJECTED = "The given credential is rejected by the attribute condition."


class STSError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


# ------------------------------------------------------------------ CEL subset


_EQ = re.compile(r"^assertion\.(\w+)\s*==\s*('([^']*)'|\"([^\"]*)\"|true|false)$")
_IN = re.compile(r"^'([^']*)'\s+in\s+assertion\.(\w+)$")


def condition_holds(condition: str | None, assertion: dict[str, Any]) -> bool:
    """The subset of CEL this server evaluates: terms ``assertion.X == 'v'`` (or
    true/false) and ``'v' in assertion.X``, joined by ``&&``."""
    if not condition:
        return True
    for term in (t.strip() for t in condition.split("&&")):
        if m := _EQ.match(term):
            want: Any = {"true": True, "false": False}.get(m.group(2), m.group(3) or m.group(4))
            if assertion.get(m.group(1)) != want:
                return False
        elif m := _IN.match(term):
            values = assertion.get(m.group(2))
            if not isinstance(values, list) or m.group(1) not in values:
                return False
        else:
            raise ValueError(f"unsupported attribute condition term: {term!r}")
    return True


def map_attributes(mapping: dict[str, str], assertion: dict[str, Any]) -> dict[str, Any]:
    """``{"google.subject": "assertion.email"}`` -> ``{"google.subject": "alice@..."}``."""
    out: dict[str, Any] = {}
    for target, expr in mapping.items():
        m = re.fullmatch(r"assertion\.(\w+)", expr.strip())
        if not m:
            raise ValueError(f"unsupported attribute mapping {target}={expr}")
        value = assertion.get(m.group(1))
        if value not in (None, "", []):
            out[target] = value
    return out


# ------------------------------------------------------------------ state


class State:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self.token_ttl = int(cfg.get("token_ttl", 3600))
        self.providers: dict[str, dict[str, Any]] = {}
        for audience, p in (cfg.get("providers") or {}).items():
            self.set_provider(audience, p)
        self.tokens: dict[str, dict[str, Any]] = {}
        self.jwks: dict[str, jwt.PyJWKClient] = {}
        self.reset()

    def reset(self) -> None:
        self.stats: dict[str, Any] = {"exchanges": 0, "errors": {}, "log": []}

    def set_provider(self, audience: str, p: dict[str, Any]) -> None:
        if not WORKFORCE_AUDIENCE.match(audience):
            raise SystemExit(f"provider {audience!r} is not a workforce pool provider name")
        self.providers[audience] = {
            "issuer": p["issuer"],
            "client_id": p["client_id"],
            "jwks_url": p.get("jwks_url"),
            "attribute_mapping": dict(
                p.get("attribute_mapping") or {"google.subject": "assertion.sub"}
            ),
            "attribute_condition": p.get("attribute_condition"),
            "disabled": bool(p.get("disabled", False)),
        }

    def jwks_client(self, provider: dict[str, Any]) -> jwt.PyJWKClient:
        url = provider["jwks_url"]
        if not url:
            disc = provider["issuer"].rstrip("/") + "/.well-known/openid-configuration"
            with urllib.request.urlopen(disc, timeout=10) as resp:
                url = json.loads(resp.read())["jwks_uri"]
            provider["jwks_url"] = url
        if url not in self.jwks:
            self.jwks[url] = jwt.PyJWKClient(url, cache_keys=True, lifespan=300)
        return self.jwks[url]

    # -- the exchange --------------------------------------------------------
    def exchange(self, form: dict[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != GRANT:
            raise STSError("unsupported_grant_type", "Unsupported grant type.")
        if form.get("requested_token_type") != ACCESS_TOKEN:
            raise STSError("invalid_request", 'Invalid value for "requested_token_type".')
        stt = form.get("subject_token_type")
        if stt not in SUBJECT_TYPES:
            raise STSError("invalid_request", 'Invalid value for "subject_token_type".')
        if not form.get("subject_token"):
            raise STSError("invalid_request", 'Missing required parameter "subject_token".')
        audience = form.get("audience", "")
        m = WORKFORCE_AUDIENCE.match(audience)
        if not m:
            raise STSError("invalid_request", BAD_AUDIENCE)
        provider = self.providers.get(audience)
        if provider is None or provider["disabled"]:
            raise STSError("invalid_target", UNKNOWN_TARGET)
        scopes = (form.get("scope") or "").split()
        bad = [s for s in scopes if s not in GOOGLE_SCOPES]
        if bad:
            raise STSError("invalid_scope", f"Invalid scope: {' '.join(bad)}.")
        user_project = None
        if form.get("options"):
            try:
                options = json.loads(form["options"])
                user_project = options.get("userProject")
            except (ValueError, AttributeError):
                raise STSError("invalid_request", 'Invalid value for "options".') from None
        claims = self.verify(form["subject_token"], provider)
        try:
            admitted = condition_holds(provider["attribute_condition"], claims)
            attrs = map_attributes(provider["attribute_mapping"], claims)
        except ValueError as e:
            raise STSError("invalid_request", str(e)) from None
        if not admitted:
            raise STSError("unauthorized_client", CONDITION_REJECTED)
        subject = attrs.get("google.subject")
        if not isinstance(subject, str) or not subject:
            raise STSError(
                "invalid_request",
                "The mapped attribute google.subject must not be empty: check the provider's "
                f"attribute mapping ({provider['attribute_mapping'].get('google.subject')}).",
            )
        if len(subject.encode()) > 127:
            raise STSError("invalid_request", "The mapped google.subject exceeds 127 bytes.")
        pool = m.group(1)
        token = "ya29.d." + secrets.token_urlsafe(48)
        now = time.time()
        with self.lock:
            self.tokens[token] = {
                "principal": f"principal://iam.googleapis.com/locations/global/workforcePools/{pool}/subject/{subject}",
                "pool": pool,
                "subject": subject,
                "attributes": attrs,
                "scope": " ".join(scopes),
                "user_project": user_project,
                "exp": now + self.token_ttl,
            }
        return {
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": self.token_ttl,
        }

    def verify(self, token: str, provider: dict[str, Any]) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise STSError("invalid_grant", "Unable to parse the ID Token.") from None
        if unverified.get("iss") != provider["issuer"]:
            raise STSError(
                "invalid_grant",
                f"The issuer in ID Token {unverified.get('iss')} does not match the expected "
                f"ID Provider {provider['issuer']} .",
            )
        aud = unverified.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if provider["client_id"] not in auds:
            raise STSError(
                "invalid_grant",
                f"The audience in ID Token [{', '.join(map(str, auds))}] does not match the "
                "expected audience.",
            )
        try:
            key = self.jwks_client(provider).get_signing_key(header.get("kid"))
            return dict(
                jwt.decode(
                    token,
                    key.key,
                    algorithms=["RS256", "ES256"],
                    audience=provider["client_id"],
                    issuer=provider["issuer"],
                    options={"require": ["exp", "iat"]},
                )
            )
        except jwt.ExpiredSignatureError:
            raise STSError("invalid_grant", "ID Token has expired.") from None
        except (jwt.PyJWTError, OSError, KeyError, ValueError) as e:
            raise STSError("invalid_grant", f"Invalid ID Token: {type(e).__name__}.") from None

    def tokeninfo(self, token: str) -> dict[str, Any]:
        with self.lock:
            info = self.tokens.get(token)
        if info is None or info["exp"] <= time.time():
            return {"active": False}
        return {"active": True, **info}


# ------------------------------------------------------------------ HTTP


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            sys.stdout.write(f"{self.command} {urlsplit(self.path).path}\n")
            sys.stdout.flush()

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> tuple[str, bytes]:
            n = int(self.headers.get("Content-Length") or 0)
            return self.headers.get("Content-Type", ""), self.rfile.read(n)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/__test__/stats":
                with state.lock:
                    return self._json(200, state.stats)
            if url.path == "/__test__/tokeninfo":
                token = parse_qs(url.query).get("access_token", [""])[0]
                return self._json(200, state.tokeninfo(token))
            self._json(404, {"error": {"code": 404, "status": "NOT_FOUND"}})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            ctype, raw = self._body()
            if url.path == "/__test__/reset":
                with state.lock:
                    state.reset()
                return self._json(200, {})
            if url.path == "/__test__/provider":
                body = json.loads(raw or b"{}")
                with state.lock:
                    state.set_provider(body.pop("audience"), body)
                return self._json(200, {})
            if url.path != "/v1/token":
                return self._json(404, {"error": {"code": 404, "status": "NOT_FOUND"}})
            if "application/json" in ctype:
                form = {k: str(v) for k, v in json.loads(raw or b"{}").items()}
                # the JSON body uses the proto names (grantType, subjectToken, ...)
                form = {re.sub(r"([A-Z])", r"_\1", k).lower(): v for k, v in form.items()}
            else:
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            entry = {
                "audience": form.get("audience"),
                "subject_token_type": form.get("subject_token_type"),
                "requested_token_type": form.get("requested_token_type"),
                "scope": form.get("scope"),
                "options": form.get("options"),
                "authorization_header": bool(self.headers.get("Authorization")),
            }
            try:
                body = state.exchange(form)
                status, entry["error"] = 200, None
            except STSError as e:
                status, entry["error"] = e.status, e.error
                body = {"error": e.error, "error_description": e.description}
            with state.lock:
                state.stats["exchanges"] += 1
                if entry["error"]:
                    errs = state.stats["errors"]
                    errs[entry["error"]] = errs.get(entry["error"], 0) + 1
                state.stats["log"].append(entry)
                del state.stats["log"][:-100]
            print(f"token status={status} error={entry['error']}", flush=True)
            self._json(status, body)

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--parent-pid", type=int)
    args = ap.parse_args()
    with open(args.config, encoding="utf-8") as f:
        cfg = json.load(f)
    state = State(cfg)
    server = ThreadingHTTPServer(
        (cfg.get("host", "127.0.0.1"), int(cfg.get("port", 0))), make_handler(state)
    )
    server.daemon_threads = True
    if args.parent_pid:

        def watch() -> None:
            while True:
                time.sleep(1)
                try:
                    os.kill(args.parent_pid, 0)
                except OSError:
                    os._exit(0)

        threading.Thread(target=watch, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
