"""A morning refresh storm on PostgreSQL: N users' tokens all due at once, fetched through
``--replicas`` hub-service brokers sharing one PostgreSQL started with a small
``max_connections``, against the real test IdP (each refresh takes ``--idp-delay-ms``).

Each user consents once in spirit: alice signs in for real and every user gets a copy
of her grant, due now (the IdP does not rotate refresh tokens here, so every copy
refreshes for real). Every replica then asks for every user's token at once. Counted:
wall time until all answered, refresh requests at the IdP (one per user is right),
answers that were errors (e.g. PostgreSQL's "too many clients").

The store takes a lease per row and holds no connection while the IdP answers; the
store before it held an advisory lock, and so a connection, per refreshing user. To
compare, run this script with ``PYTHONPATH`` pointing at an older checkout (it falls
back to ``jupyter_connauth.broker.sql_store`` there).

Run: ``.venv/bin/python benchmarks/bench_refresh_storm.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from _common import REPO, log, machine_line

sys.path.insert(0, str(REPO))

REDIRECT = "https://hub.example.com/services/connauth/oauth/connector/callback"


def open_any_store(url: str, crypt: Any) -> Any:
    try:
        from jupyter_connauth.broker.store import open_store
    except ImportError:  # a checkout from before the one store
        from jupyter_connauth.broker.sql_store import SQLTokenStore as open_store
    return open_store(url, crypt)


def broker(idp: Any, url: str, key: bytes) -> Any:
    from traitlets.config import Config

    from jupyter_connauth.broker.broker import Broker
    from jupyter_connauth.broker.config import ConnAuth
    from jupyter_connauth.core.crypto import CryptKeeper

    cfg = Config()
    cfg.ConnAuth.discovery_url = idp.discovery_url
    cfg.ConnAuth.client_id = idp.client_id
    cfg.ConnAuth.client_secret = idp.client_secret
    cfg.ConnAuth.http_timeout = 30
    cfg.ConnAuth.connections = {
        "sales": {"connector": "databricks", "server_hostname": "h", "http_path": "/p"}
    }
    store = open_any_store(url, CryptKeeper([key]))
    return Broker(ConnAuth(config=cfg), store, redirect_uri=REDIRECT)


async def one_storm(
    pg_url: str, idp: Any, n_users: int, args: argparse.Namespace
) -> dict[str, Any]:
    import sqlalchemy as sa
    from cryptography.fernet import Fernet

    from tests.idp_fixture import headless_login

    # a fresh database per run
    name = f"storm{n_users}_{int(time.time() * 1000) % 10**8}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    key = Fernet.generate_key()
    replicas = [broker(idp, url, key) for _ in range(args.replicas)]
    try:
        first = replicas[0]
        started = await first.token("alice", "sales")
        callback = await asyncio.to_thread(headless_login, started.authorize_url, "alice")
        await first.callback(dict(parse_qsl(urlsplit(callback).query)), None)
        record = first.store.get_token("alice", "sales").record
        now = time.time()
        due = dataclasses.replace(record, expires_at=now + 60, obtained_at=now - 300)
        fp = first.connection("sales").fingerprint
        users = [f"user{i:05d}" for i in range(n_users)]
        for user in users:
            first.store.put_token(user, "sales", fp, due)
        idp.reset_stats()
        idp.set_faults(delay_ms=args.idp_delay_ms)
        t0 = time.perf_counter()
        answers = await asyncio.gather(
            *(r.token(u, "sales") for u in users for r in replicas), return_exceptions=True
        )
        seconds = time.perf_counter() - t0
        idp.clear_faults()
        errors = sum(1 for a in answers if type(a).__name__ != "TokenGrant")
        kinds = sorted({type(a).__name__ for a in answers if type(a).__name__ != "TokenGrant"})
        refreshes = idp.token_requests("refresh_token")
        return {"seconds": seconds, "refreshes": refreshes, "errors": errors, "kinds": kinds}
    finally:
        for r in replicas:
            await r.aclose()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", default="100,1000", help="users refreshing at once, comma-separated")
    p.add_argument("--max-connections", type=int, default=20, help="PostgreSQL max_connections")
    p.add_argument("--replicas", type=int, default=2, help="service replicas sharing the DB")
    p.add_argument("--idp-delay-ms", type=int, default=300, help="IdP time per token request")
    args = p.parse_args()

    from tests.hub.pg import running_postgres
    from tests.idp_fixture import TestIdP, default_client

    rows = []
    idp = TestIdP(extra_scopes=["sql"], access_token_ttl=300, clients=[default_client([REDIRECT])])
    idp.start()
    try:
        with running_postgres(f"-c max_connections={args.max_connections}") as pg_url:
            for n in (int(x) for x in args.users.split(",")):
                log(f"{n} users, {args.replicas} replicas, max_connections={args.max_connections}")
                out = asyncio.run(one_storm(pg_url, idp, n, args))
                log(f"  {out}")
                rows.append((n, out))
    finally:
        idp.close()
    lines = [
        "<!-- bench:refresh_storm:start -->",
        "### Refresh storm on PostgreSQL (bench_refresh_storm.py)",
        "",
        f"_{machine_line()}_",
        "",
        "| users | max_connections | seconds | refreshes | errors |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, out in rows:
        errors = str(out["errors"]) + (f" ({', '.join(out['kinds'])})" if out["kinds"] else "")
        lines.append(
            f"| {n:,} | {args.max_connections} | {out['seconds']:.2f} | {out['refreshes']:,} "
            f"| {errors} |"
        )
    lines += [
        "",
        f"- Every user's token due at once; {args.replicas} replicas each ask for every "
        f"user's token; the IdP takes {args.idp_delay_ms} ms per token request. One refresh "
        "per user and no errors is right.",
        "<!-- bench:refresh_storm:end -->",
    ]
    print("\n".join(lines))
    return 0 if all(out["errors"] == 0 and out["refreshes"] == n for n, out in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
