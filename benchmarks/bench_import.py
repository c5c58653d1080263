"""``import jupyter_connauth`` time in a fresh interpreter, against JupySQL's ``import sql``.

Each sample is a new ``python -c`` process that times the import alone with
``time.perf_counter()`` (interpreter start-up excluded) and lists ``sys.modules``
afterwards, so the script also proves that the package import pulls in no
jupyter_server, IPython, pandas or warehouse driver. One discarded run warms the
bytecode and page caches, then the median of ``--runs`` samples is reported.

JupySQL 0.11.1 lives in its own venv, ``.cache/envs/jupysql``, created here when it
is missing (PyPI needed once).

Run: ``.venv/bin/python benchmarks/bench_import.py`` (about 20 s once the venv exists).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, Row, emit, log, median

JUPYSQL_VERSION = "0.11.1"
JUPYSQL_ENV = REPO / ".cache" / "envs" / "jupysql"
TARGET_MS = 150.0

#: Top-level packages ``import jupyter_connauth`` must not load.
FORBIDDEN = (
    "jupyter_server",
    "tornado",
    "IPython",
    "ipykernel",
    "pandas",
    "numpy",
    "pyarrow",
    "databricks",
    "google.cloud",
    "snowflake",
    "sqlalchemy",
)

_PROBE = """
import sys, time, json
{preload}
t0 = time.perf_counter()
import {module}
dt = time.perf_counter() - t0
print(json.dumps({{"ms": dt * 1e3, "modules": sorted(sys.modules)}}))
"""


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def ensure_jupysql() -> Path:
    """The JupySQL venv's python, created (idempotently) when missing or stale."""
    py = python_of(JUPYSQL_ENV)
    probe = "import importlib.metadata as m, IPython; print(m.version('jupysql'))"
    if py.exists():
        r = subprocess.run([py, "-c", probe], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == JUPYSQL_VERSION:
            return py
    log(f"creating {JUPYSQL_ENV} with jupysql=={JUPYSQL_VERSION} (PyPI)")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(JUPYSQL_ENV)], check=True)
    # JupySQL expects to run inside IPython but does not declare it: add it.
    r = subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"jupysql=={JUPYSQL_VERSION}", "ipython"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if r.returncode != 0:
        log(r.stdout + r.stderr)
        raise SystemExit(f"could not install jupysql=={JUPYSQL_VERSION}")
    return py


def sample(python: Path, module: str, cwd: str, preload: str = "") -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PLOOMBER_STATS_ENABLED="false", PLOOMBER_VERSION_CHECK_DISABLED="true")
    code = _PROBE.format(module=module, preload=f"import {preload}" if preload else "")
    out = subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
        env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(python: Path, module: str, runs: int, preload: str = "") -> tuple[float, list[str]]:
    with tempfile.TemporaryDirectory() as cwd:  # not the repo: import what is installed
        sample(python, module, cwd, preload)  # warm the bytecode and page caches
        samples = [sample(python, module, cwd, preload) for _ in range(runs)]
    times = [float(s["ms"]) for s in samples]  # type: ignore[arg-type]
    after = f" (after {preload})" if preload else ""
    log(
        f"  {module}{after}: median {median(times):.1f} ms "
        f"(min {min(times):.1f}, max {max(times):.1f})"
    )
    return median(times), list(samples[-1]["modules"])  # type: ignore[call-overload]


def forbidden_in(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    ours_py = Path(sys.executable)
    jupysql_py = ensure_jupysql()

    log("import times (fresh interpreter per sample):")
    ours_ms, ours_mods = measure(ours_py, "jupyter_connauth", args.runs)
    client_ms, client_mods = measure(ours_py, "jupyter_connauth.kernel.client", args.runs)
    sql_ms, sql_mods = measure(jupysql_py, "sql", args.runs)
    sql_in_kernel_ms, _ = measure(jupysql_py, "sql", args.runs, preload="IPython")
    bare = set(sample(ours_py, "sys", tempfile.gettempdir())["modules"])  # type: ignore[arg-type]

    bad = forbidden_in(ours_mods)
    bad_client = forbidden_in(client_mods)
    if bad or bad_client:
        log(f"  FORBIDDEN modules imported: {bad or bad_client}")
    rows = [
        Row("`import jupyter_connauth`", ours_ms, "ms", sql_ms, TARGET_MS, False, 1),
        Row(
            "`import jupyter_connauth`: modules added",
            len(set(ours_mods) - bare),
            "",
            len(set(sql_mods) - bare),
            None,
            False,
            0,
        ),
        Row(
            "`import jupyter_connauth`: server/IPython/pandas/driver modules",
            len(bad),
            "",
            len(forbidden_in(sql_mods)),
            0,
            False,
            0,
        ),
        Row("`import jupyter_connauth.kernel.client`", client_ms, "ms", sql_ms, None, False, 1),
        Row(
            "`import jupyter_connauth.kernel.client`: server/IPython/pandas/driver modules",
            len(bad_client),
            "",
            len(forbidden_in(sql_mods)),
            0,
            False,
            0,
        ),
    ]
    notes = [
        f"Median of {args.runs} fresh `python -c` processes after one discarded warm-up; "
        "the import alone is timed (`time.perf_counter()`), interpreter start-up excluded.",
        f"Baseline: `import sql` of JupySQL {JUPYSQL_VERSION} (its own venv, "
        "`.cache/envs/jupysql`, with IPython, which it needs but does not declare), "
        "measured in the same run. Ratio = ours / baseline. In a kernel IPython is "
        f"already loaded; `import sql` after `import IPython` takes {sql_in_kernel_ms:.0f} ms.",
        "Modules added: entries of `sys.modules` beyond a bare interpreter's.",
        f"Forbidden top-level packages: {', '.join(FORBIDDEN)}"
        + (f". Found: {', '.join(bad + bad_client)}" if bad or bad_client else " (none found)."),
        "`jupyter_connauth.kernel.client` is what a kernel imports to fetch tokens "
        "(it adds httpx2); it has no target of its own.",
    ]
    ok = emit("import", "Import time (bench_import.py)", rows, notes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
