"""Local Snowflake server for tests: fakesnow's HTTP server behind an External-OAuth check.

Runs in its own virtualenv (see setup_env.py), never in the project's venv:

    .cache/envs/fakesnow/bin/python tests/servers/snowflake/server.py --config cfg.json [--port 0]

prints ``READY <port>`` on stdout once it accepts connections.

What this adds on top of ``fakesnow.server.app`` (an ASGI wrapper, no fakesnow code copied):

* login (``/session/v1/login-request``) accepts only ``AUTHENTICATOR=OAUTH`` with an RS256 JWT that
  is checked the way a Snowflake EXTERNAL_OAUTH security integration checks it: signature against
  a JWKS URL or configured PEM public keys, ``exp``/``nbf``, ``iss``, ``aud``; user mapping by a
  claim to a user's LOGIN_NAME; session role from the ``session:role:R`` scope (or
  ``session:role-any``) and the user's grants. Failures answer with Snowflake's error codes.
* each session knows its user and role: per-connection DuckDB temp macros shadow
  ``CURRENT_USER()`` / ``CURRENT_ROLE()``, and a ``SALES`` view filters a hidden base table by
  ``CURRENT_USER()`` (a row access policy in effect).
* the login response carries the fields newer connectors require (masterToken, sessionId, ...).
* NULL timestamps are sent as null Arrow structs (fakesnow sends epoch 0 for them).
* session and master tokens with validity and renewal (``sf_sessions.py``): an expired
  session token gets 390112 and is renewed at ``/session/token-request`` with the master
  token; an idle session past the master token's validity gets 390114.
* ``GET /__test__/stats`` counts logins (sessions opened), statements, renewals.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import re
import secrets
import socket
import sys
import threading
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from typing import Any

import fakesnow.arrow
import fakesnow.server
import jwt
import pyarrow as pa
import pyarrow.compute as pc
import uvicorn
from sf_results import PENDING, ChunkSettings, Pending, ResultStore, send_raw
from sf_sessions import SessionTokens
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

# fakesnow's cursor warns about an extra Arrow copy on every query; it is server-side noise.
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")

# Snowflake's login error codes/messages, as the connector reports them (errno, msg).
ERR_INVALID_TOKEN = ("390303", "Invalid OAuth access token.")
ERR_TOKEN_EXPIRED = ("390318", "OAuth access token expired.")
ERR_BAD_USER = ("390100", "Incorrect username or password was specified.")
ERR_ROLE = (
    "390317",
    "The role requested in the connection or the default role if the primary role is not set, "
    "is not listed in the Access Token or was filtered by the Session Scope.",
)
ERR_USER_MISMATCH = (
    "390309",
    "The user you were trying to authenticate as differs from the user tied to the access token.",
)
ERR_AUTHENTICATOR = ("390102", "Authenticator is not supported for this account.")

HIDDEN_SCHEMA = "_CONNAUTH_PRIVATE"
PRIVATE_CATALOG = "_fs_global"  # fakesnow's own catalog: in no listing
DEFAULT_BLOCKED_ROLES = ["ACCOUNTADMIN", "ORGADMIN", "SECURITYADMIN"]

DEFAULT_SALES = [
    # region, amount, owner (a Snowflake user NAME)
    ("EMEA", 120.50, "ALICE"),
    ("AMER", 75.00, "ALICE"),
    ("APAC", 310.25, "ALICE"),
    ("EMEA", 42.00, "BOB"),
    ("AMER", 999.99, "BOB"),
]


# --------------------------------------------------------------------------------------------------
# config


class ConfigError(ValueError):
    pass


@dataclass
class Integration:
    """One EXTERNAL_OAUTH security integration."""

    name: str
    issuer: str
    audiences: list[str]
    jwks_url: str | None = None
    public_keys: list[str] = field(default_factory=list)
    user_mapping_claim: list[str] = field(default_factory=lambda: ["email"])
    user_mapping_attribute: str = "LOGIN_NAME"
    any_role_mode: str = "DISABLE"
    blocked_roles: list[str] = field(default_factory=lambda: list(DEFAULT_BLOCKED_ROLES))
    leeway: float = 0.0
    _keys: list[Any] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str) -> Integration:
        if not d.get("issuer"):
            raise ConfigError(f"integration {name}: 'issuer' is required")
        if not d.get("audiences"):
            raise ConfigError(f"integration {name}: 'audiences' (a non-empty list) is required")
        if not d.get("jwks_url") and not d.get("public_keys"):
            raise ConfigError(f"integration {name}: one of 'jwks_url' or 'public_keys' is required")
        claim = d.get("user_mapping_claim", "email")
        any_role = d.get("any_role_mode", "DISABLE")
        if isinstance(any_role, bool):
            any_role = "ENABLE" if any_role else "DISABLE"
        any_role = str(any_role).upper()
        if any_role not in ("DISABLE", "ENABLE", "ENABLE_FOR_PRIVILEGE"):
            raise ConfigError(
                f"integration {name}: any_role_mode must be DISABLE, ENABLE or ENABLE_FOR_PRIVILEGE"
            )
        attr = str(d.get("user_mapping_attribute", "LOGIN_NAME")).upper()
        if attr not in ("LOGIN_NAME", "EMAIL_ADDRESS"):
            raise ConfigError(
                f"integration {name}: user_mapping_attribute must be LOGIN_NAME or EMAIL_ADDRESS"
            )
        pems = d.get("public_keys") or []
        if isinstance(pems, str):
            pems = [pems]
        integ = cls(
            name=name,
            issuer=d["issuer"],
            audiences=[d["audiences"]] if isinstance(d["audiences"], str) else list(d["audiences"]),
            jwks_url=d.get("jwks_url"),
            public_keys=list(pems),
            user_mapping_claim=[claim] if isinstance(claim, str) else list(claim),
            user_mapping_attribute=attr,
            any_role_mode=any_role,
            blocked_roles=[r.upper() for r in d.get("blocked_roles", DEFAULT_BLOCKED_ROLES)],
            leeway=float(d.get("leeway", 0)),
        )
        for pem in integ.public_keys:
            try:
                integ._keys.append(jwt.algorithms.RSAAlgorithm.from_jwk(_pem_to_jwk(pem)))
            except Exception as e:
                raise ConfigError(f"integration {name}: bad RSA public key: {e}") from e
        return integ


def _pem_to_jwk(pem: str) -> str:
    """Load a PEM RSA public key (checks it really is RSA) and return it as a JWK JSON string."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, RSAPublicKey):
        raise ConfigError("not an RSA public key")
    return jwt.algorithms.RSAAlgorithm.to_jwk(key)


@dataclass
class User:
    name: str
    login_name: str
    email: str | None
    default_role: str | None
    roles: set[str]
    disabled: bool = False


@dataclass
class Config:
    integrations: list[Integration]
    users: dict[str, User]  # by upper-cased login name
    database: str = "CONNAUTH"
    schema: str = "PUBLIC"
    account: str = "connauth"
    sales_rows: list[tuple[str, float, str]] = field(default_factory=lambda: list(DEFAULT_SALES))
    seed_big_rows: int = 0
    session_validity: float = 3600
    master_validity: float = 14400

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        if "integrations" in d:
            integs = [
                Integration.from_dict(i, i.get("name", f"INTEGRATION_{n}"))
                for n, i in enumerate(d["integrations"])
            ]
        else:
            integs = [Integration.from_dict(d, d.get("integration_name", "EXTERNAL_OAUTH"))]
        users: dict[str, User] = {}
        for login, u in (d.get("users") or {}).items():
            roles = {r.upper() for r in u.get("roles", [])}
            default_role = u.get("default_role")
            if default_role:
                default_role = default_role.upper()
                roles.add(default_role)
            roles.add("PUBLIC")  # every user has PUBLIC
            users[login.upper()] = User(
                name=str(u.get("name", login)).upper(),
                login_name=login.upper(),
                email=u.get("email"),
                default_role=default_role,
                roles=roles,
                disabled=bool(u.get("disabled", False)),
            )
        rows = d.get("sales_rows")
        return cls(
            integrations=integs,
            users=users,
            database=str(d.get("database", "CONNAUTH")).upper(),
            schema=str(d.get("schema", "PUBLIC")).upper(),
            account=d.get("account", "connauth"),
            sales_rows=[tuple(r) for r in rows] if rows is not None else list(DEFAULT_SALES),
            seed_big_rows=int(d.get("seed_big_rows", 0)),
            session_validity=float(d.get("session_validity", 3600)),
            master_validity=float(d.get("master_validity", 14400)),
        )


# --------------------------------------------------------------------------------------------------
# token checks


class LoginError(Exception):
    def __init__(self, err: tuple[str, str], detail: str = "") -> None:
        super().__init__(f"{err[0]} {err[1]} ({detail})")
        self.code, self.message = err
        self.detail = detail


class JwksCache:
    """Fetches JWKS documents; refetches after ttl, or once (rate limited) for an unknown kid."""

    def __init__(self, ttl: float = 300.0, min_refetch: float = 1.0) -> None:
        self.ttl = ttl
        self.min_refetch = min_refetch
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[tuple[str | None, Any]]]] = {}

    def _fetch(self, url: str) -> list[tuple[str | None, Any]]:
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
        keys = []
        for k in doc.get("keys", []):
            if k.get("kty") != "RSA" or k.get("use", "sig") != "sig":
                continue
            keys.append((k.get("kid"), jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(k))))
        return keys

    def keys(self, url: str, kid: str | None) -> list[Any]:
        with self._lock:
            now = time.monotonic()
            entry = self._cache.get(url)
            stale = entry is None or now - entry[0] > self.ttl
            unknown_kid = (
                entry is not None and kid is not None and all(k != kid for k, _ in entry[1])
            )
            if stale or (unknown_kid and now - entry[0] > self.min_refetch):
                try:
                    entry = (now, self._fetch(url))
                    self._cache[url] = entry
                except Exception as e:
                    print(f"JWKS fetch from {url} failed: {e}", file=sys.stderr, flush=True)
                    if entry is None:
                        return []
            assert entry is not None
            if kid is None:
                return [k for _, k in entry[1]]
            return [k for key_id, k in entry[1] if key_id == kid]


@dataclass
class SessionInfo:
    user: User
    role: str
    scope_roles: set[str]
    role_any: bool
    integration: str


class Authenticator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.jwks = JwksCache()

    def _pick_integration(self, token: str) -> tuple[Integration, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise LoginError(ERR_INVALID_TOKEN, f"not a JWT: {e}") from e
        if header.get("alg") != "RS256":
            raise LoginError(ERR_INVALID_TOKEN, f"alg {header.get('alg')!r} is not RS256")
        iss = unverified.get("iss")
        for integ in self.config.integrations:
            if integ.issuer == iss:
                return integ, header
        # no integration trusts this issuer
        raise LoginError(ERR_INVALID_TOKEN, f"no integration for issuer {iss!r}")

    def verify(self, token: str) -> tuple[Integration, dict[str, Any]]:
        integ, header = self._pick_integration(token)
        keys = list(integ._keys)
        if integ.jwks_url:
            keys += self.jwks.keys(integ.jwks_url, header.get("kid"))
        if not keys:
            raise LoginError(ERR_INVALID_TOKEN, "no key matches the token's kid")
        last: Exception | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key=key,
                    algorithms=["RS256"],
                    audience=integ.audiences,
                    issuer=integ.issuer,
                    leeway=integ.leeway,
                    options={"require": ["exp", "iss", "aud"]},
                )
                return integ, claims
            except jwt.InvalidSignatureError as e:
                last = e
                continue
            except jwt.ExpiredSignatureError as e:
                raise LoginError(ERR_TOKEN_EXPIRED, str(e)) from e
            except jwt.PyJWTError as e:
                raise LoginError(ERR_INVALID_TOKEN, f"{type(e).__name__}: {e}") from e
        raise LoginError(ERR_INVALID_TOKEN, f"signature: {last}")

    def login(
        self, token: str | None, requested_role: str | None, login_name: str | None = None
    ) -> SessionInfo:
        if not token:
            raise LoginError(ERR_INVALID_TOKEN, "no token")
        integ, claims = self.verify(token)

        # user mapping: first mapping claim present in the token
        value = next(
            (claims[c] for c in integ.user_mapping_claim if isinstance(claims.get(c), str)), None
        )
        if value is None:
            raise LoginError(
                ERR_BAD_USER, f"token has none of the claims {integ.user_mapping_claim}"
            )
        user = None
        if integ.user_mapping_attribute == "LOGIN_NAME":
            user = self.config.users.get(value.upper())
        else:
            user = next(
                (
                    u
                    for u in self.config.users.values()
                    if u.email and u.email.lower() == value.lower()
                ),
                None,
            )
        if user is None or user.disabled:
            raise LoginError(ERR_BAD_USER, f"no user for {value!r}")
        if login_name and login_name.upper() != user.login_name:
            raise LoginError(
                ERR_USER_MISMATCH, f"connection user {login_name!r} != {user.login_name!r}"
            )

        # role from the scope
        scp = claims.get("scp", claims.get("scope", []))
        scopes = scp.split() if isinstance(scp, str) else [str(s) for s in scp]
        scope_roles = {
            s[len("session:role:") :].upper()
            for s in scopes
            if s.lower().startswith("session:role:")
        }
        role_any = integ.any_role_mode != "DISABLE" and any(
            s.lower() == "session:role-any" for s in scopes
        )

        if requested_role:
            role = _ident(requested_role)
        elif len(scope_roles) == 1 and not role_any:
            role = next(iter(scope_roles))
        else:
            role = user.default_role or "PUBLIC"
        in_scope = role_any or role in scope_roles
        if not in_scope or role not in user.roles or role in integ.blocked_roles:
            raise LoginError(
                ERR_ROLE, f"role {role!r}: in scope={in_scope}, granted={role in user.roles}"
            )
        return SessionInfo(
            user=user, role=role, scope_roles=scope_roles, role_any=role_any, integration=integ.name
        )


def _ident(name: str) -> str:
    """Snowflake identifier: unquoted upper-cases, double-quoted keeps case."""
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1].replace('""', '"')
    return name.upper()


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------------
# fakesnow patches


def _timestamp_to_sf_struct_with_nulls(ts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """fakesnow's timestamp -> Snowflake epoch/fraction struct conversion, but NULL stays NULL.

    fakesnow builds the struct without a validity bitmap, so a NULL timestamp reaches the client as
    a valid struct whose children are null/zero, which clients read as 1970-01-01.
    """
    if isinstance(ts, pa.ChunkedArray):
        ts = ts.combine_chunks()
    unit_per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[ts.type.unit]
    raw = ts.cast(pa.int64())
    filled = pc.fill_null(raw, 0)
    # floor division in exact integers (pc.divide truncates towards zero for ints)
    quot = pc.divide(filled, unit_per_s)
    rem = pc.subtract(filled, pc.multiply(quot, unit_per_s))
    negative = pc.less(rem, 0)
    epoch = pc.if_else(negative, pc.subtract(quot, 1), quot)
    rem = pc.if_else(negative, pc.add(rem, unit_per_s), rem)
    fraction = pc.multiply(rem, 1_000_000_000 // unit_per_s).cast(pa.int32())
    arrays = [epoch, fraction]
    fields = [
        pa.field("epoch", pa.int64(), nullable=False),
        pa.field("fraction", pa.int32(), nullable=False),
    ]
    if ts.type.tz:
        assert ts.type.tz == "UTC", f"Timezone {ts.type.tz} not yet supported"
        arrays.append(pa.array([1440] * len(ts), type=pa.int32()))
        fields.append(pa.field("timezone", pa.int32(), nullable=False))
    mask = pc.is_null(ts) if ts.null_count else None
    return pa.StructArray.from_arrays(arrays=arrays, fields=fields, mask=mask)


def _decimal_as_scaled_int64(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """decimal128(p<=18, s) -> int64 of the unscaled values: how Snowflake sends NUMBER(p,s).

    The low 64 bits of a little-endian decimal128 are the unscaled value when it fits in 64 bits.
    """
    import numpy as np

    chunks = []
    for arr in col.chunks:
        validity, data = arr.buffers()[0], arr.buffers()[1]
        n = arr.offset + len(arr)
        low = np.ascontiguousarray(
            np.frombuffer(data, dtype="<i8", count=2 * n).reshape(-1, 2)[:, 0]
        )
        chunks.append(
            pa.Array.from_buffers(
                pa.int64(), len(arr), [validity, pa.py_buffer(low)], arr.null_count, arr.offset
            )
        )
    return pa.chunked_array(chunks, type=pa.int64())


def _to_sf_with_snowflake_numbers(table: pa.Table, rowtype: list[Any]) -> pa.Table:
    cols = []
    for col in table.columns:
        if pa.types.is_decimal128(col.type) and col.type.precision <= 18:
            col = _decimal_as_scaled_int64(col)
        cols.append(col)
    table = pa.Table.from_arrays(cols, names=table.column_names)
    return _original_to_sf(table, rowtype)


_original_to_sf = fakesnow.arrow.to_sf


def patch_fakesnow() -> None:
    # fakesnow.arrow.to_sf looks the function up in its module globals at call time
    fakesnow.arrow.timestamp_to_sf_struct = _timestamp_to_sf_struct_with_nulls
    # fakesnow.server imported to_sf by name; rowtype still carries precision/scale as metadata
    fakesnow.server.to_sf = _to_sf_with_snowflake_numbers


# --------------------------------------------------------------------------------------------------
# seeding


def seed(config: Config) -> None:
    """Create the demo database objects in fakesnow's shared in-memory DuckDB."""
    fs = fakesnow.server.shared_fs
    conn = fs.connect(
        config.database, config.schema
    )  # creates database + schema like a login would
    duck = conn._duck_conn
    db, sch = config.database, config.schema
    # The base table lives in fakesnow's internal catalog, which SHOW DATABASES / SCHEMAS
    # and every INFORMATION_SCHEMA leave out: as in Snowflake, where INFORMATION_SCHEMA
    # "displays only objects for which the current role has been granted access privileges"
    # (docs.snowflake.com/en/sql-reference/info-schema), an analyst never sees it listed.
    hidden = f"{PRIVATE_CATALOG}.{HIDDEN_SCHEMA}"
    duck.execute(f"CREATE SCHEMA IF NOT EXISTS {hidden}")
    duck.execute(
        f"CREATE OR REPLACE TABLE {hidden}.SALES_BASE "
        "(REGION VARCHAR, AMOUNT DECIMAL(12,2), OWNER VARCHAR)"
    )
    if config.sales_rows:
        duck.executemany(f"INSERT INTO {hidden}.SALES_BASE VALUES (?, ?, ?)", config.sales_rows)
    # The row access policy: CURRENT_USER() resolves to the session's temp macro (see bind_session);
    # a connection without one (the seeding connection) gets DuckDB's built-in, matching no owner.
    duck.execute(
        f"CREATE OR REPLACE VIEW {db}.{sch}.SALES AS "
        f"SELECT REGION, AMOUNT, OWNER FROM {hidden}.SALES_BASE "
        "WHERE OWNER = current_user()"
    )
    if config.seed_big_rows > 0:
        duck.execute(
            f"""CREATE OR REPLACE TABLE {db}.{sch}.BIG AS
            SELECT
                i::BIGINT AS ID,
                CASE WHEN i % 17 = 0 THEN NULL ELSE (i * 7) % 1000 END::INTEGER AS QTY,
                (i * 0.37)::DOUBLE AS PRICE,
                CASE WHEN i % 11 = 0 THEN NULL ELSE 'name_' || (i % 5000)::VARCHAR END AS NAME,
                ['alpha', 'beta', 'gamma', 'delta'][(i % 4) + 1] AS CATEGORY,
                CASE WHEN i % 13 = 0 THEN NULL
                     ELSE TIMESTAMP '2024-01-01 00:00:00' + to_microseconds(i * 1000003)
                END AS CREATED_AT,
                (DATE '2020-01-01' + (i % 2000)::INTEGER) AS DAY,
                ((i % 100000) / 100.0)::DECIMAL(12,2) AS AMOUNT,
                (i % 3 = 0) AS FLAG,
                CASE WHEN i % 7 = 0 THEN NULL ELSE 'note ' || i::VARCHAR END AS NOTE
            FROM range({config.seed_big_rows}) t(i)"""
        )
    conn.close()


# --------------------------------------------------------------------------------------------------
# the ASGI wrapper


_GUARD_HIDDEN = re.compile(r"_connauth_private|sales_base|_fs_global", re.I)
_GUARD_DUCK = re.compile(
    r"\b(macro|getvariable|set\s+variable)\b|^\s*(attach|detach|pragma|load|install|force\s+install)\b",
    re.I,
)
_GUARD_SHADOW = re.compile(
    r"\b(create|alter|drop)\b.*\b(function|procedure)\b.*\bcurrent_(user|role|available_roles|secondary_roles)\b",
    re.I | re.S,
)
_USE_ROLE = re.compile(r"^\s*use\s+role\s+(\"(?:[^\"]|\"\")+\"|[A-Za-z_][\w$]*)\s*;?\s*$", re.I)


class ConnAuthApp:
    """ASGI app: OAuth-checked login and per-session identity in front of fakesnow's app."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.inner = fakesnow.server.app
        self.auth = Authenticator(config)
        self.sessions: dict[str, SessionInfo] = {}
        # QUERY_TAG per session (a session parameter set at login: Snowflake shows it in
        # QUERY_HISTORY for every statement of the session), and per query, in order
        self.session_tags: dict[str, str | None] = {}
        self.query_tags: list[str | None] = []
        self.logins = 0
        self.failed_logins = 0
        self.queries = 0
        self._session_ids = itertools.count(1_000_000_001)
        self.debug = False
        self.telemetry = 0
        self.results = ResultStore(ChunkSettings())
        self.tokens = SessionTokens(config.session_validity, config.master_validity)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if self.debug:
            print(
                f"{method} {path}?{scope.get('query_string', b'').decode()}",
                file=sys.stderr,
                flush=True,
            )
        if path == "/session/v1/login-request" and method == "POST":
            resp = await self.login(Request(scope, receive))
            return await resp(scope, receive, send)
        if path == "/__test__/issuer" and method == "POST":
            # Runtime knob: an admin edits EXTERNAL_OAUTH_ISSUER of one integration (ALTER
            # SECURITY INTEGRATION); tokens of the old issuer then fail login with 390303.
            body = json.loads(await Request(scope, receive).body() or b"{}")
            for integ in self.config.integrations:
                if integ.name == body.get("name"):
                    integ.issuer = str(body.get("issuer"))
            resp = JSONResponse({"ok": True})
            return await resp(scope, receive, send)
        if path == "/__test__/stats" and method == "GET":
            resp = JSONResponse(
                {
                    "logins": self.logins,
                    "sessions_opened": self.logins,
                    "failed_logins": self.failed_logins,
                    "active_sessions": len(self.sessions),
                    "queries": self.queries,
                    "statements": self.queries,
                    "query_tags": self.query_tags,
                    **self.tokens.stats(),
                    **self.results.stats(),
                }
            )
            return await resp(scope, receive, send)
        if path == "/session/token-request" and method == "POST":
            resp = await self.token_request(Request(scope, receive))
            return await resp(scope, receive, send)
        if path in _SESSION_PATHS or path.startswith("/monitoring/"):
            refused = self.tokens.check(_session_token(scope))
            if refused is not None:  # before anything runs: the driver renews, sends again
                await _read_body(receive)
                return await _error_response(refused, authn=None)(scope, receive, send)
        if path == "/telemetry/send" and method == "POST":
            # the connector posts client telemetry after queries; accept and drop it
            await _read_body(receive)
            self.telemetry += 1
            resp = JSONResponse(
                {"data": "Log Received", "code": None, "message": None, "success": True}
            )
            return await resp(scope, receive, send)
        if path == "/queries/v1/query-request" and method == "POST":
            body = await _read_body(receive)
            resp = self.check_query(scope, body)
            if resp is not None:
                return await resp(scope, receive, send)
            self.queries += 1
            self.query_tags.append(self.session_tags.get(_session_token(scope) or ""))
            try:
                return await self.query_with_chunks(scope, _replay(body, receive), send)
            finally:
                self.tokens.touch(_session_token(scope))  # a long query is activity
        if path.startswith("/__results__/") and method == "GET":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            if self.results.settings.chunk_delay:  # a slow object store (tests of Ctrl-C)
                await asyncio.sleep(self.results.settings.chunk_delay)
            status, out, blob = self.results.serve(path, scope.get("query_string", b""), headers)
            return await send_raw(send, status, out, blob)
        if path == "/session" and method == "POST":
            # logout: forget our side of the session too
            req = Request(scope, receive)
            if req.query_params.get("delete"):
                self.sessions.pop(_session_token(scope) or "", None)
                self.tokens.forget(_session_token(scope) or "")
        return await self.inner(scope, receive, send)

    # ---- results: large ones as chunk URLs (sf_results.py)

    async def query_with_chunks(self, scope: dict, receive: Any, send: Any) -> None:
        host = dict(scope["headers"]).get(b"host", b"127.0.0.1").decode()
        pending = Pending(base_url=f"http://{host}")
        token = PENDING.set(pending)
        start: dict[str, Any] = {}
        parts: list[bytes] = []
        try:

            async def capture(msg: dict) -> None:
                if msg["type"] == "http.response.start":
                    start.update(msg)
                    return
                parts.append(msg.get("body", b""))
                if msg.get("more_body"):
                    return
                body = b"".join(parts)
                if pending.chunks:
                    payload = json.loads(body)
                    payload["data"]["chunks"] = pending.chunks
                    payload["data"]["chunkHeaders"] = pending.headers
                    body = json.dumps(payload).encode()
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})

            await self.inner(scope, receive, capture)
        finally:
            PENDING.reset(token)

    # ---- login

    async def login(self, request: Request) -> JSONResponse:
        body = await request.body()
        raw = gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body
        try:
            data = json.loads(raw)["data"]
        except Exception:
            return _error_response(
                ("390100", "Incorrect username or password was specified."), status=400
            )
        authenticator = str(data.get("AUTHENTICATOR", "")).upper()
        try:
            if authenticator != "OAUTH":
                raise LoginError(ERR_AUTHENTICATOR, f"authenticator {authenticator!r}")
            # JWKS fetches block: keep them off the event loop
            info = await run_in_threadpool(
                self.auth.login,
                data.get("TOKEN"),
                request.query_params.get("roleName") or None,
                data.get("LOGIN_NAME") or None,
            )
        except LoginError as e:
            self.failed_logins += 1
            print(f"login rejected: {e}", file=sys.stderr, flush=True)
            return _error_response((e.code, e.message), authn=authenticator)

        # let fakesnow create its session (a DuckDB connection), then bind our identity to it
        scope = dict(request.scope)
        scope["query_string"] = _drop_params(
            request.scope.get("query_string", b""), {"roleName", "warehouse"}
        )
        inner_resp = await fakesnow.server.login_request(Request(scope, _replay(body, None)))
        payload = json.loads(inner_resp.body)
        token = payload["data"]["token"]
        conn = fakesnow.server.sessions[token]
        self.bind_session(conn, info)
        self.sessions[token] = info
        self.session_tags[token] = (data.get("SESSION_PARAMETERS") or {}).get("QUERY_TAG")
        self.logins += 1

        d = payload["data"]
        d["sessionId"] = next(self._session_ids)
        d["masterToken"] = self.tokens.login(token, d["sessionId"])
        d["validityInSeconds"] = _seconds(self.config.session_validity)
        d["masterValidityInSeconds"] = _seconds(self.config.master_validity)
        d["idToken"] = None
        d["healthCheckInterval"] = 45
        d["newClientForUpgrade"] = None
        d["displayUserName"] = info.user.name
        d.setdefault("sessionInfo", {})
        d["sessionInfo"].update({"roleName": info.role, "warehouseName": None})
        d["parameters"].append({"name": "TIMEZONE", "value": "Etc/UTC"})
        return JSONResponse(payload)

    async def token_request(self, request: Request) -> JSONResponse:
        """``/session/token-request`` RENEW with the master token (``sf_sessions.py``)."""
        body = await request.body()
        raw = gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body
        try:
            data = json.loads(raw)
        except ValueError:
            data = {}
        if data.get("requestType", "RENEW") != "RENEW":
            return _error_response(("390111", "Unsupported token request type."), authn=None)
        outcome = self.tokens.renew(_session_token(request.scope))
        if len(outcome) == 2:
            return _error_response(outcome, authn=None)
        old, new, tokens = outcome
        # the session (DuckDB connection, identity) moves to the new token; the old is void
        conn = fakesnow.server.sessions.pop(old, None)
        if conn is not None:
            fakesnow.server.sessions[new] = conn
        info = self.sessions.pop(old, None)
        if info is not None:
            self.sessions[new] = info
        left = _seconds(tokens.master_expires - time.time())
        return JSONResponse(
            {
                "data": {
                    "sessionToken": new,
                    "validityInSecondsST": _seconds(self.config.session_validity),
                    "masterToken": tokens.master,
                    "validityInSecondsMT": left,
                    "masterValidityInSeconds": left,
                    "sessionId": tokens.session_id,
                },
                "code": None,
                "message": None,
                "success": True,
            }
        )

    @staticmethod
    def bind_session(conn: Any, info: SessionInfo) -> None:
        duck = conn._duck_conn
        duck.execute(f"CREATE OR REPLACE TEMP MACRO current_user() AS {_sql_str(info.user.name)}")
        duck.execute(f"CREATE OR REPLACE TEMP MACRO current_role() AS {_sql_str(info.role)}")

    # ---- queries

    def check_query(self, scope: dict, body: bytes) -> JSONResponse | None:
        token = _session_token(scope)
        info = self.sessions.get(token or "")
        if info is None:
            return None  # fakesnow answers 390104 / 390103 for unknown sessions
        try:
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
            sql = json.loads(raw).get("sqlText") or ""
        except Exception:
            return None
        if m := _GUARD_HIDDEN.search(sql):
            return _query_error(
                "002003",
                "42S02",
                f"SQL compilation error:\nObject '{m.group(0).upper()}' "
                "does not exist or not authorized.",
            )
        if (m := _GUARD_DUCK.search(sql)) or (m := _GUARD_SHADOW.search(sql)):
            return _query_error(
                "001003",
                "42000",
                "SQL compilation error:\nsyntax error line 1 at position "
                f"{m.start()} unexpected '{m.group(0).split()[0]}'.",
            )
        if m := _USE_ROLE.match(sql):
            role = _ident(m.group(1))
            if role not in info.user.roles or not (info.role_any or role in info.scope_roles):
                return _query_error(
                    "002003",
                    "02000",
                    f"SQL compilation error:\nRole '{role}' does not exist or not authorized.",
                )
            info.role = role
            conn = fakesnow.server.sessions.get(token or "")
            if conn is not None:
                self.bind_session(conn, info)
        return None


def _seconds(value: float) -> int:
    """Validity as the drivers parse it: whole seconds (sf_core wants an unsigned int)."""
    return max(0, round(value))


#: Requests made with the session token (checked for its validity first).
_SESSION_PATHS = frozenset(
    ("/queries/v1/query-request", "/queries/v1/abort-request", "/session", "/session/heartbeat")
)


def _session_token(scope: dict) -> str | None:
    for k, v in scope["headers"]:
        if k.lower() == b"authorization":
            m = re.match(r'Snowflake Token="(.*)"', v.decode())
            return m.group(1) if m else None
    return None


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    done = False

    async def _receive() -> dict:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        if receive is None:
            await asyncio.Event().wait()  # never: no disconnect for an in-process call
        return await receive()

    return _receive


def _drop_params(qs: bytes, names: set[str]) -> bytes:
    from urllib.parse import parse_qsl, urlencode

    return urlencode([(k, v) for k, v in parse_qsl(qs.decode()) if k not in names]).encode()


def _error_response(
    err: tuple[str, str], authn: str | None = "OAUTH", status: int = 200
) -> JSONResponse:
    code, message = err
    return JSONResponse(
        {
            "data": {
                "nextAction": None,
                "authnMethod": authn or None,
                "signInOptions": {},
                "errorCode": code,
            },
            "code": code,
            "message": message,
            "success": False,
            "headers": None,
        },
        status_code=status,
    )


def _query_error(code: str, sqlstate: str, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "data": {"errorCode": code, "sqlState": sqlstate, "queryId": _query_id()},
            "code": code,
            "message": message,
            "success": False,
        }
    )


def _query_id() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


# --------------------------------------------------------------------------------------------------
# main


def build_app(config_dict: dict[str, Any]) -> ConnAuthApp:
    config = Config.from_dict(config_dict)
    patch_fakesnow()
    seed(config)
    app = ConnAuthApp(config)
    app.results = ResultStore(ChunkSettings.from_dict(config_dict))
    fakesnow.server.to_ipc = app.results.to_ipc
    return app


async def _serve(app: ConnAuthApp, sock: socket.socket, log_level: str) -> None:
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=log_level, access_log=log_level == "debug", lifespan="off")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.005)
    print(f"READY {sock.getsockname()[1]}", flush=True)
    await task


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="JSON config file ('-' for stdin)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--port", type=int, default=0, help="0 picks a free port (printed as READY <port>)"
    )
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    raw = sys.stdin.read() if args.config == "-" else open(args.config, encoding="utf-8").read()
    try:
        app = build_app(json.loads(raw))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP.
    # With proto 0 the accepted sockets kept Nagle on, and uvicorn's two sends per
    # response (headers, body) met the client's delayed ACK: a ~40 ms stall whenever a
    # connection sent its next request soon after the last response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    sock.set_inheritable(True)
    app.debug = args.log_level == "debug"
    asyncio.run(_serve(app, sock, args.log_level))


if __name__ == "__main__":
    main()
