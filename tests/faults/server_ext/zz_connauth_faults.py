"""A test-only Jupyter server extension for tests/faults (never enable it elsewhere).

The broker API acts for the server's owner only. The crash and key-rotation tests need
many users' tokens written and refreshed at once, so this extension adds, next to the
broker and under Jupyter's own token auth:

- ``POST connauth-faults/authorize`` ``{"user", "connection"}`` → a consent flow started
  for any user (the test signs in at the IdP);
- ``POST connauth-faults/callback`` ``{"user", "query"}`` → the IdP's redirect completed
  as that user's browser would (the real callback takes the owner's session only);
- ``POST connauth-faults/churn`` ``{"refresh": [[user, conn], ...], "writes": [[user,
  conn, seq], ...], "spread": seconds}`` → all at once: ``Broker.token`` (a refresh
  when due) for each refresh pair on the event loop, and ``store.put_token`` of a
  self-checking synthetic record for each write on worker threads; answers the counts.

It also writes the kernel secret to ``$CONNAUTH_FAULTS_SECRET_FILE`` so the test can
call the broker API as a kernel does. Its name sorts after ``jupyter_connauth``, so it
loads after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import secrets
import time
from collections import Counter
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from jupyter_connauth.broker.broker import Broker, TokenGrant
from jupyter_connauth.core.errors import ConnAuthError
from jupyter_connauth.core.tokens import TokenRecord

SEP = "|"


def synthetic_record(user: str, connection: str, seq: int) -> TokenRecord:
    """A token whose parts check each other: a torn or mixed record fails ``check_synthetic``."""
    body = SEP.join((user, connection, str(seq), secrets.token_urlsafe(1100)))
    access = body + SEP + hashlib.sha256(body.encode()).hexdigest()
    return TokenRecord(
        access_token=access,
        expires_at=time.time() + 7 * 24 * 3600,
        refresh_token="rt" + SEP + hashlib.sha256(access.encode()).hexdigest(),
        scope=("sql",),
        identity={"email": f"{user}@example.com", "sub": user},
    )


def check_synthetic(record: TokenRecord, user: str, connection: str) -> None:
    body, _, digest = record.access_token.rpartition(SEP)
    assert hashlib.sha256(body.encode()).hexdigest() == digest, f"{user}/{connection}: torn"
    owner, conn, _seq, _payload = body.split(SEP, 3)
    assert (owner, conn) == (user, connection), f"{user}/{connection}: another row's token"
    assert (
        record.refresh_token
        == "rt" + SEP + hashlib.sha256(record.access_token.encode()).hexdigest()
    ), f"{user}/{connection}: refresh token of another record"
    assert record.identity == {"email": f"{user}@example.com", "sub": user}


class _Base(APIHandler):
    @property
    def broker(self) -> Broker:
        broker: Broker = self.settings["connauth_broker"]
        return broker

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.request.body or b"{}")
        return data


class AuthorizeHandler(_Base):
    @web.authenticated
    async def post(self) -> None:
        body = self.body()
        started = await self.broker.authorize(body["user"], body["connection"])
        self.finish(started.to_json())


class CallbackHandler(_Base):
    """``POST connauth-faults/callback`` ``{"user", "query"}``: the IdP's redirect as that
    user's own browser session brings it (the real callback completes the owner's flows
    only: it binds each consent to a browser signed in as the flow's user)."""

    @web.authenticated
    async def post(self) -> None:
        from urllib.parse import parse_qs

        from jupyter_connauth.web.pages import render_callback

        body = self.body()
        args = {k: [v.encode() for v in vs] for k, vs in parse_qs(body["query"]).items()}
        status, page = await render_callback(self.broker, args, body["user"])
        self.set_status(status)
        self.finish(page)


class ChurnHandler(_Base):
    @web.authenticated
    async def post(self) -> None:
        body = self.body()
        broker = self.broker
        writes = body.get("writes", [])
        fingerprints = {c: broker.connection(c).fingerprint for _u, c, _s in writes}

        spread = float(body.get("spread", 0.0))

        async def refresh(user: str, conn: str) -> str:
            # spread over a window, so a (user, connection) refreshes several times
            # instead of every call joining one single-flight refresh
            await asyncio.sleep(random.uniform(0.0, spread))
            try:
                result = await broker.token(user, conn)
            except ConnAuthError as e:
                return f"error:{e.code}"
            return "ok" if isinstance(result, TokenGrant) else f"consent:{result.flow.reason}"

        def write(user: str, conn: str, seq: int) -> str:
            record = synthetic_record(user, conn, seq)
            broker.store.put_token(user, conn, fingerprints[conn], record)
            return "written"

        ops: list[Any] = [refresh(u, c) for u, c in body.get("refresh", [])]
        ops += [asyncio.to_thread(write, u, c, int(s)) for u, c, s in writes]
        results = await asyncio.gather(*ops, return_exceptions=True)
        counts = Counter(
            r if isinstance(r, str) else f"exception:{type(r).__name__}: {r}" for r in results
        )
        self.finish(dict(counts))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "zz_connauth_faults"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    settings = serverapp.web_app.settings
    if "connauth_broker" not in settings:
        raise RuntimeError("jupyter_connauth did not load before zz_connauth_faults")
    path = os.environ["CONNAUTH_FAULTS_SECRET_FILE"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(settings["connauth_kernel_token"])
    base = serverapp.base_url
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "connauth-faults/authorize"), AuthorizeHandler),
            (url_path_join(base, "connauth-faults/churn"), ChurnHandler),
            (url_path_join(base, "connauth-faults/callback"), CallbackHandler),
        ],
    )
