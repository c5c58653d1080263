"""First run only: the local Snowflake and BigQuery servers' own environments.

``python3 -m demo.prepare LOG`` (stdlib only: scripts/demo runs it beside the main
install): two lines per environment it has to build (none on later runs), pip's output
in LOG.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.servers.bigquery import setup_env as bigquery
from tests.servers.snowflake import setup_env as snowflake


def main(log: Path) -> int:
    todo: list[tuple[str, Callable[[], object]]] = []
    if not snowflake.is_ready():
        todo.append(("Snowflake (fakesnow)", lambda: snowflake.ensure(quiet=True)))
    if not bigquery.is_ready():
        todo.append(("BigQuery (bqemulator)", lambda: bigquery.ensure(bigquery.DEFAULT_ENV)))
    if not todo:
        return 0
    terminal = os.fdopen(os.dup(2), "w")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:  # pip's output, from this process and its children
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    for name, build in todo:
        label = f"\033[1m== First run: the local {name} environment\033[0m"
        print(f"{label} … (log: {log})", file=terminal, flush=True)
        t0 = time.monotonic()
        try:
            build()
        except Exception as e:  # a failed pip: name the log
            print(f"jupyter-connauth demo: {name}: {e}; see {log}", file=terminal, flush=True)
            return 1
        print(f"{label}: done in {time.monotonic() - t0:.0f}s", file=terminal, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
