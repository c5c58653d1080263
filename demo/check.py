"""``scripts/demo --check``: the quickstart, headless, as alice and then as bob."""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx2
import nbformat
from nbclient import NotebookClient

from demo.stack import USERS, WORK, email, say
from demo.state import NOTEBOOK
from tests.idp_fixture import headless_login


def sign_in(base: str, token: str, connections: list[str], login: str) -> None:
    """What the user does in the popups, once per connection."""
    headers = {"Authorization": f"token {token}"}
    with (
        httpx2.Client(base_url=f"{base}connauth/api/", headers=headers, timeout=60) as api,
        httpx2.Client(timeout=60) as browser,
    ):
        # The server owner's browser: the callback completes a flow only for a browser
        # signed in to Jupyter (its session cookie, from the token login).
        browser.get(f"{base}lab", params={"token": token}).raise_for_status()
        for name in connections:
            api.post(f"connections/{name}/revoke").raise_for_status()
        for name in connections:
            answer = api.post(f"connections/{name}/token").json()
            if answer.get("status") != "consent_required":
                raise SystemExit(f"{name}: expected a consent request, got {answer.get('status')}")
            callback = headless_login(answer["authorize_url"], login)
            page = browser.get(callback)
            if page.status_code != 200:
                raise SystemExit(
                    f"{name}: the callback failed for {login}: HTTP {page.status_code}"
                )


def outputs_text(nb: Any) -> list[tuple[str, str]]:
    """(cell source, text of its outputs) for the code cells."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts = []
        for o in cell.get("outputs", []):
            if o.get("output_type") in ("display_data", "execute_result"):
                texts.append(str(o.get("data", {}).get("text/plain", "")))
            elif o.get("output_type") == "stream":
                texts.append(str(o.get("text", "")))
            elif o.get("output_type") == "error":
                texts.append(f"ERROR {o.get('ename')}: {o.get('evalue')}")
        out.append((cell.source, "\n".join(texts)))
    return out


def judge(login: str, nb: Any) -> list[str]:
    """Prints what ``login`` saw in the executed quickstart; returns the failures."""
    other = next(u for u in USERS if u != login)
    failures: list[str] = []
    for source, text in outputs_text(nb):
        first = source.splitlines()[0] if source else ""
        if "ERROR" in text:
            failures.append(f"{login}: {first}: {text.strip()[:300]}")
        query = first.startswith("%%sql_connector") and "--no-wait" not in first
        whoami = first.startswith("%sql_connector whoami")
        if query or whoami:
            print(f"\n--- {login}: {first}\n{text.strip()}", flush=True)
            if login not in text.lower():
                failures.append(f"{login}: {first}: own identity/rows missing")
            if other in text.lower():
                failures.append(f"{login}: {first}: saw {other}'s rows")
        if first.startswith("%%sql_connector snowflake --no-wait") and "Authorize" not in text:
            failures.append(f"{login}: the balloon did not come back after revoke")
    print(f"\n{login}: {'ok' if not failures else 'FAILED'} ({email(login)})", flush=True)
    return failures


def verdict(failures: list[str], where: str) -> int:
    if failures:
        print("\nCHECK FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(
        f"\nCHECK OK: {where}, each user saw only their own rows and identity in "
        "Snowflake, Databricks and BigQuery."
    )
    return 0


def run_check(base: str, token: str, kernel_secret: str, connections: list[str]) -> int:
    os.environ["JUPYTER_CONNAUTH_URL"] = f"{base}connauth/api/"
    os.environ["JUPYTER_CONNAUTH_TOKEN"] = kernel_secret
    failures: list[str] = []
    for login in USERS:
        say(f"As {login}: signing in headlessly, then running the quickstart")
        sign_in(base, token, connections, login)
        nb = nbformat.read(NOTEBOOK, as_version=4)
        NotebookClient(
            nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(WORK)}}
        ).execute()
        failures += judge(login, nb)
    return verdict(failures, "on one JupyterLab, one user after the other")
