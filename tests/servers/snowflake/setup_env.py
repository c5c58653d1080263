"""Create the virtualenv the local Snowflake server runs in (idempotent).

fakesnow imports connector internals that snowflake-connector-python 5.x removed, so the server
runs in its own env with connector 4.x, while tests use the newest connector from the project venv.

    python tests/servers/snowflake/setup_env.py            # create or verify
    python tests/servers/snowflake/setup_env.py --force    # recreate

Env location: $CONNAUTH_FAKESNOW_ENV, else <repo>/.cache/envs/fakesnow. A marker file in the env
records the pinned requirements; the env is rebuilt when they change. Uses only the stdlib, so
any Python >= 3.10 can run it (the env gets that interpreter).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REQUIREMENTS = [
    "fakesnow[server]==0.12.1",
    "snowflake-connector-python==4.8.1",
    "duckdb==2.0.0",
    "sqlglot==30.22.0",
    "pyarrow==26.0.1",
    "numpy==2.4.6",
    "starlette==1.10.0",
    "uvicorn==0.54.0",
    "PyJWT==2.15.1",
    "cryptography==50.0.2",
]

MARKER = ".connauth-requirements"
REPO_ROOT = Path(__file__).resolve().parents[3]


def env_dir() -> Path:
    return Path(
        os.environ.get("CONNAUTH_FAKESNOW_ENV") or REPO_ROOT / ".cache" / "envs" / "fakesnow"
    )


def env_python(path: Path | None = None) -> Path:
    path = path or env_dir()
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _wanted() -> str:
    return "\n".join(REQUIREMENTS) + "\n"


def is_ready(path: Path | None = None) -> bool:
    path = path or env_dir()
    marker = path / MARKER
    return env_python(path).exists() and marker.exists() and marker.read_text() == _wanted()


def ensure(path: Path | None = None, force: bool = False, quiet: bool = True) -> Path:
    """Create the env if missing or outdated; return its python. Safe to call concurrently."""
    path = path or env_dir()
    if not force and is_ready(path):
        return env_python(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / (path.name + ".lock")
    with open(lock_path, "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover (windows: no locking)
            pass
        if not force and is_ready(path):  # somebody else built it while we waited
            return env_python(path)
        t0 = time.monotonic()
        if path.exists():
            shutil.rmtree(path)
        # the base interpreter, also when called from inside a virtualenv
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(path)], check=True)
        cmd = [
            str(env_python(path)),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
        ]
        if quiet:
            cmd.append("-q")
        subprocess.run([*cmd, *REQUIREMENTS], check=True)
        (path / MARKER).write_text(_wanted())
        print(f"fakesnow env ready at {path} in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return env_python(path)


def main() -> None:
    p = argparse.ArgumentParser(description="Create the fakesnow server env (idempotent).")
    p.add_argument("--force", action="store_true", help="recreate even if up to date")
    p.add_argument("--path", type=Path, default=None, help="env directory (default: %(default)s)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    py = ensure(args.path, force=args.force, quiet=not args.verbose)
    print(py)


if __name__ == "__main__":
    main()
