"""``scripts/demo --check`` on the hub: alice and bob each sign in to the hub at the IdP,
start their own server, consent where the connection needs it, and run the quickstart
in a kernel of their own server."""

from __future__ import annotations

import contextlib
import time

import httpx2
import nbformat

from demo.check import judge, verdict
from demo.remote_kernel import execute_notebook
from demo.stack import USERS, say
from demo.state import NOTEBOOK
from tests.idp_fixture import headless_login


def hub_login(hub: str, login: str) -> httpx2.Client:
    """A browser signed in to the hub through the IdP's login form (OAuthenticator)."""
    browser = httpx2.Client(trust_env=False, timeout=60)
    r = browser.get(f"{hub}hub/oauth_login")
    if not r.is_redirect:
        raise SystemExit(f"the hub's login did not send {login} to the IdP: HTTP {r.status_code}")
    done = browser.get(headless_login(r.headers["location"], login))
    if not done.is_redirect:
        raise SystemExit(f"the hub's login failed for {login}: HTTP {done.status_code}")
    browser.get(f"{hub}hub/home").raise_for_status()  # sets the _xsrf cookie
    return browser


def api_token(browser: httpx2.Client, hub: str, login: str) -> str:
    """What JupyterHub's token page does: a token of the signed-in user's own."""
    r = browser.post(
        f"{hub}hub/api/users/{login}/tokens",
        json={"note": "demo check", "expires_in": 3600},
        headers={"X-XSRFToken": browser.cookies.get("_xsrf") or ""},
    )
    r.raise_for_status()
    return str(r.json()["token"])


def start_server(hub: str, login: str, token: str) -> str:
    headers = {"Authorization": f"token {token}"}
    with httpx2.Client(base_url=f"{hub}hub/api/", headers=headers, timeout=60) as api:
        api.post(f"users/{login}/server")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            server = api.get(f"users/{login}").json().get("servers", {}).get("", {})
            if server.get("ready"):
                return f"{hub}user/{login}/"
            time.sleep(0.3)
    raise SystemExit(f"{login}'s server did not start within 120 s; see .cache/demo/hub")


def consent(browser: httpx2.Client, server: str, token: str, names: list[str], login: str) -> None:
    """Fresh consent where a connection needs it; the login's token serves the others."""
    headers = {"Authorization": f"token {token}"}
    with httpx2.Client(base_url=f"{server}connauth/api/", headers=headers, timeout=60) as api:
        for name in names:
            api.post(f"connections/{name}/revoke").raise_for_status()
            answer = api.post(f"connections/{name}/token").json()
            if answer.get("status") == "ok" and answer.get("via") == "login":
                say(f"  {name}: the hub login's token, exchanged (no popup)")
                continue
            if answer.get("status") != "consent_required":
                raise SystemExit(f"{name}: expected a consent request, got {answer.get('status')}")
            page = browser.get(
                headless_login(answer["authorize_url"], login), follow_redirects=True
            )
            if page.status_code != 200:
                raise SystemExit(
                    f"{name}: the callback failed for {login}: HTTP {page.status_code}"
                )
            say(f"  {name}: consented at the IdP")


def run_hub_check(hub: str, connections: list[str]) -> int:
    failures: list[str] = []
    for login in USERS:
        say(f"As {login}: signing in to the hub at the IdP, starting {login}'s own server")
        with contextlib.closing(hub_login(hub, login)) as browser:
            token = api_token(browser, hub, login)
            server = start_server(hub, login, token)
            consent(browser, server, token, connections, login)
        say(f"As {login}: running the quickstart in a kernel of {server}")
        nb = nbformat.read(NOTEBOOK, as_version=4)
        execute_notebook(server, token, nb)
        failures += judge(login, nb)
    return verdict(failures, "on the hub, each in their own server")
