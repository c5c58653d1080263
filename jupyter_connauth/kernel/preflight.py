"""``%sql_connector preflight [NAME ...] [--for DURATION]``: consent for a whole notebook
before Run All.

The connections are those the notebook's ``%%sql_connector`` cells use (the kernel
reads its notebook file, named by ``JPY_SESSION_NAME``) and those named on the line.
Every one that needs consent gets its Authorize link in one balloon; the command waits
until all are granted (or fail, or time out), then reports the grants that cannot last
the given time: an access token that expires before then with no refresh token to
renew it (or a refresh token the IdP said expires before then).
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import FlowError
from .balloon import CONSENT_CANCELLED, Cancelled, LiveOutput, balloon_html, balloon_text
from .client import BrokerAPI, ConsentNeeded
from .display import format_time

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def parse_duration(text: str) -> float:
    """``2h``, ``90m``, ``1h30m``, ``45s``, ``3600`` → seconds."""
    m = _DURATION.match(text.strip().lower())
    if not text.strip() or m is None or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r} (write e.g. 2h, 90m, 1h30m)")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + s)


def notebook_connections(path: str | None, parse: Callable[[str], str | None]) -> list[str]:
    """The connections of the notebook's ``%%sql_connector`` cells, in order; ``parse``
    gives a cell's connection from its first line (None when the line does not parse)."""
    if not path or not Path(path).is_file():
        return []
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names: list[str] = []
    for cell in nb.get("cells") or []:
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source") or ""
        text = "".join(source) if isinstance(source, list) else str(source)
        first = text.lstrip().split("\n", 1)[0]
        if not first.startswith("%%sql_connector"):
            continue
        name = parse(first.removeprefix("%%sql_connector"))
        if name and name not in names:
            names.append(name)
    return names


class MultiBalloon(LiveOutput):
    """One balloon with an Authorize link per connection, updated as each completes."""

    def __init__(self, consents: list[ConsentNeeded], idp: str, *, rich: bool) -> None:
        self.consents = consents
        self.idp = idp
        self.rich = rich
        self.status = {c.connection: "waiting for you to sign in" for c in consents}

    def _bundle(self, footer: str) -> dict[str, str]:
        live = [c for c in self.consents if self.status[c.connection].startswith("waiting")]
        done = [c for c in self.consents if c not in live]
        text = f"Preflight: {len(self.consents)} connection(s) need your consent.\n"
        text += "".join(balloon_text(c, self.idp) for c in live)
        text += "".join(f"{c.connection}: {self.status[c.connection]}\n" for c in done)
        bundle = {"text/plain": text + footer}
        if self.rich:
            parts = [balloon_html(c, self.idp, self.status[c.connection]) for c in live]
            parts += [
                f"<div>{html.escape(c.connection)}: {html.escape(self.status[c.connection])}</div>"
                for c in done
            ]
            bundle["text/html"] = "".join(parts) + f"<small>{html.escape(footer)}</small>"
        return bundle

    def show(self, footer: str) -> None:
        self.publish(self._bundle(footer))

    def close(self, status: str) -> None:
        """Every link still live is dropped (no live authorize URL stays in the notebook)."""
        for c in self.consents:
            if self.status[c.connection].startswith("waiting"):
                self.status[c.connection] = status
        self.publish(self._bundle(""), final=True)


def wait_for_all(
    client: BrokerAPI,
    consents: list[ConsentNeeded],
    *,
    idp: str,
    timeout: float,
    interval: float,
    rich: bool,
) -> list[str]:
    """Show one balloon for ``consents`` and poll their flows until each completes or
    fails, or the time is up. Returns the connections not granted."""
    balloon = MultiBalloon(consents, idp, rich=rich)
    soonest = min(c.expires_at for c in consents)
    deadline = time.monotonic() + min(timeout, max(1.0, soonest - time.time()))
    try:
        while True:
            pending = [c for c in consents if balloon.status[c.connection].startswith("waiting")]
            left = int(deadline - time.monotonic())
            if not pending:
                break
            if left <= 0:
                balloon.close("timed out: run %sql_connector preflight again")
                break
            balloon.show(f"{len(pending)} left to authorize… {left // 60}:{left % 60:02d} left")
            for c in pending:
                flow = client.flow(c.flow_id)
                if flow["status"] == "complete":
                    who = flow.get("identity")
                    balloon.status[c.connection] = "authorized" + (f" as {who}" if who else "")
                elif flow["status"] == "failed":
                    balloon.status[c.connection] = f"failed: {flow.get('message')}"
            time.sleep(interval)
    except KeyboardInterrupt:
        balloon.close("cancelled: run %sql_connector preflight again")
        raise Cancelled(CONSENT_CANCELLED) from None
    balloon.show("")
    return [c.connection for c in consents if not balloon.status[c.connection].startswith("auth")]


def lasting(status: dict[str, Any], seconds: float, now: float | None = None) -> str | None:
    """Why a grant cannot last ``seconds`` from now, or None when it can."""
    now = time.time() if now is None else now
    until = now + seconds
    if status.get("status") != "authorized":
        return str(status.get("reason_text") or status.get("message") or status.get("status"))
    if status.get("auth") == "oauth-jwt":
        return None  # the broker mints a JWT for every use
    refresh_until = status.get("refresh_expires_at")
    if refresh_until is not None and refresh_until < until:
        return f"the IdP's refresh token expires at {format_time(refresh_until)}"
    expires = status.get("expires_at")
    if not status.get("refreshable") and expires is not None and expires < until:
        return (
            f"the access token expires at {format_time(expires)} and there is no refresh "
            "token (add offline_access to the connection's scopes)"
        )
    return None


def failed(names: list[str]) -> FlowError:
    return FlowError(
        f"Not authorized: {', '.join(names)}.",
        "run %sql_connector preflight again and sign in for each, "
        "or %sql_connector authorize NAME for one",
        code="preflight_incomplete",
    )
