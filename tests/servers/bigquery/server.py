"""Local BigQuery test server: bqemulator behind a Google-style OAuth check.

Runs in its own venv (see ``setup_env.py``), never in the project's venv:

    .cache/envs/bqemulator/bin/python tests/servers/bigquery/server.py --config cfg.json

Prints ``GRPC <port>`` then ``READY <port>`` (the REST port) on stdout once
both the REST and gRPC (Storage Read/Write API) endpoints accept traffic.

What this wrapper adds to bqemulator (see README.md for the config keys):

* every REST request and every gRPC call must carry ``Authorization: Bearer
  <JWT>``; the JWT is verified (RS256) against the IdP's JWKS, issuer,
  audience and expiry.  Failure -> 401 with Google's error body.
* the caller's identity (claim ``email`` by default) is taken from the
  verified token only: client-supplied ``X-Bqemu-Caller`` / ``X-Bqemu-Groups``
  headers are dropped and replaced, so ``SESSION_USER()`` and row access
  policies see the token's user.
* a per-user dataset allow-list (``users``): jobs.create in the project,
  dataset/table REST resources and the tables a query references are
  checked -> 403 ``accessDenied`` like BigQuery's.
* jobs are owned by the user who created them; another user's job is
  reported as not found.
* ``GET /__test__/stats`` (and ``POST /__test__/reset``) counters, and the labels of
  every query job (``job_labels``, in order).
* bytes processed (config ``table_bytes``: ``{"dataset.table": bytes}``, what a query
  reading that table processes; bqemulator has no cost model and says 0): a dry run
  answers their sum as ``totalBytesProcessed``, and a job whose
  ``maximumBytesBilled`` is below it fails before running with BigQuery's
  ``bytesBilledLimitExceeded`` ("Query exceeded limit for bytes billed: M. N or higher
  required."; cloud.google.com/bigquery/docs/best-practices-costs, "Limit query costs
  by restricting the number of bytes billed").
* seeds: ``demo.sales`` with a row access policy ``owner = SESSION_USER()``
  and an optional big mixed-type table for benchmarks.
* DuckDB never downloads extensions (bqemulator would INSTALL spatial/avro
  from the internet at start).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import inspect
import json
import os
import re
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, unquote

import bq_results
import bqemulator.server as bq_server_mod
import grpc
import jwt
import sqlglot
from bqemulator.config import LogLevel, Settings
from bqemulator.server import EmulatorServer
from bqemulator.storage.engine import DuckDBEngine
from sqlglot import exp

# --------------------------------------------------------------------------
# Messages (modelled on the real service's wording)
# --------------------------------------------------------------------------

UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access "
    "token, login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)

CALLER_HEADERS = {b"x-bqemu-caller", b"x-bqemu-groups"}

DEFAULT_DEMO_ROWS = [
    ["EMEA", 100.0, "alice@example.com"],
    ["AMER", 250.5, "alice@example.com"],
    ["APAC", 75.25, "bob@example.com"],
    ["EMEA", 300.0, "bob@example.com"],
    ["AMER", 42.0, "bob@example.com"],
    ["APAC", 999.0, "carol@example.com"],
]


def error_body(code: int, status: str, reason: str, message: str, **extra: str) -> dict[str, Any]:
    detail = {"message": message, "domain": "global", "reason": reason, **extra}
    return {"error": {"code": code, "message": message, "errors": [detail], "status": status}}


class HTTPDenied(Exception):
    def __init__(
        self, code: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
    ):
        super().__init__(body["error"]["message"])
        self.code = code
        self.body = body
        self.headers = headers or []


class Respond(Exception):
    """Short-circuit: answer the request with this JSON."""

    def __init__(self, code: int, body: dict[str, Any]):
        super().__init__(code)
        self.code = code
        self.body = body


class JobFailed(Exception):
    """jobs.insert of a query the caller may not run: BigQuery creates the job and fails it."""

    def __init__(
        self, payload: dict[str, Any], project: str, message: str, reason: str = "accessDenied"
    ):
        super().__init__(message)
        self.payload = payload
        self.project = project
        self.message = message
        self.reason = reason


def unauthenticated() -> HTTPDenied:
    body = error_body(
        401,
        "UNAUTHENTICATED",
        "authError",
        UNAUTHENTICATED_MESSAGE,
        location="Authorization",
        locationType="header",
    )
    # The real service's per-error message is "Invalid Credentials".
    body["error"]["errors"][0]["message"] = "Invalid Credentials"
    hdr = (
        b"www-authenticate",
        b'Bearer realm="https://accounts.google.com/", error="invalid_token"',
    )
    return HTTPDenied(401, body, [hdr])


def access_denied(message: str) -> HTTPDenied:
    return HTTPDenied(403, error_body(403, "PERMISSION_DENIED", "accessDenied", message))


def not_found(message: str) -> HTTPDenied:
    return HTTPDenied(404, error_body(404, "NOT_FOUND", "notFound", message))


def invalid_query(message: str) -> HTTPDenied:
    return HTTPDenied(400, error_body(400, "INVALID_ARGUMENT", "invalidQuery", message))


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------


class Config:
    def __init__(self, raw: dict[str, Any]):
        self.raw = raw
        self.host: str = raw.get("host", "127.0.0.1")
        self.port: int = int(raw.get("port", 0))
        self.grpc_port: int = int(raw.get("grpc_port", 0))
        self.project: str = raw.get("project", "test-project")
        self.jwks_url: str | None = raw.get("jwks_url")
        self.issuer: str | None = raw.get("issuer")
        aud = raw.get("audience")
        self.audience: list[str] | None = [aud] if isinstance(aud, str) else aud
        self.algorithms: list[str] = list(raw.get("algorithms", ["RS256"]))
        self.email_claim: str = raw.get("email_claim", "email")
        self.leeway: float = float(raw.get("leeway_seconds", 0))
        self.required_scopes: list[str] = list(raw.get("required_scopes", []))
        self.auth_disabled: bool = bool(raw.get("auth_disabled", False))
        # Workforce Identity Federation: tokens minted by the local STS (tests/servers/sts),
        # resolved through its /__test__/tokeninfo. Without jwks_url only those are accepted.
        self.sts_tokeninfo_url: str | None = raw.get("sts_tokeninfo_url")
        self.aliases: dict[str, str] = {}  # federated email -> its key in `users`
        jwt_ok = bool(self.jwks_url and self.issuer and self.audience)
        if not self.auth_disabled and not (jwt_ok or self.sts_tokeninfo_url):
            raise SystemExit(
                "config needs jwks_url, issuer and audience, or sts_tokeninfo_url "
                "(or auth_disabled: true)"
            )
        # users: email -> ["ds", "proj.ds", "*"] | {"datasets": [...], "projects": [...]}
        self.users: dict[str, dict[str, list[str]]] = {}
        for email, spec in (raw.get("users") or {}).items():
            if isinstance(spec, dict):
                ds = list(spec.get("datasets", []))
                projects = list(spec.get("projects", ["*"]))
            else:
                ds = [spec] if isinstance(spec, str) else list(spec)
                projects = ["*"]
            self.users[email.lower()] = {"datasets": ds, "projects": projects}
        self.seed_demo: bool = bool(raw.get("seed_demo", True))
        self.demo_rows: list[list[Any]] = raw.get("demo_rows", DEFAULT_DEMO_ROWS)
        self.seed_big_rows: int = int(raw.get("seed_big_rows", 0))
        self.seed_big_table: str = raw.get("seed_big_table", "bench.big")
        self.log_level: str = raw.get("log_level", "warning")
        self.table_bytes: dict[str, int] = {
            k.lower(): int(v) for k, v in (raw.get("table_bytes") or {}).items()
        }

    def user(self, email: str) -> dict[str, list[str]] | None:
        found = self.users.get(email.lower())
        if found is None and email.lower() in self.aliases:
            found = self.users.get(self.aliases[email.lower()])
        return found

    def can_use_project(self, email: str, project: str) -> bool:
        u = self.user(email)
        return u is not None and ("*" in u["projects"] or project in u["projects"])

    def can_read_dataset(self, email: str, project: str, dataset: str) -> bool:
        u = self.user(email)
        if u is None:
            return False
        for entry in u["datasets"]:
            if entry == "*":
                return True
            if "." in entry or ":" in entry:
                p, d = re.split(r"[.:]", entry, maxsplit=1)
                if p == project and d == dataset:
                    return True
            elif entry == dataset:
                return True
        return False

    def is_superuser(self, email: str) -> bool:
        u = self.user(email)
        return u is not None and "*" in u["datasets"]


# --------------------------------------------------------------------------
# Token verification
# --------------------------------------------------------------------------


class TokenVerifier:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._jwks = (
            jwt.PyJWKClient(cfg.jwks_url, cache_keys=True, lifespan=300) if cfg.jwks_url else None
        )

    def verify(self, authorization: str | None) -> tuple[str | None, str]:
        """Return (email, "") or (None, reason)."""
        if not authorization:
            return None, "missing Authorization header"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, "not a Bearer credential"
        token = token.strip()
        if self.cfg.sts_tokeninfo_url and (self._jwks is None or token.startswith("ya29.")):
            return self._verify_federated(token)
        assert self._jwks is not None
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=self.cfg.algorithms,
                audience=self.cfg.audience,
                issuer=self.cfg.issuer,
                leeway=self.cfg.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # JWKS fetch problems and the like
            return None, f"{type(exc).__name__}: {exc}"
        email = claims.get(self.cfg.email_claim)
        if not isinstance(email, str) or "@" not in email:
            return None, f"token has no usable {self.cfg.email_claim!r} claim"
        if self.cfg.required_scopes:
            granted = set(str(claims.get("scope", claims.get("scp", ""))).replace(",", " ").split())
            if isinstance(claims.get("scp"), list):
                granted = set(claims["scp"])
            missing = [s for s in self.cfg.required_scopes if s not in granted]
            if missing:
                return None, f"token lacks scopes {missing}"
        return email, ""

    def _verify_federated(self, token: str) -> tuple[str | None, str]:
        """A Google access token of a workforce pool principal, minted by the local STS.
        BigQuery accepts nothing else here: an IdP's own token is an invalid credential
        (cloud.google.com/iam/docs/workforce-identity-federation: only STS tokens act as
        the principal). IAM bindings in ``users`` may name the principal
        (``principal://iam.googleapis.com/locations/global/workforcePools/POOL/subject/S``),
        the pool (``principalSet://.../workforcePools/POOL/*``) or the email."""
        assert self.cfg.sts_tokeninfo_url is not None
        url = f"{self.cfg.sts_tokeninfo_url}?{urllib.parse.urlencode({'access_token': token})}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                info = json.loads(resp.read())
        except Exception as exc:
            return None, f"STS tokeninfo failed: {type(exc).__name__}"
        if not info.get("active"):
            return None, "not an access token minted by the STS (or expired)"
        if self.cfg.required_scopes:
            granted = set(str(info.get("scope") or "").split())
            if not granted & (
                {"https://www.googleapis.com/auth/cloud-platform"} | set(self.cfg.required_scopes)
            ):
                return None, f"token lacks scopes {self.cfg.required_scopes}"
        attrs = info.get("attributes") or {}
        email = str(attrs.get("attribute.email") or info.get("subject") or "").lower()
        if "@" not in email:
            return None, "the federated principal maps to no email (attribute.email)"
        principal = str(info.get("principal"))
        pool_set = f"principalSet://iam.googleapis.com/locations/global/workforcePools/{info.get('pool')}/*"
        for key in (principal, pool_set):
            if key.lower() in self.cfg.users:
                self.cfg.aliases[email] = key.lower()
                break
        else:
            self.cfg.aliases.pop(email, None)
        return email, ""


# --------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.jobs = 0
        self.unauthenticated = 0
        self.forbidden = 0
        self.grpc_calls = 0
        self.by_user: Counter[str] = Counter()
        self.jobs_by_user: Counter[str] = Counter()
        self.auth_failures: list[str] = []
        self.job_labels: list[dict[str, str]] = []
        bq_results.STATS.update(dict.fromkeys(bq_results.STATS, 0))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "jobs": self.jobs,
                "unauthenticated": self.unauthenticated,
                "forbidden": self.forbidden,
                "grpc_calls": self.grpc_calls,
                "requests_by_user": dict(self.by_user),
                "jobs_by_user": dict(self.jobs_by_user),
                "auth_failures": list(self.auth_failures[-20:]),
                "job_labels": list(self.job_labels),
                **bq_results.STATS,
            }

    def auth_failed(self, reason: str) -> None:
        with self.lock:
            self.unauthenticated += 1
            self.auth_failures.append(reason)
            del self.auth_failures[:-50]


# --------------------------------------------------------------------------
# SQL -> referenced tables
# --------------------------------------------------------------------------


def referenced_tables(
    sql: str, project: str, default_dataset: dict[str, str] | None
) -> list[tuple[str, str, str]]:
    """(project, dataset, table) of every table a BigQuery SQL text names.

    Raises HTTPDenied(400) for text the parser can only keep as an opaque
    command (we cannot authorize what we cannot read).
    """
    try:
        statements = sqlglot.parse(sql, read="bigquery")
    except sqlglot.errors.ParseError as exc:
        raise invalid_query(f"Syntax error: {str(exc).splitlines()[0]}") from exc
    out: list[tuple[str, str, str]] = []
    for stmt in statements:
        if stmt is None:
            continue
        if isinstance(stmt, exp.Command) or any(True for _ in stmt.find_all(exp.Command)):
            raise invalid_query(
                "This test server cannot authorize this statement (unparsed command/script)."
            )
        cte_names = {cte.alias_or_name.lower() for cte in stmt.find_all(exp.CTE)}
        for table in stmt.find_all(exp.Table):
            name = table.name
            if not name:
                continue
            db = table.db
            catalog = table.catalog
            if not db:
                if name.lower() in cte_names:
                    continue
                if default_dataset and default_dataset.get("datasetId"):
                    db = default_dataset["datasetId"]
                    catalog = catalog or default_dataset.get("projectId", project)
                else:
                    # Unqualified and not a CTE: BigQuery would reject it;
                    # let the emulator produce its own error.
                    continue
            out.append((catalog or project, db, name))
    return out


# --------------------------------------------------------------------------
# The ASGI wrapper
# --------------------------------------------------------------------------

_PATH_RE = re.compile(r"^(?:/upload)?/bigquery/v2/projects/([^/]+)(/.*)?$")


class AuthApp:
    def __init__(self, inner: Any, ctx: Any, cfg: Config, verifier: TokenVerifier, stats: Stats):
        self.inner = inner
        self.ctx = ctx
        self.cfg = cfg
        self.verifier = verifier
        self.stats = stats
        self.job_owner: dict[str, str] = {}
        self.failed_jobs: dict[str, dict[str, Any]] = {}

    # -- helpers --------------------------------------------------------

    @staticmethod
    async def _send_json(
        send: Any, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        hdrs = [
            (b"content-type", b"application/json; charset=UTF-8"),
            (b"content-length", str(len(payload)).encode()),
        ]
        hdrs += headers or []
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    async def _read_body(receive: Any) -> bytes:
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] == "http.request":
                chunks.append(msg.get("body", b""))
                if not msg.get("more_body"):
                    break
            elif msg["type"] == "http.disconnect":
                break
        return b"".join(chunks)

    # -- entry ----------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/__test__/stats" and method == "GET":
            await self._send_json(send, 200, self.stats.snapshot())
            return
        if path == "/__test__/reset" and method == "POST":
            with self.stats.lock:
                self.stats.reset()
            await self._send_json(send, 200, {"ok": True})
            return

        with self.stats.lock:
            self.stats.requests += 1
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in CALLER_HEADERS]
        authz = next(
            (v.decode("latin-1") for k, v in headers if k.lower() == b"authorization"), None
        )
        if self.cfg.auth_disabled:
            email = "anonymous@example.com"
        else:
            email, reason = await asyncio.to_thread(self.verifier.verify, authz)
            if email is None:
                self.stats.auth_failed(reason)
                print(
                    f"[bq-test-server] 401 {method} {path}: {reason}", file=sys.stderr, flush=True
                )
                denied = unauthenticated()
                await self._send_json(send, denied.code, denied.body, denied.headers)
                return
        with self.stats.lock:
            self.stats.by_user[email] += 1
        headers.append((b"x-bqemu-caller", f"user:{email}".encode()))
        scope = dict(scope, headers=headers)

        body = b""
        body_read = False
        try:
            m = _PATH_RE.match(path)
            if m:
                project = unquote(m.group(1))
                rest = m.group(2) or ""
                is_upload = path.startswith("/upload/")
                job_create = method == "POST" and rest in ("/jobs", "/queries")
                if job_create and not is_upload:
                    body = await self._read_body(receive)
                    body_read = True
                    self._authorize_job(email, project, rest, body, scope)
                    with self.stats.lock:
                        self.stats.jobs += 1
                        self.stats.jobs_by_user[email] += 1
                elif job_create and is_upload:
                    # Load job with media upload: needs jobs.create; the
                    # destination is in a multipart body we do not parse,
                    # so only dataset-wide users may load.
                    self._require_jobs_create(email, project)
                    if not self.cfg.is_superuser(email):
                        raise access_denied(
                            f"Access Denied: Project {project}: User does not have permission to "
                            f"load data in project {project} on this test server."
                        )
                    with self.stats.lock:
                        self.stats.jobs += 1
                        self.stats.jobs_by_user[email] += 1
                else:
                    self._authorize_resource(email, project, method, rest, scope)
        except Respond as r:
            await self._send_json(send, r.code, r.body)
            return
        except JobFailed as failed:
            resource = self._failed_job(failed, email, scope)
            print(
                f"[bq-test-server] job failed {method} {path} ({email}): {failed}",
                file=sys.stderr,
                flush=True,
            )
            await self._send_json(send, 200, resource)
            return
        except HTTPDenied as denied:
            if denied.code == 403:
                with self.stats.lock:
                    self.stats.forbidden += 1
            print(
                f"[bq-test-server] {denied.code} {method} {path} ({email}): {denied}",
                file=sys.stderr,
                flush=True,
            )
            await self._send_json(send, denied.code, denied.body, denied.headers)
            return

        if body_read:
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            inner_receive = replay
        else:
            inner_receive = receive

        capture = self._capture_kind(method, path)
        if capture is None:
            await self.inner(scope, inner_receive, send)
            return
        await self._call_and_rewrite(scope, inner_receive, send, capture, email)

    # -- authorization ----------------------------------------------------

    def _require_jobs_create(self, email: str, project: str) -> None:
        if not self.cfg.can_use_project(email, project):
            raise access_denied(
                f"Access Denied: Project {project}: User does not have bigquery.jobs.create "
                f"permission in project {project}."
            )

    def _authorize_job(
        self, email: str, project: str, rest: str, raw: bytes, scope: dict[str, Any]
    ) -> None:
        self._require_jobs_create(email, project)
        hdrs = {k.lower(): v for k, v in scope["headers"]}
        data = raw
        if hdrs.get(b"content-encoding", b"").lower() == b"gzip":
            data = gzip.decompress(raw)
        try:
            payload = json.loads(data or b"{}")
        except ValueError:
            return  # the emulator answers malformed JSON itself
        if rest == "/queries":
            sql = payload.get("query", "")
            legacy = payload.get("useLegacySql", False)
            default_ds = payload.get("defaultDataset")
            dest = None
        else:
            config = payload.get("configuration", {}) or {}
            q = config.get("query")
            if q is None:
                self._authorize_non_query_job(email, project, config)
                return
            sql = q.get("query", "")
            legacy = q.get("useLegacySql", False)
            default_ds = q.get("defaultDataset")
            dest = q.get("destinationTable")
            with self.stats.lock:
                self.stats.job_labels.append(dict(config.get("labels") or {}))
            limit = q.get("maximumBytesBilled")
            needed = self.bytes_processed(sql, project, default_ds)
            if limit is not None and not config.get("dryRun") and needed > int(limit):
                raise JobFailed(
                    payload,
                    project,
                    f"Query exceeded limit for bytes billed: {int(limit)}. "
                    f"{needed} or higher required.",
                    reason="bytesBilledLimitExceeded",
                )
        if self.cfg.is_superuser(email):
            return
        if legacy:
            from bqemulator.sql.rewriter.legacy_sql import rewrite_legacy_to_standard

            sql = rewrite_legacy_to_standard(sql)
        tables = referenced_tables(sql, project, default_ds)
        if dest:
            tables.append(
                (dest.get("projectId", project), dest.get("datasetId", ""), dest.get("tableId", ""))
            )
        for p, d, t in tables:
            if d.lower().startswith("region-") or not self.cfg.can_read_dataset(email, p, d):
                ref = f"{p}:{d}.{t}"
                message = (
                    f"Access Denied: Table {ref}: User does not have permission to query table "
                    f"{ref}, or perhaps it does not exist."
                )
                if rest == "/jobs":
                    raise JobFailed(payload, project, message)
                raise access_denied(message)

    def bytes_processed(self, sql: str, project: str, default_ds: dict[str, str] | None) -> int:
        """What the query processes: the configured bytes of each table it reads."""
        try:
            tables = referenced_tables(sql, project, default_ds)
        except HTTPDenied:
            return 0
        return sum(self.cfg.table_bytes.get(f"{d}.{t}".lower(), 0) for _p, d, t in tables)

    def _authorize_non_query_job(self, email: str, project: str, config: dict[str, Any]) -> None:
        if self.cfg.is_superuser(email):
            return
        refs: list[dict[str, Any]] = []
        for kind in ("load", "copy", "extract"):
            c = config.get(kind) or {}
            for key in ("destinationTable", "sourceTable"):
                if isinstance(c.get(key), dict):
                    refs.append(c[key])
            refs.extend(r for r in c.get("sourceTables", []) or [] if isinstance(r, dict))
        for r in refs:
            p, d, t = r.get("projectId", project), r.get("datasetId", ""), r.get("tableId", "")
            if not self.cfg.can_read_dataset(email, p, d):
                ref = f"{p}:{d}.{t}"
                raise access_denied(
                    f"Access Denied: Table {ref}: Permission bigquery.tables.getData denied on "
                    f"table "
                    f"{ref} (or it may not exist)."
                )

    def _authorize_resource(
        self, email: str, project: str, method: str, rest: str, scope: dict[str, Any]
    ) -> None:
        parts = [unquote(p) for p in rest.split("/") if p]
        if not parts:
            return
        if parts[0] == "datasets":
            if len(parts) == 1:
                if method == "POST":
                    # datasets.insert: only users with '*'.
                    if not self.cfg.is_superuser(email):
                        raise access_denied(
                            f"Access Denied: Project {project}: User does not have "
                            f"bigquery.datasets.create permission in project {project}."
                        )
                return  # datasets.list is filtered on the way out
            ds = parts[1]
            if self.cfg.can_read_dataset(email, project, ds):
                if (
                    len(parts) >= 5
                    and parts[2] == "tables"
                    and parts[4] == "data"
                    and method == "GET"
                ):
                    self._check_tabledata_rap(email, project, ds, parts[3])
                return
            if len(parts) >= 4 and parts[2] == "tables":
                ref = f"{project}:{ds}.{parts[3]}"
                perm = {
                    ("GET", 4): "bigquery.tables.get",
                    ("PATCH", 4): "bigquery.tables.update",
                    ("PUT", 4): "bigquery.tables.update",
                    ("DELETE", 4): "bigquery.tables.delete",
                }.get((method, len(parts)), "bigquery.tables.getData")
                if len(parts) >= 5 and parts[4] == "insertAll":
                    perm = "bigquery.tables.updateData"
                raise access_denied(
                    f"Access Denied: Table {ref}: Permission {perm} denied on table {ref} "
                    "(or it may not exist)."
                )
            perm = "bigquery.datasets.get"
            if len(parts) == 3 and parts[2] == "tables":
                perm = "bigquery.tables.list" if method == "GET" else "bigquery.tables.create"
            elif len(parts) == 2 and method in ("PATCH", "PUT"):
                perm = "bigquery.datasets.update"
            elif len(parts) == 2 and method == "DELETE":
                perm = "bigquery.datasets.delete"
            ref = f"{project}:{ds}"
            raise access_denied(
                f"Access Denied: Dataset {ref}: Permission {perm} denied on dataset {ref} "
                "(or it may not exist)."
            )
        if parts[0] in ("jobs", "queries") and len(parts) >= 2:
            job_id = parts[1]
            owner = self.job_owner.get(job_id)
            if owner is not None and owner != email.lower():
                qs = parse_qs(scope.get("query_string", b"").decode())
                loc = qs.get("location", ["US"])[0]
                raise not_found(f"Not found: Job {project}:{loc}.{job_id}")
            failed = self.failed_jobs.get(job_id)
            if failed is not None:
                if parts[0] == "queries":
                    raise access_denied(failed["status"]["errorResult"]["message"])
                if len(parts) == 3 and parts[2] == "cancel":
                    raise Respond(200, {"kind": "bigquery#jobCancelResponse", "job": failed})
                if len(parts) == 2 and method == "GET":
                    raise Respond(200, failed)

    def _failed_job(self, failed: JobFailed, email: str, scope: dict[str, Any]) -> dict[str, Any]:
        ref = dict(failed.payload.get("jobReference") or {})
        job_id = ref.get("jobId") or f"bqemu_denied_{uuid.uuid4().hex[:12]}"
        location = ref.get("location") or "US"
        now = str(int(time.time() * 1000))
        error = {"reason": failed.reason, "message": failed.message}
        resource = {
            "kind": "bigquery#job",
            "etag": uuid.uuid4().hex,
            "id": f"{failed.project}:{location}.{job_id}",
            "selfLink": f"/bigquery/v2/projects/{failed.project}/jobs/{job_id}?location={location}",
            "user_email": email,
            "configuration": failed.payload.get("configuration", {}),
            "jobReference": {"projectId": failed.project, "jobId": job_id, "location": location},
            "statistics": {"creationTime": now, "startTime": now, "endTime": now},
            "status": {"state": "DONE", "errorResult": error, "errors": [error]},
        }
        self.failed_jobs[job_id] = resource
        self.job_owner.setdefault(job_id, email.lower())
        with self.stats.lock:
            self.stats.forbidden += 1
            self.stats.jobs += 1
            self.stats.jobs_by_user[email] += 1
        return resource

    def _check_tabledata_rap(self, email: str, project: str, ds: str, table: str) -> None:
        try:
            policies = self.ctx.catalog.list_row_access_policies(project, ds, table)
        except Exception:
            return
        if policies and not self.cfg.is_superuser(email):
            raise access_denied(
                f"Access Denied: Table {project}:{ds}.{table}: this test server does not serve "
                "tabledata.list for tables with row access policies; run a query instead."
            )

    # -- response rewriting (ownership) ----------------------------------

    @staticmethod
    def _capture_kind(method: str, path: str) -> str | None:
        m = _PATH_RE.match(path)
        if not m or path.startswith("/upload/"):
            return None
        rest = m.group(2) or ""
        if method == "POST" and rest in ("/jobs", "/queries"):
            return "job_created"
        if method == "GET" and rest == "/jobs":
            return "jobs_list"
        if method == "GET" and rest == "/datasets":
            return "datasets_list"
        return None

    async def _call_and_rewrite(
        self, scope: dict[str, Any], receive: Any, send: Any, kind: str, email: str
    ) -> None:
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                start.update(msg)
            elif msg["type"] == "http.response.body":
                chunks.append(msg.get("body", b""))

        await self.inner(scope, receive, capture)
        body = b"".join(chunks)
        status = start.get("status", 500)
        hdrs = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if 200 <= status < 300:
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if isinstance(data, dict):
                new = self._rewrite(kind, data, email, scope)
                if new is not None:
                    body = json.dumps(new).encode()
        hdrs.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})

    def _rewrite(
        self, kind: str, data: dict[str, Any], email: str, scope: dict[str, Any]
    ) -> dict[str, Any] | None:
        me = email.lower()
        if kind == "job_created":
            job_id = (data.get("jobReference") or {}).get("jobId")
            if job_id:
                self.job_owner.setdefault(job_id, me)
            config = data.get("configuration") or {}
            if config.get("dryRun") and isinstance(config.get("query"), dict):
                q = config["query"]
                m = _PATH_RE.match(scope["path"])
                project = unquote(m.group(1)) if m else self.cfg.project
                needed = str(
                    self.bytes_processed(q.get("query", ""), project, q.get("defaultDataset"))
                )
                stats = data.setdefault("statistics", {})
                stats["totalBytesProcessed"] = needed
                stats.setdefault("query", {})["totalBytesProcessed"] = needed
                data.setdefault("user_email", email)
                return data
            if "user_email" not in data and data.get("kind") == "bigquery#job":
                data["user_email"] = email
                return data
            return None
        if kind == "jobs_list":
            jobs = data.get("jobs") or []
            data["jobs"] = [
                j
                for j in jobs
                if self.job_owner.get((j.get("jobReference") or {}).get("jobId", ""), me) == me
            ]
            return data
        if kind == "datasets_list":
            m = _PATH_RE.match(scope["path"])
            project = unquote(m.group(1)) if m else self.cfg.project
            dss = data.get("datasets") or []
            data["datasets"] = [
                d
                for d in dss
                if self.cfg.can_read_dataset(
                    email, project, (d.get("datasetReference") or {}).get("datasetId", "")
                )
            ]
            if not data["datasets"]:
                data.pop("datasets")
            return data
        return None


# --------------------------------------------------------------------------
# gRPC (Storage Read / Write API) auth
# --------------------------------------------------------------------------


class _ContextWithCaller:
    """Servicer-context proxy whose metadata carries the verified caller."""

    def __init__(self, inner: Any, metadata: tuple[tuple[str, str], ...]):
        self._inner = inner
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _wrap_behavior(fn: Any, metadata: tuple[tuple[str, str], ...]) -> Any:

    if inspect.isasyncgenfunction(fn):

        async def agen(req: Any, context: Any) -> Any:
            async for item in fn(req, _ContextWithCaller(context, metadata)):
                yield item

        return agen
    if inspect.iscoroutinefunction(fn):

        async def coro(req: Any, context: Any) -> Any:
            return await fn(req, _ContextWithCaller(context, metadata))

        return coro

    def plain(req: Any, context: Any) -> Any:
        return fn(req, _ContextWithCaller(context, metadata))

    return plain


def _rebuild(handler: Any, wrap: Any) -> Any:
    kinds = [
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    ]
    for attr, factory in kinds:
        fn = getattr(handler, attr)
        if fn is not None:
            return factory(
                wrap(fn, attr),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class GrpcAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, cfg: Config, verifier: TokenVerifier, stats: Stats):
        self.cfg = cfg
        self.verifier = verifier
        self.stats = stats

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith("/grpc.health."):
            return handler
        with self.stats.lock:
            self.stats.grpc_calls += 1
        md = tuple(details.invocation_metadata or ())
        authz = next((v for k, v in md if k.lower() == "authorization"), None)
        if self.cfg.auth_disabled:
            email: str | None = "anonymous@example.com"
        else:
            email, reason = await asyncio.to_thread(self.verifier.verify, authz)
        if email is None:
            self.stats.auth_failed(f"grpc {details.method}: {reason}")

            def deny(fn: Any, attr: str) -> Any:
                if attr.endswith("_stream"):

                    async def deny_stream(req: Any, context: Any) -> Any:
                        await context.abort(
                            grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE
                        )
                        yield  # pragma: no cover

                    return deny_stream

                async def deny_unary(req: Any, context: Any) -> Any:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

                return deny_unary

            return _rebuild(handler, deny)
        new_md = tuple(
            (k, v) for k, v in md if k.lower() not in ("x-bqemu-caller", "x-bqemu-groups")
        )
        new_md += (("x-bqemu-caller", f"user:{email}"),)
        denial = self._permission_denial(details.method, email, new_md)
        if denial is not None:
            return _rebuild(handler, denial)
        return _rebuild(handler, lambda fn, attr: _wrap_behavior(fn, new_md))

    def _permission_denial(
        self, method: str, email: str, new_md: tuple[tuple[str, str], ...]
    ) -> Any:
        """None if allowed so far, else a handler-wrapper that aborts PERMISSION_DENIED."""
        cfg = self.cfg

        def abort_with(message: str) -> Any:
            def make(fn: Any, attr: str) -> Any:
                if attr.endswith("_stream"):

                    async def deny_stream(req: Any, context: Any) -> Any:
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
                        yield  # pragma: no cover

                    return deny_stream

                async def deny_unary(req: Any, context: Any) -> Any:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)

                return deny_unary

            return make

        if cfg.is_superuser(email):
            return None
        if method.startswith("/google.cloud.bigquery.storage.v1.BigQueryWrite/"):
            return abort_with(
                "request failed: the user does not have 'bigquery.tables.updateData' permission "
                "(this test server allows the Storage Write API only to users with '*')"
            )
        if method == "/google.cloud.bigquery.storage.v1.BigQueryRead/CreateReadSession":

            def check_then_call(fn: Any, attr: str) -> Any:
                async def guarded(req: Any, context: Any) -> Any:
                    from google.cloud.bigquery_storage_v1 import types

                    request = (
                        types.CreateReadSessionRequest.deserialize(req)
                        if isinstance(req, bytes)
                        else req
                    )
                    parent = request.parent.split("/")
                    project = parent[1] if len(parent) >= 2 else ""
                    if not cfg.can_use_project(email, project):
                        await context.abort(
                            grpc.StatusCode.PERMISSION_DENIED,
                            "request failed: the user does not have "
                            f"'bigquery.readsessions.create' "
                            f"permission for '{request.parent}'",
                        )
                    table = request.read_session.table
                    m = re.match(r"^projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)$", table)
                    readable = m is not None and (
                        cfg.can_read_dataset(email, m.group(1), m.group(2))
                        or bq_results.owns_result(email, table)  # the user's own query result
                    )
                    if not readable:
                        await context.abort(
                            grpc.StatusCode.PERMISSION_DENIED,
                            f"request failed: the user does not have 'bigquery.tables.getData' "
                            f"permission for '{table}'",
                        )
                    result = _wrap_behavior(fn, new_md)(req, context)
                    return await result if inspect.isawaitable(result) else result

                return guarded

            return check_then_call
        return None


# --------------------------------------------------------------------------
# Wiring into bqemulator
# --------------------------------------------------------------------------


def _engine_no_downloads() -> None:
    """DuckDB must never fetch extensions from the internet here."""

    def _load_spatial(self: DuckDBEngine) -> None:
        conn = self.connection
        conn.execute("SET autoinstall_known_extensions = false")
        try:  # use a locally cached copy if someone installed one
            conn.execute("LOAD spatial")
        except Exception as exc:  # GEOGRAPHY functions are unavailable; nothing else needs it
            print(f"[bq-test-server] spatial extension not loaded: {exc}", file=sys.stderr)

    DuckDBEngine._load_spatial = _load_spatial  # type: ignore[method-assign]


def install_wrappers(cfg: Config, stats: Stats, holder: dict[str, Any]) -> None:
    verifier = TokenVerifier(cfg) if not cfg.auth_disabled else None
    original_create_app = bq_server_mod.create_app

    def create_app(context: Any) -> Any:
        inner = original_create_app(context)
        holder["inner_app"] = inner
        holder["context"] = context
        app = AuthApp(inner, context, cfg, verifier, stats)  # type: ignore[arg-type]
        bq_results.JOB_OWNER = app.job_owner
        return app

    def build_grpc_server(context: Any) -> tuple[Any, int]:
        from bqemulator.grpc_api.interceptors import DomainErrorTranslationInterceptor
        from bqemulator.grpc_api.read_servicer import BigQueryReadHandler
        from bqemulator.grpc_api.write_servicer import BigQueryWriteHandler

        cap = context.settings.write_api_max_request_bytes + 1024 * 1024
        server = grpc.aio.server(
            interceptors=(
                GrpcAuthInterceptor(cfg, verifier, stats),
                DomainErrorTranslationInterceptor(),
            ),  # type: ignore[arg-type]
            options=[
                ("grpc.max_send_message_length", cap),
                ("grpc.max_receive_message_length", cap),
            ],
        )
        server.add_generic_rpc_handlers(
            [BigQueryReadHandler(context), BigQueryWriteHandler(context)]
        )
        port = server.add_insecure_port(
            f"{context.settings.grpc_host}:{context.settings.grpc_port}"
        )
        return server, port

    bq_server_mod.create_app = create_app
    bq_server_mod.build_grpc_server = build_grpc_server
    bq_results.install()


# --------------------------------------------------------------------------
# Seeding (in-process, through the emulator's own REST app)
# --------------------------------------------------------------------------


def _sql_str(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def seed(cfg: Config, holder: dict[str, Any]) -> None:
    import httpx

    transport = httpx.ASGITransport(app=holder["inner_app"])
    base = f"/bigquery/v2/projects/{cfg.project}"
    headers = {"x-bqemu-caller": "serviceAccount:seeder@test-server.local"}
    async with httpx.AsyncClient(transport=transport, base_url="http://seed", timeout=600) as http:

        async def dataset(ds: str) -> None:
            r = await http.post(
                f"{base}/datasets",
                json={
                    "datasetReference": {"projectId": cfg.project, "datasetId": ds},
                    "location": "US",
                },
                headers=headers,
            )
            if r.status_code not in (200, 409):
                raise RuntimeError(f"seed dataset {ds}: {r.status_code} {r.text}")

        async def query(sql: str) -> None:
            r = await http.post(
                f"{base}/queries",
                json={"query": sql, "useLegacySql": False, "maxResults": 0},
                headers=headers,
            )
            data = r.json()
            err = (data.get("status") or {}).get("errorResult") or data.get("error")
            if r.status_code != 200 or err:
                raise RuntimeError(
                    f"seed query failed: {r.status_code} {r.text[:500]}\n{sql[:300]}"
                )

        if cfg.seed_demo:
            await dataset("demo")
            values = ", ".join(
                f"STRUCT({_sql_str(str(reg))} AS region, "
                f"CAST({float(amt)!r} AS NUMERIC) AS amount, "
                f"{_sql_str(str(owner))} AS owner)"
                for reg, amt, owner in cfg.demo_rows
            )
            await query(f"CREATE TABLE demo.sales AS SELECT * FROM UNNEST([{values}])")
            await query(
                "CREATE ROW ACCESS POLICY owner_rows ON demo.sales "
                'GRANT TO ("allAuthenticatedUsers") FILTER USING (owner = SESSION_USER())'
            )
        if cfg.seed_big_rows > 0:
            ds, _, table = cfg.seed_big_table.partition(".")
            await dataset(ds)
            n = cfg.seed_big_rows
            await query(
                f"""CREATE TABLE `{ds}.{table}` AS
SELECT
  i AS id,
  IF(MOD(i, 11) = 0, NULL, MOD(i * 7919, 100000)) AS qty,
  CAST(i AS FLOAT64) * 1.5 AS price,
  IF(MOD(i, 13) = 0, NULL, MOD(i, 1000) / 7.0) AS ratio,
  IF(MOD(i, 5) = 0, NULL, CONCAT('name_', CAST(i AS STRING))) AS name,
  IF(MOD(i, 17) = 0, NULL, ['alpha', 'beta', 'gamma', 'delta'][OFFSET(MOD(i, 4))]) AS category,
  TIMESTAMP_ADD(TIMESTAMP '2024-01-01 00:00:00+00', INTERVAL i SECOND) AS created_at,
  IF(MOD(i, 3) = 0, NULL,
     TIMESTAMP_ADD(TIMESTAMP '2025-06-01 12:00:00+00', INTERVAL MOD(i, 86400) SECOND))
    AS updated_at,
  CAST(CAST(MOD(i, 100000) AS NUMERIC) / 100 AS NUMERIC) AS amount,
  MOD(i, 2) = 0 AS active
FROM UNNEST(GENERATE_ARRAY(0, {n - 1})) AS i"""
            )


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


async def amain(cfg: Config, parent_pid: int | None = None) -> None:
    stats = Stats()
    holder: dict[str, Any] = {}
    _engine_no_downloads()
    install_wrappers(cfg, stats, holder)
    settings = Settings(
        rest_host=cfg.host,
        rest_port=cfg.port,
        grpc_host=cfg.host,
        grpc_port=cfg.grpc_port,
        default_project_id=cfg.project,
        enable_format_extensions=False,
        metrics_enabled=False,
        log_level=LogLevel(cfg.log_level),
        query_cache_ttl_seconds=0,
    )
    server = EmulatorServer(settings)
    t0 = time.perf_counter()
    await server.start()
    await seed(cfg, holder)
    print(f"GRPC {server.grpc_port}", flush=True)
    print(f"READY {server.rest_port}", flush=True)
    print(
        f"[bq-test-server] started in {time.perf_counter() - t0:.2f}s", file=sys.stderr, flush=True
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def watch_parent(pid: int) -> None:
        # Exit when the process that started us is gone (no orphans after a crash).
        while not stop.is_set():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print("[bq-test-server] parent process gone; stopping", file=sys.stderr, flush=True)
                stop.set()
                return
            except PermissionError:
                pass
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch_parent(parent_pid)) if parent_pid else None
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="JSON config file (see README.md)")
    ap.add_argument(
        "--port", type=int, default=None, help="REST port (overrides config; 0 = free port)"
    )
    ap.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = ap.parse_args(argv)
    with open(args.config, encoding="utf-8") as fh:
        raw = json.load(fh)
    if args.port is not None:
        raw["port"] = args.port
    asyncio.run(amain(Config(raw), args.parent_pid))


if __name__ == "__main__":
    main()
