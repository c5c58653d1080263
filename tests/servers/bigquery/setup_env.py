"""Create (idempotently) the venv the local BigQuery test server runs in.

    python tests/servers/bigquery/setup_env.py            # -> .cache/envs/bqemulator
    python tests/servers/bigquery/setup_env.py --env DIR --quiet

bqemulator's dependency set (fastapi, grpcio-tools, opentelemetry, ...) must not
touch the project's own venv, so it gets its own, built from the pinned
``requirements.txt`` beside this file.  A stamp file holding the hash of
``requirements.txt`` makes re-runs a no-op; a changed pin list rebuilds the env.
Uses only the standard library and needs Python >= 3.11 (bqemulator's floor).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
REQUIREMENTS = HERE / "requirements.txt"
DEFAULT_ENV = REPO / ".cache" / "envs" / "bqemulator"
STAMP = ".jc-requirements.sha256"


def _python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def is_ready(env_dir: Path = DEFAULT_ENV) -> bool:
    stamp = env_dir / STAMP
    return _python(env_dir).exists() and stamp.exists() and stamp.read_text().strip() == _digest()


def ensure(env_dir: Path, *, quiet: bool = False) -> Path:
    py = _python(env_dir)
    want = _digest()
    if is_ready(env_dir):
        return py
    # Serialize concurrent creators (e.g. two pytest sessions).
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = env_dir.parent / (env_dir.name + ".lock")
    fd = os.open(lock, os.O_CREAT | os.O_RDWR)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows
            pass
        if is_ready(env_dir):
            return py
        t0 = time.perf_counter()
        if env_dir.exists():
            shutil.rmtree(env_dir)
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        if quiet:
            cmd.append("-q")
        subprocess.run([*cmd, "-r", str(REQUIREMENTS)], check=True)
        (env_dir / STAMP).write_text(want + "\n")
        if not quiet:
            print(
                f"bqemulator env ready at {env_dir} in {time.perf_counter() - t0:.1f}s",
                file=sys.stderr,
            )
    finally:
        os.close(fd)
    return py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--env", type=Path, default=DEFAULT_ENV, help=f"venv directory (default {DEFAULT_ENV})"
    )
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    py = ensure(args.env.resolve(), quiet=args.quiet)
    if not args.quiet:
        print(py)


if __name__ == "__main__":
    main()
