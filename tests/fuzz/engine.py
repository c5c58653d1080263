"""The fuzzing machinery shared by the server and hub fuzz tests.

Two generators send requests to a live server over real HTTP (httpx2, from a worker
thread while the server runs on the test's event loop):

- :func:`run_schemathesis`: every operation of docs/openapi.yaml, positive and
  negative cases (schemathesis builds them from the spec), with real and bogus
  credentials swapped in;
- :func:`run_raw`: hypothesis strategies for what a spec cannot say: malformed and
  deeply nested JSON, oversized and binary bodies, odd path segments, bad UTF-8,
  repeated parameters, forged and real-but-stolen OAuth states with forged codes.

Every response goes through :class:`Checker`: no 5xx, no secret value in any body or
header (access tokens only where the caller legitimately gets its own), JSON errors
shaped ``{error, message, fix}`` on the API.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
FULL = os.environ.get("CONNAUTH_FUZZ_FULL") == "1"
NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"


def budget(default: int, full: int) -> int:
    return full if FULL else default


@dataclass
class Finding:
    kind: str
    method: str
    url: str
    status: int
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.method} {self.url[:200]} -> {self.status}: {self.detail[:300]}"


@dataclass
class Auth:
    """One way of presenting (or not) credentials; ``valid`` if it authenticates."""

    label: str
    headers: dict[str, str]
    valid: bool
    user: str | None = None


@dataclass
class Checker:
    """Checks every response; keeps counts, findings and the OAuth states seen."""

    forbidden: dict[str, str]  # label -> value that must never appear
    #: secret label -> the auth labels that presented it themselves. Jupyter's own HTML
    #: pages (404s, errors) carry the API token for a signed-in browser: only for them.
    echoed_ok: dict[str, set[str]] = field(default_factory=dict)
    access_tokens: dict[str, str] = field(default_factory=dict)  # label -> value
    #: (user, method, path regex) allowed to carry that user's access token
    token_routes: list[tuple[str, str, str]] = field(default_factory=list)
    token_owner: dict[str, str] = field(default_factory=dict)  # access-token label -> user
    api_prefix: str = "/connauth/api/"
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, auth: Auth, method: str, url: str, resp: httpx2.Response) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
        text = resp.content.decode("utf-8", "replace")
        headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
        hay = text + "\n" + headers
        if resp.status_code >= 500:
            self._add("5xx", method, url, resp, text)
        for label, value in self.forbidden.items():
            if value and value in hay and auth.label not in self.echoed_ok.get(label, ()):
                self._add("leak", method, url, resp, f"{label} (as {auth.label})")
        path = urlsplit(url).path
        for label, value in self.access_tokens.items():
            if value and value in hay and not self._may_see(auth, label, method, path):
                self._add("leak", method, url, resp, f"{label} (as {auth.label})")
        api = self.api_prefix in path
        ctype = resp.headers.get("content-type", "")
        if (
            api
            and method != "HEAD"
            and resp.status_code >= 400
            and ctype.startswith("application/json")
        ):
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            if not (isinstance(body, dict) and {"error", "message", "fix"} <= set(body)):
                self._add("error-shape", method, url, resp, text)
        if "authorize_url" in text and ctype.startswith("application/json"):
            try:
                state = dict(parse_qsl(urlsplit(json.loads(text)["authorize_url"]).query))["state"]
            except (ValueError, KeyError, TypeError):
                return
            with self.lock:
                self.states.append(state)
                del self.states[:-200]

    def _may_see(self, auth: Auth, label: str, method: str, path: str) -> bool:
        if not auth.valid:
            return False
        owner = self.token_owner.get(label)
        return any(
            owner == user and auth.user == user and method == m and re.search(rx, path)
            for user, m, rx in self.token_routes
        )

    def _add(self, kind: str, method: str, url: str, resp: httpx2.Response, detail: str) -> None:
        with self.lock:
            if len(self.findings) < 200:
                self.findings.append(Finding(kind, method, url, resp.status_code, detail))

    def report(self) -> str:
        lines = [f"{self.requests} requests; statuses {dict(sorted(self.statuses.items()))}"]
        lines += [str(f) for f in self.findings[:30]]
        return "\n".join(lines)


# -- sending ---------------------------------------------------------------------------


class Sender:
    """Sends one request and checks the answer; never raises on HTTP errors."""

    def __init__(
        self,
        base_url: str,
        checker: Checker,
        guard: Callable[[Auth, str, str], str] | None = None,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.checker = checker
        self.guard = guard or (lambda _a, _m, path: path)
        self.http = httpx2.Client(timeout=60, trust_env=False, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def send(
        self,
        auth: Auth,
        method: str,
        path: str,
        *,
        query: str = "",
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx2.Response | None:
        path = self.guard(auth, method, path)
        self.http.cookies.clear()  # each request presents only its own credentials
        url = self.base + path + (f"?{query}" if query else "")
        hdrs = {**(headers or {}), **auth.headers}
        try:
            resp = self.http.request(method, url, content=content, headers=hdrs)
        except httpx2.InvalidURL:
            return None
        except httpx2.TransportError as e:
            with self.checker.lock:
                self.checker.requests += 1
                self.checker.findings.append(Finding("transport", method, url, 0, repr(e)))
            return None
        self.checker.check(auth, method, url, resp)
        return resp


# -- schemathesis ----------------------------------------------------------------------


def _fuzz_settings(n: int) -> settings:
    return settings(
        max_examples=max(1, n),
        database=None,
        deadline=None,
        derandomize=False,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


def run_schemathesis(
    sender: Sender,
    auths: list[Auth],
    total: int,
    *,
    base_path: str = "/",
    operations: Iterable[str] | None = None,
    path_parameters: dict[str, str] | None = None,
) -> int:
    """Spec-driven cases for every operation (half positive, half negative)."""
    import schemathesis
    from schemathesis.generation import GenerationMode

    @schemathesis.serializer("application/x-pem-file")
    def _pem(_ctx: Any, value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")

    schema = schemathesis.openapi.from_path(str(SPEC))
    ops = [r.ok() for r in schema.get_all_operations()]
    if operations is not None:
        wanted = set(operations)
        ops = [op for op in ops if op.definition.raw.get("operationId") in wanted]
    if path_parameters:
        ops = [op for op in ops if set(path_parameters) & {p.name for p in op.path_parameters}]
    per = max(1, total // (2 * len(ops)))
    before = sender.checker.requests
    for op in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fixed = {
                k: v
                for k, v in (path_parameters or {}).items()
                if k in {p.name for p in op.path_parameters}
            }
            strategy = op.as_strategy(generation_mode=mode, path_parameters=fixed or None)

            @_fuzz_settings(per)
            @given(case=strategy, auth=st.sampled_from(auths))
            def one(case: Any, auth: Auth) -> None:
                kw = case.as_transport_kwargs(base_url="http://fuzz.invalid" + base_path)
                try:
                    url = httpx2.URL(kw["url"], params=kw.get("params") or None)
                except httpx2.InvalidURL:
                    return  # longer than any client sends (64 KiB)
                headers = {
                    k: v
                    for k, v in kw.get("headers", {}).items()
                    if k.lower() not in ("authorization", "x-connauth-token", "cookie")
                }
                if "json" in kw:
                    content: bytes | None = json.dumps(kw["json"]).encode()
                    headers.setdefault("Content-Type", "application/json")
                elif isinstance(kw.get("data"), str | bytes):
                    data = kw["data"]
                    content = (
                        data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
                    )
                else:
                    content = None
                raw_path = url.raw_path.decode("ascii")
                path, _, query = raw_path.partition("?")
                sender.send(auth, kw["method"], path, query=query, content=content, headers=headers)

            try:
                one()
            except Unsatisfiable:
                pass  # nothing negative to say about an operation without inputs
    return sender.checker.requests - before


# -- raw hypothesis strategies ------------------------------------------------------------

ODD_SEGMENTS = [
    "..",
    "%2e%2e",
    "%2E%2E%2F",
    ".",
    "%00",
    "%ff",
    "%C0%AF",
    "%2F",
    "a%2Fb",
    "%0A",
    "%0d%0a",
    "%20",
    "~",
    "-",
    "_",
    "a" * 65,
    "a" * 300,
    "A" * 5000,
    "%E2%80%AE",
    "%F0%9F%98%80",
    "*",
    "null",
    "undefined",
    "{name}",
    "%7Bname%7D",
    "';--",
    "<script>",
    "%3Cscript%3E",
]
JSON_ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    JSON_ATOMS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
CONNECTION_KEYS = [
    "name",
    "connector",
    "auth",
    "scopes",
    "resource",
    "description",
    "driver_options",
    "project",
    "location",
    "dataset",
    "server_hostname",
    "http_path",
    "catalog",
    "schema",
    "account",
    "warehouse",
    "database",
    "role",
    "host",
    "jwt_audience",
    "jwt_user_claim",
    "jwt_public_key_fp",
    "private_key_path",
    "private_key_env",
    "subject_scopes",
    "private_key",
    "private_key_pem",
    "connection",
]
CONNECTION_VALUES = st.one_of(
    st.sampled_from(
        [
            "bigquery",
            "databricks",
            "snowflake",
            "oauth",
            "oauth-jwt",
            "on-behalf-of",
            "token-exchange",
            "sql offline_access",
            "openid",
            "",
            " ",
            "lake",
            "fz1",
        ]
    ),
    JSON_VALUES,
)
CONNECTION_BODIES = st.dictionaries(
    st.sampled_from(CONNECTION_KEYS) | st.text(max_size=8), CONNECTION_VALUES, max_size=8
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes | None, dict[str, str]]:
    kind = draw(
        st.sampled_from(
            [
                "none",
                "object",
                "connection",
                "json",
                "malformed",
                "binary",
                "nested",
                "big",
                "pem",
                "utf16",
                "empty",
            ]
        )
    )
    ctype = draw(
        st.sampled_from(
            [
                "application/json",
                "text/plain",
                "application/x-www-form-urlencoded",
                "application/x-pem-file",
                "multipart/form-data; boundary=x",
                "",
                "application/json; charset=latin-1",
            ]
        )
    )
    headers = {"Content-Type": ctype} if ctype else {}
    if kind == "none":
        return None, headers
    if kind == "empty":
        return b"", headers
    if kind == "object":
        return json.dumps(
            draw(st.dictionaries(st.text(max_size=10), JSON_VALUES))
        ).encode(), headers
    if kind == "connection":
        return json.dumps(draw(CONNECTION_BODIES)).encode(), headers
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode(), headers
    if kind == "malformed":
        text = draw(st.sampled_from(['{"a":', "{'a': 1}", "[1,]", "{", "NaN", '{"a":1}x', "\x00"]))
        return text.encode(), headers
    if kind == "binary":
        return draw(st.binary(max_size=512)), headers
    if kind == "nested":
        depth = draw(st.sampled_from([100, 1_000, 5_000, 50_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opener * depth + "1" + closer * depth).encode(), headers
    if kind == "big":
        size = draw(st.sampled_from([70_000, 1_000_000, 3_000_000]))
        return b'{"name": "' + b"x" * size + b'"}', headers
    if kind == "pem":
        pem = (
            b"-----BEGIN PRIVATE KEY-----\n"
            + draw(st.binary(max_size=200))
            + (b"\n-----END PRIVATE KEY-----\n")
        )
        return pem, headers
    return json.dumps({"name": draw(st.text(max_size=10))}).encode("utf-16"), headers


def names(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(known),
        st.from_regex(rf"\A{NAME_RE}\Z"),
        st.sampled_from(ODD_SEGMENTS),
        st.text(min_size=1, max_size=20).map(lambda s: quote(s, safe="")),
    )


API_TAILS = [
    "",
    "/token",
    "/authorize",
    "/revoke",
    "/private_key",
    "/doctor",
    "/test",
    "/browse",
    "/",
    "/token/",
    "/x",
    "/../info",
    "/%2e%2e/info",
]


@st.composite
def api_requests(
    draw: st.DrawFn, auths: list[Auth], known: list[str], api: str
) -> tuple[Auth, str, str, str, bytes | None, dict[str, str]]:
    auth = draw(st.sampled_from(auths))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    shape = draw(
        st.sampled_from(
            ["conn", "conn", "conn", "create", "edit", "browse", "flow", "top", "admin", "odd"]
        )
    )
    if shape == "create":  # the routes that read a JSON body
        method = draw(st.sampled_from(["POST", "POST", "PUT"]))
        path = f"{api}connections"
    elif shape == "edit":
        method = "PUT"
        tail = draw(st.sampled_from(["", "", "/private_key"]))
        path = f"{api}connections/{draw(names(known))}{tail}"
    elif shape == "browse":
        method = draw(st.sampled_from(["GET", "GET", "POST"]))
        name = draw(st.one_of(st.sampled_from(known), names(known)))
        path = f"{api}connections/{name}/{draw(st.sampled_from(['browse', 'test', 'doctor']))}"
    elif shape == "conn":
        path = f"{api}connections/{draw(names(known))}{draw(st.sampled_from(API_TAILS))}"
    elif shape == "flow":
        flow = draw(st.one_of(st.from_regex(r"\A[A-Za-z0-9_\-]{1,64}\Z"), names(known)))
        path = f"{api}flows/{flow}"
    elif shape == "top":
        path = api + draw(
            st.sampled_from(
                [
                    "info",
                    "connections",
                    "connections/",
                    "",
                    "flows",
                    "flows/",
                    "info/",
                    "INFO",
                    "connections//token",
                ]
            )
        )
    elif shape == "admin":
        user = draw(
            st.one_of(
                st.sampled_from(["alice", "bob", "admin", "%2e%2e", "a%2Fb"]),
                st.text(min_size=1, max_size=10).map(lambda s: quote(s, safe="")),
            )
        )
        path = api + draw(
            st.sampled_from(
                [
                    "admin/users",
                    f"admin/users/{user}/revoke",
                    "admin/revoke",
                    f"admin/connections/{draw(names(known))}/scopes",
                ]
            )
        )
    else:
        segs = draw(st.lists(st.sampled_from(ODD_SEGMENTS + known), min_size=1, max_size=5))
        path = api + "/".join(segs)
    query = draw(queries())
    content, headers = draw(bodies())
    if method in ("GET", "HEAD", "OPTIONS") and draw(st.booleans()):
        content = None
    return auth, method, path, query, content, headers


@st.composite
def queries(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.one_of(
                st.builds(
                    lambda v: f"path={v}",
                    st.sampled_from(
                        [
                            "",
                            "a",
                            "a/b",
                            "a/b/c",
                            "a/b/c/d",
                            "main/demo/sales",
                            "main/demo",
                            "%ff",
                            "////",
                            "a//b",
                            "%2F",
                            "x" * 3000,
                            "main/demo/sales/extra/more",
                        ]
                    ),
                ),
                st.builds(lambda v: f"path={quote(v, safe='/')}", st.text(max_size=30)),
                st.sampled_from(
                    ["all=1", "all=true", "all=%ff", "path=a&path=b", "%ff=1", "=", "&&", "a=%00"]
                ),
            ),
            max_size=3,
        )
    )
    return "&".join(parts)


@st.composite
def callback_requests(
    draw: st.DrawFn,
    auths: list[Auth],
    real_states: Callable[[], list[str]],
    issuer: str,
    callback_path: str,
) -> tuple[Auth, str, str, str, bytes | None, dict[str, str]]:
    auth = draw(st.sampled_from(auths))
    states = real_states()
    state_options = [
        st.text(max_size=60).map(lambda s: quote(s, safe="")),
        st.from_regex(r"\A[A-Za-z0-9_\-]{43}\Z"),
        st.sampled_from(["", "%ff%fe", "%00", "x" * 5000, "%C0%80", "%ED%A0%80"]),
    ]
    if states:
        state_options.append(st.sampled_from(states))
    params: list[tuple[str, str]] = []
    if draw(st.integers(0, 9)):
        params.append(("state", draw(st.one_of(*state_options))))
    if draw(st.integers(0, 3)):
        params.append(
            (
                "code",
                draw(
                    st.one_of(
                        st.from_regex(r"\A[A-Za-z0-9_\-]{10,64}\Z"),
                        st.sampled_from(["", "%ff", "%00", "x" * 4097, "code"]),
                    )
                ),
            )
        )
    if draw(st.booleans()):
        params.append(
            (
                "iss",
                draw(
                    st.sampled_from(
                        [quote(issuer, safe=""), "https%3A%2F%2Fevil.example.com", "", "%ff"]
                    )
                ),
            )
        )
    if draw(st.integers(0, 3)) == 0:
        params.append(
            (
                "error",
                draw(
                    st.sampled_from(
                        [
                            "access_denied",
                            "invalid_scope",
                            "redirect_uri_mismatch",
                            "consent_required",
                            "server_error",
                            "%3Cscript%3E",
                            "a%20b",
                            "%ff",
                            "x" * 5000,
                        ]
                    )
                ),
            )
        )
        if draw(st.booleans()):
            params.append(("error_description", quote(draw(st.text(max_size=80)), safe="")))
    if draw(st.integers(0, 4)) == 0 and params:
        params.append(draw(st.sampled_from(params)))  # a repeated parameter
    if draw(st.integers(0, 5)) == 0:
        params.append((quote(draw(st.text(min_size=1, max_size=8)), safe=""), "%ff"))
    query = "&".join(f"{k}={v}" for k, v in draw(st.permutations(params)))
    method = "GET" if draw(st.integers(0, 7)) else draw(st.sampled_from(["POST", "PUT", "HEAD"]))
    return auth, method, callback_path, query, None, {}


SEED_BODIES = [
    b"[" * 5_000 + b"]" * 5_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b'{"name": "x", "connector": ' + b"[" * 3_000 + b"]" * 3_000 + b"}",
    b'{"name": "' + b"x" * 3_000_000 + b'"}',
    b'{"name": "fz-2", "connector": "bigquery", "project": "p", "scopes": [1, null, {}]}',
    b'{"name": "fz-3", "connector": "bigquery", "project": "p", "driver_options": []}',
    b'{"name": "fz-4\\n", "connector": "bigquery", "project": "p"}',
    b'{"name": "fz-5", "connector": "snowflake", "account": "a", "auth": "oauth-jwt"}',
    b'{"name": "fz-6", "connector": "bigquery", "project": "p", "description": {"a": 1}}',
    b'{"name": "fz-7", "connector": "bigquery", "project": "p", "resource": 5}',
    b'{"name": 1e999}',
    b"\xff\xfe{",
    b'{"name": "\\ud800"}',
    b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    b"",
]


def seed_requests(
    auths: list[Auth], api: str, names: list[str], browse_name: str
) -> list[tuple[Auth, str, str, str, bytes | None, dict[str, str]]]:
    """Known-nasty inputs sent before the random ones, so every run covers them."""
    json_ct = {"Content-Type": "application/json"}
    out: list[tuple[Auth, str, str, str, bytes | None, dict[str, str]]] = []
    for auth in auths:
        for body in SEED_BODIES:
            out.append((auth, "POST", f"{api}connections", "", body, json_ct))
            for name in names:
                out.append((auth, "PUT", f"{api}connections/{name}", "", body, json_ct))
                out.append((auth, "PUT", f"{api}connections/{name}/private_key", "", body, {}))
        for q in [
            "path=a/b/c/d",
            "path=a/b/c/d/e/f",
            "path=%ff",
            "path=main&path=x",
            "path=" + "a/" * 2000,
            "path=main/demo/sales",
            "path=no/such/table",
            "path=%27%3B--/x",
            "path=%00",
        ]:
            out.append((auth, "GET", f"{api}connections/{browse_name}/browse", q, None, {}))
    return out


def run_list(
    sender: Sender, requests: list[tuple[Auth, str, str, str, bytes | None, dict[str, str]]]
) -> int:
    before = sender.checker.requests
    for auth, method, path, query, content, headers in requests:
        sender.send(auth, method, path, query=query, content=content, headers=headers)
    return sender.checker.requests - before


def run_raw(sender: Sender, strategy: st.SearchStrategy[Any], total: int) -> int:
    before = sender.checker.requests

    @_fuzz_settings(total)
    @given(req=strategy)
    def one(req: tuple[Auth, str, str, str, bytes | None, dict[str, str]]) -> None:
        auth, method, path, query, content, headers = req
        sender.send(auth, method, path, query=query, content=content, headers=headers)

    one()
    return sender.checker.requests - before


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - start
