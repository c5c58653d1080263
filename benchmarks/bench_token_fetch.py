"""Warm-token fetch through the broker API, over real HTTP, against a real Jupyter server.

For each store size N (1,000 and 10,000 users by default) it

1. pre-populates a fresh SQLite token store with N users, each holding a valid
   (not near expiry) encrypted token for the connection ``sales``;
2. starts ``python -m jupyter_server`` with the extension enabled, in throw-away
   Jupyter config/data/runtime dirs, acting for ``user0``;
3. drives, from a separate load-generator process (``wrk`` when it is on PATH, else
   an asyncio httpx2 client) ``--concurrency`` requests in flight: a ``--warmup`` per
   path, then ``--rounds`` rounds of ``--duration`` seconds in which the paths take
   turns (each metric is the median of the rounds); the paths are

   - baseline: ``GET api/status`` (jupyter_server's own authenticated endpoint),
   - ``POST connauth/api/connections/sales/token`` with the kernel secret
     (``X-ConnAuth-Token``, what kernels send),
   - the same with the Jupyter server token (``Authorization: token ...``, the
     browser/Jupyter-auth path),
   - for the first N only, the floor ``GET api`` (unauthenticated version endpoint);

4. also times ``Broker.token()`` in-process (no HTTP) on the same store.

The kernel secret comes from a benchmark-only server extension
(``benchmarks/server_ext/zz_connauth_bench_secret.py``) that writes it to a file.

Run: ``.venv/bin/python benchmarks/bench_token_fetch.py`` (about 80 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, Row, emit, log, median, percentile

CONNECTION = "sales"
CONNECTION_RAW = {
    "connector": "databricks",
    "server_hostname": "x",
    "http_path": "/sql",
    "scopes": "sql offline_access",
}
DISCOVERY_URL = "http://127.0.0.1:9/.well-known/openid-configuration"  # never contacted
OWNER = "user0"
TARGET_RPS = 1000.0
TARGET_P99_MS = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the store -----------------------------------------------------------------


def populate(store_path: Path, key: bytes, n_users: int) -> str:
    """N users with a valid token each; returns the owner's access token."""
    from jupyter_connauth.broker.store import open_store
    from jupyter_connauth.core.connections import parse_connection
    from jupyter_connauth.core.crypto import CryptKeeper
    from jupyter_connauth.core.tokens import TokenRecord

    fingerprint = parse_connection(CONNECTION, CONNECTION_RAW, "oidc").fingerprint
    store = open_store(store_path, CryptKeeper([key]))
    expires = time.time() + 7 * 24 * 3600  # no refresh during the run
    owner_token = ""
    t0 = time.perf_counter()
    try:
        for i in range(n_users):
            user = f"user{i}"
            # Realistic sizes: IdP access tokens are JWTs of 1-2 KB.
            access = f"at.{user}." + secrets.token_urlsafe(900)
            record = TokenRecord(
                access_token=access,
                expires_at=expires,
                refresh_token="rt." + secrets.token_urlsafe(300),
                scope=("sql", "offline_access"),
                identity={"email": f"{user}@example.com", "sub": user},
            )
            store.put_token(user, CONNECTION, fingerprint, record)
            if user == OWNER:
                owner_token = access
    finally:
        store.close()
    log(f"  store: {n_users:,} users written in {time.perf_counter() - t0:.1f} s")
    return owner_token


def broker_inprocess(store_path: Path, key: bytes, calls: int) -> float:
    """Mean microseconds of ``await Broker.token(owner, sales)`` without HTTP."""
    from jupyter_connauth.broker.broker import Broker
    from jupyter_connauth.broker.config import ConnAuth
    from jupyter_connauth.broker.store import open_store
    from jupyter_connauth.core.crypto import CryptKeeper

    config = ConnAuth(
        discovery_url=DISCOVERY_URL,
        client_id="bench",
        connections={CONNECTION: CONNECTION_RAW},
        store_path=str(store_path),
    )
    store = open_store(store_path, CryptKeeper([key]))
    broker = Broker(config, store, redirect_uri="http://127.0.0.1/oauth/connector/callback")

    async def loop() -> float:
        for _ in range(200):
            await broker.token(OWNER, CONNECTION)
        t0 = time.perf_counter()
        for _ in range(calls):
            grant = await broker.token(OWNER, CONNECTION)
        elapsed = time.perf_counter() - t0
        assert getattr(grant, "access_token", None), grant
        await broker.aclose()
        return elapsed / calls * 1e6

    return asyncio.run(loop())


# -- the server ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    jupyter_token: str
    kernel_secret: str
    log_path: Path


def start_server(tmp: Path, store_path: Path, key: bytes) -> Server:
    config_dir, data_dir, runtime_dir, root = (
        tmp / "config",
        tmp / "data",
        tmp / "runtime",
        tmp / "root",
    )
    for d in (config_dir, data_dir, runtime_dir, root):
        d.mkdir(parents=True, exist_ok=True)
    (config_dir / "jupyter_server_config.py").write_text(
        "c = get_config()  # noqa: F821\n"
        "c.ServerApp.jpserver_extensions = "
        "{'jupyter_connauth': True, 'zz_connauth_bench_secret': True}\n"
        f"c.ConnAuthApp.owner = {OWNER!r}\n"
        f"c.ConnAuth.discovery_url = {DISCOVERY_URL!r}\n"
        "c.ConnAuth.client_id = 'bench'\n"
        f"c.ConnAuth.store_path = {str(store_path)!r}\n"
        f"c.ConnAuth.connections = {{{CONNECTION!r}: {CONNECTION_RAW!r}}}\n"
    )
    port = free_port()
    jupyter_token = secrets.token_hex(24)
    secret_file = tmp / "kernel-secret"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER", "JUPYTERHUB", "PYTHONPATH"))
    }
    env.update(
        JUPYTER_CONFIG_DIR=str(config_dir),
        JUPYTER_DATA_DIR=str(data_dir),
        JUPYTER_RUNTIME_DIR=str(runtime_dir),
        JUPYTER_CONNAUTH_CRYPT_KEY=key.decode(),
        CONNAUTH_BENCH_SECRET_FILE=str(secret_file),
        PYTHONPATH=str(BENCH_DIR / "server_ext"),
    )
    log_path = tmp / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={jupyter_token}",
        f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}/"
    import httpx2

    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited:\n{log_path.read_text()[-3000:]}")
        try:
            r = httpx2.get(
                base + "api/status",
                headers={"Authorization": f"token {jupyter_token}"},
                timeout=2,
            )
            if r.status_code == 200 and secret_file.exists():
                break
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"jupyter server did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return Server(proc, base, jupyter_token, secret_file.read_text().strip(), log_path)


def stop_server(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


def server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


# -- load generation -------------------------------------------------------------


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int
    cpu_us_per_req: float


def median_load(loads: list[Load]) -> Load:
    """Each metric's median over the rounds (requests and failures are summed)."""
    return Load(
        rps=median([x.rps for x in loads]),
        p50_ms=median([x.p50_ms for x in loads]),
        p99_ms=median([x.p99_ms for x in loads]),
        requests=sum(x.requests for x in loads),
        bad=sum(x.bad for x in loads),
        cpu_us_per_req=median([x.cpu_us_per_req for x in loads]),
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def load_wrk(
    url: str, method: str, headers: dict[str, str], pid: int, conc: int, warmup: int, dur: int
) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f'wrk.method = "{method}"\n')
        script = f.name
    try:
        base = ["wrk", "-t1", f"-c{conc}", "--latency", "-s", script]
        for k, v in headers.items():
            base += ["-H", f"{k}: {v}"]
        if warmup:
            subprocess.run(
                [*base, f"-d{warmup}s", url], check=True, capture_output=True, timeout=120
            )
        cpu0 = server_cpu_seconds(pid)
        out = subprocess.run(
            [*base, f"-d{dur}s", url],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        cpu = server_cpu_seconds(pid) - cpu0
    finally:
        os.unlink(script)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        bad += sum(int(x) for x in sock.groups())
    return Load(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_wrk_ms(lat["50"]),
        p99_ms=_wrk_ms(lat["99"]),
        requests=requests,
        bad=bad,
        cpu_us_per_req=cpu / max(requests, 1) * 1e6,
    )


async def _httpx_child(spec: dict[str, Any]) -> dict[str, Any]:
    import httpx2

    n = spec["concurrency"]
    limits = httpx2.Limits(max_connections=n, max_keepalive_connections=n)
    latencies: list[float] = []
    state = {"recording": False, "stop": False, "bad": 0}
    async with httpx2.AsyncClient(limits=limits, timeout=30, headers=spec["headers"]) as client:

        async def worker() -> None:
            perf = time.perf_counter
            while not state["stop"]:
                t0 = perf()
                try:
                    r = await client.request(spec["method"], spec["url"])
                    ok = r.status_code == 200
                except httpx2.HTTPError:
                    ok = False
                if state["recording"]:
                    latencies.append(perf() - t0)
                    if not ok:
                        state["bad"] += 1

        tasks = [asyncio.create_task(worker()) for _ in range(n)]
        await asyncio.sleep(spec["warmup"])
        cpu0 = server_cpu_seconds(spec["pid"])
        t0 = time.perf_counter()
        state["recording"] = True
        await asyncio.sleep(spec["duration"])
        state["recording"] = False
        elapsed = time.perf_counter() - t0
        cpu = server_cpu_seconds(spec["pid"]) - cpu0
        state["stop"] = True
        await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "requests": len(latencies),
        "bad": state["bad"],
        "cpu_us_per_req": cpu / max(len(latencies), 1) * 1e6,
    }


def load_httpx(
    url: str, method: str, headers: dict[str, str], pid: int, conc: int, warmup: int, dur: int
) -> Load:
    spec = {
        "url": url,
        "method": method,
        "headers": headers,
        "pid": pid,
        "concurrency": conc,
        "warmup": warmup,
        "duration": dur,
    }
    out = subprocess.run(
        [sys.executable, __file__, "--loadgen-child", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
        timeout=warmup + dur + 60,
    ).stdout
    return Load(**json.loads(out.strip().splitlines()[-1]))


# -- one store size ----------------------------------------------------------------


def check_answers(server: Server, owner_token: str) -> None:
    """One request per path, checked, before the load: a fast error is no benchmark."""
    import httpx2

    url = server.base + f"connauth/api/connections/{CONNECTION}/token"
    for headers in (
        {"X-ConnAuth-Token": server.kernel_secret},
        {"Authorization": f"token {server.jupyter_token}"},
    ):
        r = httpx2.post(url, headers=headers, timeout=10)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "ok":
            raise RuntimeError(f"token fetch failed: {r.status_code} {body}")
        if body["access_token"] != owner_token or body["identity"] != f"{OWNER}@example.com":
            raise RuntimeError("the broker answered with another user's token")
    r = httpx2.post(url, headers={"X-ConnAuth-Token": "wrong"}, timeout=10)
    if r.status_code != 403:
        raise RuntimeError(f"a wrong kernel secret got {r.status_code}")


def run_size(n_users: int, args: argparse.Namespace, loader: Any, *, floor: bool) -> dict[str, Any]:
    from cryptography.fernet import Fernet

    log(f"N = {n_users:,} users")
    tmp = Path(tempfile.mkdtemp(prefix="connauth-bench-"))
    try:
        key = Fernet.generate_key()
        store_path = tmp / "data" / "connauth" / "tokens.sqlite3"
        owner_token = populate(store_path, key, n_users)
        inproc_us = broker_inprocess(store_path, key, args.inprocess_calls)
        log(f"  Broker.token() in-process: {inproc_us:.1f} µs/call")
        server = start_server(tmp, store_path, key)
        try:
            check_answers(server, owner_token)
            pid = server.proc.pid
            token_url = server.base + f"connauth/api/connections/{CONNECTION}/token"
            jupyter_auth = {"Authorization": f"token {server.jupyter_token}"}
            paths = [
                ("baseline", server.base + "api/status", "GET", jupyter_auth),
                ("kernel", token_url, "POST", {"X-ConnAuth-Token": server.kernel_secret}),
                ("jupyter", token_url, "POST", jupyter_auth),
            ]
            if floor:
                paths.append(("floor", server.base + "api", "GET", {}))
            # Rounds interleave the paths, so a burst of load from another process on
            # the shared machine hits them alike; each metric is the median of rounds.
            rounds: dict[str, list[Load]] = {label: [] for label, *_ in paths}
            for r in range(args.rounds):
                for label, url, method, headers in paths:
                    warm = args.warmup if r == 0 else 0
                    res = loader(url, method, headers, pid, args.concurrency, warm, args.duration)
                    if res.bad:
                        raise RuntimeError(f"{label}: {res.bad} failed requests of {res.requests}")
                    log(
                        f"  round {r + 1} {label:8s}: {res.rps:6.0f} req/s  "
                        f"p50 {res.p50_ms:6.2f} ms  p99 {res.p99_ms:6.2f} ms  "
                        f"server CPU {res.cpu_us_per_req:4.0f} µs/req"
                    )
                    rounds[label].append(res)
            results = {label: median_load(loads) for label, loads in rounds.items()}
        finally:
            stop_server(server)
        return {"results": results, "inproc_us": inproc_us}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rows_for(n_users: int, data: dict[str, Any]) -> list[Row]:
    base: Load = data["results"]["baseline"]
    rows: list[Row] = []
    for label, what in (("kernel", "kernel secret"), ("jupyter", "Jupyter token")):
        res: Load = data["results"][label]
        name = f"token fetch, {what}, N={n_users:,}"
        rows += [
            Row(f"{name}: throughput", res.rps, "req/s", base.rps, TARGET_RPS, True, 0),
            Row(f"{name}: p50 latency", res.p50_ms, "ms", base.p50_ms, None, False, 2),
            Row(f"{name}: p99 latency", res.p99_ms, "ms", base.p99_ms, TARGET_P99_MS, False, 2),
            Row(f"{name}: server CPU", res.cpu_us_per_req, "µs/req", base.cpu_us_per_req),
        ]
    floor: Load | None = data["results"].get("floor")
    if floor is not None:
        name = "floor: jupyter_server `GET api` (no auth, no broker)"
        rows += [
            Row(f"{name}: throughput", floor.rps, "req/s", base.rps, None, True, 0),
            Row(f"{name}: p99 latency", floor.p99_ms, "ms", base.p99_ms, None, False, 2),
            Row(f"{name}: server CPU", floor.cpu_us_per_req, "µs/req", base.cpu_us_per_req),
        ]
    rows.append(Row(f"Broker.token() in-process, N={n_users:,}", data["inproc_us"], "µs/call"))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", default="1000,10000", help="store sizes, comma-separated")
    p.add_argument("--duration", type=int, default=3, help="seconds measured per path and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median is shown)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per path")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto")
    p.add_argument("--inprocess-calls", type=int, default=20000)
    p.add_argument("--loadgen-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loadgen_child:
        print(json.dumps(asyncio.run(_httpx_child(json.loads(args.loadgen_child)))))
        return 0
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
    loader = load_wrk if use_wrk else load_httpx
    gen = "wrk (1 thread)" if use_wrk else "httpx2 asyncio client (separate process)"
    log(f"load generator: {gen}")
    rows: list[Row] = []
    for i, n in enumerate(int(x) for x in args.users.split(",")):
        rows += rows_for(n, run_size(n, args, loader, floor=i == 0))
    notes = [
        f"Load generator: {gen}, {args.concurrency} connections / requests in flight; "
        f"per path {args.warmup} s warm-up, then {args.rounds} rounds of {args.duration} s "
        "with the paths interleaved; each value is the median over the rounds. The load "
        "generator shares the 2 cores with the server (and the machine with other jobs).",
        "Baseline: the same server answering `GET api/status` (jupyter_server's own "
        "authenticated endpoint, Jupyter token). Ratio = ours / baseline.",
        "Ours: `POST connauth/api/connections/sales/token` for the owner, whose valid "
        "token sits among N users' in the encrypted SQLite store (warm path: no IdP call).",
        "Server CPU: user+system CPU time of the server process per request.",
        "Floor (first N only): `GET api`, jupyter_server's unauthenticated version "
        "endpoint, i.e. what Tornado + jupyter_server cost before any auth or broker work.",
        "`Broker.token()` in-process: the broker alone (store read, decrypt, grant), no HTTP.",
    ]
    ok = emit("token_fetch", "Warm-token fetch (bench_token_fetch.py)", rows, notes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
