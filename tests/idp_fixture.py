"""Run the test OpenID provider (tests/idp/provider.mjs) from Python tests.

The provider is panva's ``oidc-provider`` (a certified OpenID provider) in a
Node process with an in-memory store; see tests/idp/README.md for its config
keys and test hooks.  This module only starts/stops it and drives its built-in
development login and consent forms headlessly.  It holds no pytest fixtures:
conftest.py wires them.

    with running_idp(narrow_scopes=["sql"]) as idp:
        url = headless_login(authorize_url)  # -> "<redirect_uri>?code=...&state=...&iss=..."
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2

IDP_DIR = Path(__file__).resolve().parent / "idp"
PROVIDER_SCRIPT = IDP_DIR / "provider.mjs"

DEFAULT_CLIENT_ID = "connauth-test-client"
DEFAULT_CLIENT_SECRET = "connauth-test-client-secret-6f1d2c"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8888/oauth/connector/callback"

START_TIMEOUT = 45.0  # generous: a loaded 2-core CI machine starts Node slowly

_UNSET: Any = object()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


#: Entra's default tenant id in the ``entra`` profile (``tenant_id`` changes it).
ENTRA_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def profile_mount_path(config: dict[str, Any]) -> str:
    """The issuer's path for a vendor profile (tests/idp/profiles.mjs)."""
    profile = config.get("profile") or "generic"
    if profile == "entra":
        return f"/{config.get('tenant_id') or ENTRA_TENANT}/v2.0"
    if profile == "okta":
        return "/oauth2/default"
    if profile == "keycloak":
        return f"/realms/{config.get('realm') or 'connauth'}"
    return ""


def default_client(redirect_uris: list[str] | None = None) -> dict[str, Any]:
    return {
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "redirect_uris": list(redirect_uris or [DEFAULT_REDIRECT_URI]),
    }


class IdPStartError(RuntimeError):
    pass


class TestIdP:
    """One test OpenID provider process.

    ``config`` holds the provider's config keys (tests/idp/README.md) except
    ``port`` and ``keys_file``, which this class manages; ``clients`` defaults to
    one confidential client (DEFAULT_CLIENT_ID / DEFAULT_CLIENT_SECRET /
    DEFAULT_REDIRECT_URI).  The signing key persists across ``restart()`` (like a
    real IdP's), the grants and tokens do not.
    """

    __test__ = False  # not a test class, despite the name

    def __init__(
        self,
        *,
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        node: str | None = None,
        **config: Any,
    ) -> None:
        self.port: int = port or free_port()
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="connauth-idp-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, workdir, True)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(log_path) if log_path else self.workdir / "idp.log"
        self.node = node or os.environ.get("NODE") or shutil.which("node") or "node"
        config.setdefault("clients", [default_client()])
        self.config: dict[str, Any] = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # ------------------------------------------------------------ lifecycle

    @property
    def issuer(self) -> str:
        base = f"http://127.0.0.1:{self.port}{profile_mount_path(self.config)}"
        return str(self.config.get("issuer") or base).rstrip("/")

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``: where paths outside the issuer's live (Entra's
        ``/common/v2.0`` discovery)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def client_id(self) -> str:
        return str(self.config["clients"][0]["client_id"])

    @property
    def client_secret(self) -> str | None:
        secret = self.config["clients"][0].get("client_secret")
        return None if secret is None else str(secret)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _full_config(self) -> dict[str, Any]:
        cfg = dict(self.config)
        cfg["port"] = self.port
        cfg["keys_file"] = str(self.workdir / "signing-key.json")
        return cfg

    def start(self) -> TestIdP:
        """Start the provider; one more try if a start hangs (seen once in ~20 CI runs on a
        loaded machine: Node printed its runtime warning, then nothing)."""
        if self.running:
            return self
        try:
            return self._start_once()
        except IdPStartError as first:
            if "did not print" not in str(first):
                raise
            return self._start_once()

    def _start_once(self) -> TestIdP:
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise IdPStartError(
                f"{IDP_DIR / 'node_modules'} is missing: run npm ci in tests/idp "
                "(cd tests/idp && npm ci)"
            )
        if shutil.which(self.node) is None and not Path(self.node).exists():
            raise IdPStartError(f"node executable not found ({self.node!r}); install Node.js >= 20")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        env = dict(os.environ)
        env["IDP_CONFIG"] = json.dumps(self._full_config())
        env.pop("NODE_OPTIONS", None)
        self._proc = subprocess.Popen(
            [self.node, str(PROVIDER_SCRIPT)],
            cwd=str(IDP_DIR),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ready = f"READY {self.issuer}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = self._log_since(offset)
            if any(line.strip() == ready for line in text.splitlines()):
                return self
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._close_log()
                self._proc = None
                raise IdPStartError(
                    f"test IdP exited with code {rc} before it was ready; its output "
                    f"({self.log_path}):\n{text}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise IdPStartError(
                    f"test IdP did not print {ready!r} within {START_TIMEOUT:.0f}s; its output "
                    f"({self.log_path}):\n{self._log_since(offset)}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self._close_log()

    def restart(self, **config_changes: Any) -> TestIdP:
        """Stop and start again on the same port: every grant and token is forgotten."""
        self.stop()
        self.config.update(config_changes)
        return self.start()

    def close(self) -> None:
        """Stop, and delete the work directory if this object created it."""
        self.stop()
        cleanup = getattr(self, "_cleanup", None)
        if cleanup is not None:
            cleanup()

    def __enter__(self) -> TestIdP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        """Everything the provider printed (all runs), for leak scans."""
        return self._log_since(0)

    # ------------------------------------------------------------ HTTP helpers

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        with httpx2.Client(timeout=10, trust_env=False) as http:
            r = http.request(method, f"{self.issuer}{path}", json=body)
        if r.status_code != 200:
            raise AssertionError(f"{method} {path} -> {r.status_code}: {r.text}")
        data: dict[str, Any] = r.json()
        return data

    def discovery(self) -> dict[str, Any]:
        return self._request("GET", "/.well-known/openid-configuration")

    def jwks(self) -> dict[str, Any]:
        """The provider's public signing keys (fetched from jwks_uri)."""
        with httpx2.Client(timeout=10, trust_env=False) as http:
            r = http.get(self.discovery()["jwks_uri"])
            r.raise_for_status()
            keys: dict[str, Any] = r.json()
            return keys

    def stats(self) -> dict[str, Any]:
        """``{"token_requests": {grant_type: n}, "token_errors": {...}, "token_log": [...]}``
        plus authorization/revocation/introspection request counts."""
        return self._request("GET", "/__test__/stats")

    def token_requests(self, grant_type: str) -> int:
        return int(self.stats()["token_requests"].get(grant_type, 0))

    def reset_stats(self) -> None:
        self._request("POST", "/__test__/reset", {})

    def set_faults(
        self,
        *,
        delay_ms: int = _UNSET,
        fail_token_endpoint: int | None = _UNSET,
        garbage: bool = _UNSET,
        fail_times: int | None = _UNSET,
        fail_error: str | None = _UNSET,
    ) -> dict[str, Any]:
        """Token-endpoint faults; only the arguments given change.

        fail_token_endpoint=503 answers that status with an HTML body; garbage=True
        answers 200 with a non-JSON body; fail_times=N clears both after N faulty
        answers; fail_error="temporarily_unavailable" answers that OAuth error as JSON
        (status 400, or fail_token_endpoint's) with Retry-After: 2; delay_ms delays every
        token request.  ``clear_faults()`` undoes all.
        """
        changes = {
            k: v
            for k, v in {
                "delay_ms": delay_ms,
                "fail_token_endpoint": fail_token_endpoint,
                "garbage": garbage,
                "fail_times": fail_times,
                "fail_error": fail_error,
            }.items()
            if v is not _UNSET
        }
        return self.set_runtime(**changes)

    def clear_faults(self) -> dict[str, Any]:
        return self.set_runtime(
            delay_ms=0, fail_token_endpoint=None, garbage=False, fail_times=None, fail_error=None
        )

    def set_runtime(self, **changes: Any) -> dict[str, Any]:
        """Change runtime settings: delay_ms, fail_token_endpoint, fail_times,
        garbage, access_token_ttl, narrow_scopes, reject_subject_tokens.  Returns the
        new settings."""
        return self._request("POST", "/__test__/config", changes)

    def revoke_grants(self, account: str | None = None) -> int:
        """Revoke every grant (or those of one login) with its tokens, as when a
        user or admin removes the app's access.  Returns how many were revoked."""
        body = {"account": account} if account else {}
        return int(self._request("POST", "/__test__/revoke_grants", body)["revoked"])


@contextlib.contextmanager
def running_idp(**config: Any) -> Iterator[TestIdP]:
    """``TestIdP(**config)`` started for the ``with`` block, then stopped and cleaned."""
    idp = TestIdP(**config)
    try:
        yield idp.start()
    finally:
        idp.close()


# ---------------------------------------------------------------- headless login


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []
        self.links: list[str] = []
        self._form: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = {
                "action": a.get("action", ""),
                "method": a.get("method", "get").lower(),
                "inputs": {},
            }
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            self._form["inputs"][a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def _page_text(r: httpx2.Response, limit: int = 3000) -> str:
    return f"{r.request.method} {r.request.url} -> HTTP {r.status_code}\n{r.text[:limit]}"


def headless_login(
    authorize_url: str,
    login: str = "alice",
    password: str = "x",
    *,
    consent: bool = True,
    abort: bool = False,
    client: httpx2.Client | None = None,
) -> str:
    """Drive the test IdP's login and consent pages like a browser would.

    Starts at ``authorize_url``, follows the IdP's redirects, submits the login
    form (any login/password is accepted) and the consent form when they are
    shown, and returns the URL of the final redirect to the client's
    redirect_uri (not fetched).  ``abort=True`` aborts at the first interaction
    page and ``consent=False`` aborts at the consent page: both return the
    ``error=access_denied`` redirect.  Pass ``client`` (an ``httpx2.Client``) to
    keep the IdP's session cookies between logins, like one browser: a second
    authorization then skips the login page (and the consent page when the grant
    already covers the request).  Raises AssertionError with the page text on
    anything unexpected (e.g. the IdP's HTML 400 for an unregistered redirect_uri).
    """
    own = client is None
    http = client or httpx2.Client(timeout=10, trust_env=False, follow_redirects=False)
    try:
        r = http.get(authorize_url, follow_redirects=False)
        location = _interactions(http, r, login, password, consent=consent, abort=abort)
        if isinstance(location, httpx2.Response):
            raise AssertionError(f"IdP page has no form to submit:\n{_page_text(location)}")
        return location
    finally:
        if own:
            http.close()


def _interactions(
    http: httpx2.Client,
    r: httpx2.Response,
    login: str,
    password: str,
    *,
    consent: bool,
    abort: bool,
) -> str | httpx2.Response:
    """Follow the IdP's redirects and submit its login and consent forms: the URL of the
    first redirect off the IdP, or the first IdP page without a form (the device flow's
    success page)."""
    idp_origin = urlsplit(str(r.url))[:2]
    seen_login = False
    for _ in range(30):
        if r.is_redirect:
            location = urljoin(str(r.url), r.headers["location"])
            if urlsplit(location)[:2] != idp_origin:
                return location
            r = http.get(location, follow_redirects=False)
            continue
        if r.status_code != 200:
            raise AssertionError(f"unexpected response from the IdP:\n{_page_text(r)}")
        parser = _Forms()
        parser.feed(r.text)
        form = next((f for f in parser.forms if f["method"] == "post"), None)
        if form is None:
            return r
        action = urljoin(str(r.url), form["action"])
        if urlsplit(action)[:2] != idp_origin:
            raise AssertionError(
                "IdP answered with a form_post to the client; use response_mode=query:\n"
                + _page_text(r)
            )
        prompt = form["inputs"].get("prompt")
        if prompt not in ("login", "consent"):
            raise AssertionError(f"unexpected IdP interaction page:\n{_page_text(r)}")
        if abort or (prompt == "consent" and not consent):
            r = http.get(action.rstrip("/") + "/abort", follow_redirects=False)
            continue
        data = dict(form["inputs"])
        if prompt == "login":
            if seen_login:
                raise AssertionError(f"IdP asked for the login twice:\n{_page_text(r)}")
            seen_login = True
            data.update(login=login, password=password)
        r = http.post(action, data=data, follow_redirects=False)
    raise AssertionError(f"too many steps in the IdP login flow; last page:\n{_page_text(r)}")


def headless_device(
    verification_uri: str,
    user_code: str,
    login: str = "alice",
    password: str = "x",
    *,
    deny: bool = False,
    client: httpx2.Client | None = None,
) -> str:
    """The user of RFC 8628 on another device: opens ``verification_uri``, types
    ``user_code`` into the IdP's form, confirms it (or, with ``deny=True``, presses the
    confirmation page's Abort, after which the token endpoint answers access_denied),
    then signs in and consents like :func:`headless_login`. Returns the title of the
    IdP's last page ("Sign-in Success" when consent was given, "Sign-in interrupted"
    after Abort)."""
    own = client is None
    http = client or httpx2.Client(timeout=10, trust_env=False, follow_redirects=False)
    try:
        r = http.get(verification_uri, follow_redirects=False)
        for step in ("op.deviceInputForm", "op.deviceConfirmForm"):
            if r.status_code != 200 or f'id="{step}"' not in r.text:
                raise AssertionError(f"expected the IdP's {step}:\n{_page_text(r)}")
            parser = _Forms()
            parser.feed(r.text)
            form = parser.forms[0]
            data = dict(form["inputs"])
            if step == "op.deviceInputForm":
                data["user_code"] = user_code
            elif deny:
                data.pop("confirm", None)
                data["abort"] = "yes"
            r = http.post(urljoin(str(r.url), form["action"]), data=data, follow_redirects=False)
        if deny:  # the IdP shows its code form again, saying the sign-in was interrupted
            if "interrupted" not in r.text:
                raise AssertionError(f"the IdP did not take the Abort:\n{_page_text(r)}")
            return "Sign-in interrupted"
        page = _interactions(http, r, login, password, consent=True, abort=False)
        if not isinstance(page, httpx2.Response):
            raise AssertionError(f"the device flow left the IdP for {urlsplit(page)[:2]}")
        m = re.search(r"<title>(.*?)</title>", page.text, re.S)
        return m.group(1).strip() if m else page.text[:200]
    finally:
        if own:
            http.close()
