"""The magics: ``%load_ext`` time, and the per-cell overhead of ``%%sql_connector``.

1. ``%load_ext jupyter_connauth`` against JupySQL's ``%load_ext sql`` (0.11.1, in
   ``.cache/envs/jupysql``), each in fresh IPython processes taking turns: the
   ``InteractiveShell`` is created first (a kernel has one), then only the magic call
   is timed with ``perf_counter``. Median of ``--runs``; target ≤ 150 ms.
2. ``%%sql_connector sales`` + ``SELECT 1`` against the local Snowflake, run by
   ``InteractiveShell.run_cell`` with a real broker: the in-process
   ``LocalBrokerClient`` (what a kernel without a Jupyter server uses) over an
   encrypted SQLite store pre-seeded with alice's real access token from the test IdP
   (warm path: no IdP call). The comparison cell runs the raw driver on its own
   connection with the same token and displays the DataFrame the same way
   (``cur.execute``; ``cur.fetch_pandas_all()``; ``display(df)``). Both connections are
   opened before timing and reused; ``display_pub.publish`` is a no-op, so the
   formatting of the display data is counted but nothing is written. The same magic
   also runs against a real ``python -m jupyter_server`` with the extension (the
   kernel's ``BrokerClient`` over HTTP with the kernel secret, the same store): the full
   cell a notebook runs, including the broker round trip and the grant check every
   query makes. The cells take turns; the overhead is median(magic) − median(raw).
   Target ≤ 5 ms. The server's login count checks that no cell opened a new session.

Run: ``.venv/bin/python benchmarks/bench_magics.py`` (about 60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, NegativeOverhead, Row, emit, log, median, noise, percentile

JUPYSQL_PY = REPO / ".cache" / "envs" / "jupysql" / "bin" / "python"
LOAD_TARGET_MS = 150.0
CELL_TARGET_MS = 5.0
SF_RES = "https://snowflake.local"
EMAIL = "alice@example.com"
USER = "alice"

_LOAD_PROBE = """
import os, sys, time, json
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t0 = time.perf_counter()
shell.run_line_magic("load_ext", {ext!r})
dt = time.perf_counter() - t0
assert {magic!r} in shell.magics_manager.magics["cell"], "magic not registered"
print(json.dumps({{"ms": dt * 1e3, "modules": len(sys.modules)}}))
"""


def load_ext_sample(python: Path, ext: str, magic: str, cwd: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER_CONNAUTH"))}
    env.update(PLOOMBER_STATS_ENABLED="false", PLOOMBER_VERSION_CHECK_DISABLED="true")
    out = subprocess.run(
        [str(python), "-c", _LOAD_PROBE.format(ext=ext, magic=magic)],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
        env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench_load_ext(runs: int) -> tuple[float, float, float, float]:
    if not JUPYSQL_PY.exists():
        import bench_import

        bench_import.ensure_jupysql()
    ours_py = Path(sys.executable)
    ours: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory() as cwd:
        load_ext_sample(ours_py, "jupyter_connauth", "sql_connector", cwd)  # warm caches
        load_ext_sample(JUPYSQL_PY, "sql", "sql", cwd)
        mods = [0, 0]
        for i in range(runs):
            pair = [(ours_py, "jupyter_connauth", "sql_connector", ours, 0),
                    (JUPYSQL_PY, "sql", "sql", theirs, 1)]  # fmt: skip
            if i % 2:
                pair.reverse()
            for py, ext, magic, sink, k in pair:
                s = load_ext_sample(py, ext, magic, cwd)
                sink.append(float(s["ms"]))
                mods[k] = int(s["modules"])
    log(
        f"  %load_ext jupyter_connauth: median {median(ours):.1f} ms (min {min(ours):.1f}); "
        f"%load_ext sql: median {median(theirs):.1f} ms (min {min(theirs):.1f})"
    )
    return median(ours), median(theirs), mods[0], mods[1]


# ---------------------------------------------------------------- per-cell overhead
def start_broker_server(
    tmp: Path,
    store_path: Path,
    key: bytes,
    connection: dict[str, Any],
    discovery_url: str,
    client_id: str,
    client_secret: str,
) -> Any:
    """A real Jupyter server with the extension (and the benchmark's secret extension),
    acting for alice over the given store; its kernel secret for a BrokerClient."""
    import secrets
    import subprocess

    import bench_token_fetch as btf
    import httpx2

    dirs = [tmp / d for d in ("config", "data", "runtime", "root")]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    config_dir, data_dir, runtime_dir, root = dirs
    (config_dir / "jupyter_server_config.py").write_text(
        "c = get_config()  # noqa: F821\n"
        "c.ServerApp.jpserver_extensions = "
        "{'jupyter_connauth': True, 'zz_connauth_bench_secret': True}\n"
        f"c.ConnAuthApp.owner = {USER!r}\n"
        f"c.ConnAuth.discovery_url = {discovery_url!r}\n"
        f"c.ConnAuth.client_id = {client_id!r}\n"
        f"c.ConnAuth.client_secret = {client_secret!r}\n"
        f"c.ConnAuth.store_path = {str(store_path)!r}\n"
        f"c.ConnAuth.connections = {{'sales': {connection!r}}}\n"
    )
    port = btf.free_port()
    jupyter_token = secrets.token_hex(24)
    secret_file = tmp / "kernel-secret"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHONPATH"))}
    env.update(
        JUPYTER_CONFIG_DIR=str(config_dir),
        JUPYTER_DATA_DIR=str(data_dir),
        JUPYTER_RUNTIME_DIR=str(runtime_dir),
        JUPYTER_CONNAUTH_CRYPT_KEY=key.decode(),
        CONNAUTH_BENCH_SECRET_FILE=str(secret_file),
        PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'benchmarks' / 'server_ext'}",
    )
    log_path = tmp / "server.log"
    cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={jupyter_token}", f"--ServerApp.root_dir={root}"]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}/"
    server = btf.Server(proc, base, jupyter_token, "", log_path)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited:\n{log_path.read_text()[-3000:]}")
        try:
            r = httpx2.get(base + "api/status", headers={"Authorization": f"token {jupyter_token}"},
                           timeout=2)  # fmt: skip
            if r.status_code == 200 and secret_file.exists():
                break
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            btf.stop_server(server)
            raise RuntimeError(f"jupyter server did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    server.kernel_secret = secret_file.read_text().strip()
    return server


def bench_cell(iterations: int, budget_s: float, profile_seconds: float = 0) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import serialization  # noqa: F401 - warm import
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from jupyter_connauth.broker.store import open_store
    from jupyter_connauth.core.crypto import CryptKeeper
    from jupyter_connauth.core.tokens import TokenRecord
    from jupyter_connauth.kernel.client import BrokerClient
    from jupyter_connauth.kernel.local import LocalBrokerClient
    from jupyter_connauth.kernel.runner import Runner
    from tests.idp_fixture import TestIdP
    from tests.servers.snowflake.fixture import SnowflakeServer
    from tests.tokens import user_tokens

    tmp = tempfile.TemporaryDirectory(prefix="connauth-bench-magics-")
    key = Fernet.generate_key()
    os.environ["JUPYTER_CONNAUTH_CRYPT_KEY"] = key.decode()
    idp = TestIdP(
        resources={SF_RES: {"audience": SF_RES, "scopes": ["session:role-any"]}},
        access_token_ttl=3600,
    ).start()
    sf = None
    client = None
    shell = None
    server = None
    http_client = None
    runners: dict[str, Any] = {}
    try:
        jwks = idp.discovery()["jwks_uri"]
        sf = SnowflakeServer(
            {
                "integrations": [
                    {
                        "name": "IDP",
                        "issuer": idp.issuer,
                        "jwks_url": jwks,
                        "audiences": [SF_RES],
                        "any_role_mode": "ENABLE",
                    }
                ],
                "users": {
                    EMAIL: {"name": "ALICE", "default_role": "ANALYST", "roles": ["ANALYST"]}
                },
            }
        ).start()
        grant = user_tokens(
            idp, USER, scopes="openid email session:role-any offline_access", resource=SF_RES
        )
        token = str(grant["access_token"])
        store_path = Path(tmp.name) / "tokens.sqlite"
        c = Config()
        c.LocalConnAuth.discovery_url = idp.discovery_url
        c.LocalConnAuth.client_id = idp.client_id
        c.LocalConnAuth.client_secret = idp.client_secret
        c.LocalConnAuth.store_path = str(store_path)
        c.LocalConnAuth.connections = {
            "sales": {
                "connector": "snowflake",
                "account": "connauth",
                "database": "CONNAUTH",
                "schema": "PUBLIC",
                "scopes": "session:role-any offline_access",
                "resource": SF_RES,
                "driver_options": {
                    "host": sf.host,
                    "port": sf.port,
                    "protocol": "http",
                    "login_timeout": 30,
                    "enable_server_session_keep_alive_auto_detection": False,
                },
            }
        }
        client = LocalBrokerClient(config=c, user=USER)
        fingerprint = client.broker.connection("sales").fingerprint
        seed = open_store(store_path, CryptKeeper([key]))
        try:
            seed.put_token(
                USER,
                "sales",
                fingerprint,
                TokenRecord(
                    access_token=token,
                    expires_at=time.time() + 3000,
                    refresh_token=grant.get("refresh_token"),
                    scope=tuple(str(grant.get("scope", "")).split()),
                    identity={"email": EMAIL, "sub": USER},
                ),
            )
        finally:
            seed.close()
        answer = client.token("sales")
        assert getattr(answer, "access_token", None) == token, answer
        server = start_broker_server(
            Path(tmp.name) / "server", store_path, key, c.LocalConnAuth.connections["sales"],
            idp.discovery_url, idp.client_id, idp.client_secret,
        )  # fmt: skip
        http_client = BrokerClient(server.base + "connauth/api/", server.kernel_secret)
        answer = http_client.token("sales")
        assert getattr(answer, "access_token", None) == token, answer

        import snowflake.connector

        raw_conn = snowflake.connector.connect(**sf.connect_kwargs(token))
        shell = InteractiveShell.instance()
        shell.display_pub.publish = lambda *a, **k: None  # type: ignore[method-assign]
        shell.run_line_magic("load_ext", "jupyter_connauth")
        magics = shell.magics_manager.registry["ConnAuthMagics"]
        runners = {"local": Runner(client), "http": Runner(http_client)}
        clients = {"local": client, "http": http_client}

        def use(broker: str) -> None:  # outside the timed part
            magics._client, magics._runner = clients[broker], runners[broker]

        shell.user_ns["conn"] = raw_conn
        ours_cell = "%%sql_connector sales\nSELECT 1"
        raw_cell = (
            "cur = conn.cursor()\n"
            "cur.execute('SELECT 1')\n"
            "df = cur.fetch_pandas_all()\n"
            "cur.close()\n"
            "display(df)\n"
        )

        def run(cell: str, broker: str = "local") -> float:
            use(broker)
            t0 = time.perf_counter()
            result = shell.run_cell(cell, store_history=False)
            dt = time.perf_counter() - t0
            if not result.success:
                raise RuntimeError(
                    f"cell failed: {result.error_in_exec or result.error_before_exec}"
                )
            return dt

        if profile_seconds:  # only the magic cell, for py-spy (--profile-loop)
            run(ours_cell, "http")
            log(f"PID {os.getpid()}: magic cells for {profile_seconds} s")
            end = time.perf_counter() + profile_seconds
            while time.perf_counter() < end:
                run(ours_cell, "http")
            return {}
        logins0 = sf.stats()["logins"]
        run(ours_cell)  # opens the magics' sessions (first use)
        run(ours_cell, "http")
        logins1 = sf.stats()["logins"]
        for _ in range(5):  # warm-up
            run(ours_cell)
            run(raw_cell)
            run(ours_cell, "http")
        ours: list[float] = []
        raws: list[float] = []
        https: list[float] = []
        deadline = time.perf_counter() + budget_s
        i = 0
        while i < iterations and (i < 30 or time.perf_counter() < deadline):
            for cell, broker, sink in (
                (ours_cell, "local", ours),
                (raw_cell, "local", raws),
                (ours_cell, "http", https),
            ):
                sink.append(run(cell, broker))
            i += 1
        logins2 = sf.stats()["logins"]
        trips: dict[str, list[float]] = {"local": [], "http": []}
        for _ in range(100):  # the grant check alone: the broker's token answer
            for name, sink in trips.items():
                t0 = time.perf_counter()
                clients[name].token("sales")
                sink.append(time.perf_counter() - t0)
        df = shell.user_ns["_"]
        assert len(df) == 1, df

        def deciles(v: list[float]) -> str:
            v = sorted(v)
            return " ".join(f"{v[int(q * len(v) / 10)] * 1e3:.1f}" for q in range(10))

        log(f"  deciles (ms): magic {deciles(ours)}; raw {deciles(raws)}; http {deciles(https)}")
        log(
            f"  cell × {i}: magic {median(ours) * 1e3:.2f} ms, raw {median(raws) * 1e3:.2f} ms, "
            f"magic over HTTP {median(https) * 1e3:.2f} ms, "
            f"logins {logins0}->{logins1}->{logins2}"
        )
        raw_conn.close()
        return {
            "n": i,
            # paired differences (the cells alternate), for the negative-overhead check
            "noise_ms": noise([(o - r) * 1e3 for o, r in zip(ours, raws, strict=True)]),
            "http_noise_ms": noise([(h - r) * 1e3 for h, r in zip(https, raws, strict=True)]),
            "ours_ms": median(ours) * 1e3,
            "http_ms": median(https) * 1e3,
            "trip_http_ms": median(trips["http"]) * 1e3,
            "trip_local_ms": median(trips["local"]) * 1e3,
            "http_p25": percentile(sorted(https), 25) * 1e3,
            "raw_ms": median(raws) * 1e3,
            "ours_p25": percentile(sorted(ours), 25) * 1e3,
            "raw_p25": percentile(sorted(raws), 25) * 1e3,
            "first_logins": logins1 - logins0,
            "later_logins": logins2 - logins1,
        }
    finally:
        if shell is not None:
            for r in runners.values():
                r.close()
            InteractiveShell.clear_instance()
        if http_client is not None:
            http_client.close()
        if server is not None:
            import bench_token_fetch

            bench_token_fetch.stop_server(server)
        if client is not None:
            client.close()
        if sf is not None:
            sf.stop()
        idp.close()
        tmp.cleanup()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="fresh processes per %%load_ext")
    p.add_argument("--cells", type=int, default=300, help="max cell pairs")
    p.add_argument("--cell-seconds", type=float, default=25.0)
    p.add_argument("--profile-loop", type=float, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.profile_loop:
        bench_cell(0, 0, args.profile_loop)
        return 0

    log("%load_ext (fresh IPython process per sample):")
    ours_ms, sql_ms, ours_mods, sql_mods = bench_load_ext(args.runs)
    log("%%sql_connector per-cell overhead (Snowflake, SELECT 1):")
    cell = bench_cell(args.cells, args.cell_seconds)
    overhead = cell["ours_ms"] - cell["raw_ms"]
    http_overhead = cell["http_ms"] - cell["raw_ms"]
    rows = [
        Row("`%load_ext jupyter_connauth` vs `%load_ext sql`", ours_ms, "ms", sql_ms,
            LOAD_TARGET_MS, False, 1),
        Row("`%load_ext`: modules in `sys.modules` after it", ours_mods, "", sql_mods,
            None, False, 0),
        Row("`%%sql_connector` cell, SELECT 1, warm token vs raw-driver cell",
            cell["ours_ms"], "ms", cell["raw_ms"], None, False, 2),
        Row("`%%sql_connector` added per cell (median magic − median raw)",
            overhead, "ms", None, CELL_TARGET_MS, False, 2),
        Row("`%%sql_connector` added per cell, 25th percentiles",
            cell["ours_p25"] - cell["raw_p25"], "ms", None, None, False, 2),
        Row("`%%sql_connector` cell through the server extension (HTTP broker, grant check) "
            "vs raw-driver cell", cell["http_ms"], "ms", cell["raw_ms"], None, False, 2),
        Row("`%%sql_connector` through the server added per cell (median − median raw)",
            http_overhead, "ms", None, CELL_TARGET_MS, False, 2),
        Row("`%%sql_connector` through the server added per cell, 25th percentiles",
            cell["http_p25"] - cell["raw_p25"], "ms", None, None, False, 2),
        Row("grant check alone: `POST …/token` over HTTP (in-process broker as baseline)",
            cell["trip_http_ms"], "ms", cell["trip_local_ms"], None, False, 2),
        Row("Snowflake logins during the timed cells", cell["later_logins"], "", None, 0,
            False, 0),
    ]  # fmt: skip
    for what, added, noise_ms in (
        ("in-process broker", overhead, cell["noise_ms"]),
        ("through the server", http_overhead, cell["http_noise_ms"]),
    ):
        if added < -max(0.05, noise_ms):  # faster than the raw cell it wraps: a wrong bench
            rows.append(
                NegativeOverhead(
                    f"`%%sql_connector` cell ({what}) measured {-added:.2f} ms faster than the "
                    f"raw-driver cell (noise {noise_ms:.2f} ms): the measurement is wrong"
                )
            )
    notes = [
        f"`%load_ext`: {args.runs} fresh processes per extension, taking turns, after one "
        "discarded warm-up each; the `InteractiveShell` exists before the timer starts (as "
        "in a kernel); only `run_line_magic('load_ext', ...)` is timed. Baseline: JupySQL "
        "0.11.1 (`.cache/envs/jupysql`). Ratio = ours / baseline.",
        f"Cell: {cell['n']} pairs of `shell.run_cell` (magic cell and raw-driver cell "
        "alternating), medians, on the local Snowflake (fakesnow) with "
        "alice's real IdP access token. The magic gets it from `LocalBrokerClient` (broker "
        "in the kernel, encrypted SQLite store pre-seeded, warm: no IdP call; the session is "
        "then reused while the token is fresh). The raw cell: `cur.execute('SELECT 1')`, "
        "`fetch_pandas_all()`, `display(df)` on its own connection with the same token. "
        "`display_pub.publish` is a no-op (formatting counted, nothing written).",
        "Every magic cell asks the broker for the credential first (its grant decides "
        "whether the driver session is reused): in process for the first rows, over HTTP "
        "to a real `jupyter_server` with the extension (the kernel's `BrokerClient`, "
        "`POST connauth/api/connections/sales/token` with the kernel secret) for the "
        "server rows. The three cells take turns (local magic, raw, magic over HTTP).",
        "The ≈ 40 ms stall earlier tables showed on one path or the other was Nagle on the "
        "local servers (fixed in tests/servers: TCP_NODELAY on accepted sockets) meeting "
        "the driver's delayed ACK whenever a connection sent its next request soon after "
        "the last response.",
        f"Logins at the server: {cell['first_logins']} for the magic's first cell, "
        f"{cell['later_logins']} during the {cell['n'] * 2 + 10} later cells.",
    ]
    ok = emit("magics", "Magics: load time and per-cell overhead (bench_magics.py)", rows, notes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
