"""A throwaway PostgreSQL server for the tests: initdb into a temp dir, pg_ctl on a free port.

PostgreSQL refuses to run as root; as root the server runs as the ``postgres`` user
(created by the Debian package) through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.idp_fixture import free_port


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def running_postgres(options: str = "") -> Iterator[str]:
    """Yields a SQLAlchemy URL (psycopg 3) of a fresh database ``connauth``. ``options``:
    more server settings, e.g. ``-c max_connections=20``."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    workdir = Path(tempfile.mkdtemp(prefix="connauth-pg-"))
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    data, port = workdir / "data", free_port()
    log = workdir / "server.log"
    try:
        subprocess.run(
            _as_owner([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        opts = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off {options}"
        subprocess.run(
            _as_owner([pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "start"]),
            check=True,
            capture_output=True,
        )
        try:
            subprocess.run(
                _as_owner(
                    [
                        pg_bin("createdb") or "createdb",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "-U",
                        "postgres",
                        "connauth",
                    ]
                ),
                check=True,
                capture_output=True,
            )
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/connauth"
        finally:
            subprocess.run(
                _as_owner([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
                check=False,
                capture_output=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
