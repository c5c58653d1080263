"""``bash scripts/demo``'s command line and state, without starting the stack: help before
any install, one demo per state directory, a fresh state each run, and the [demo] extra
without the test tools."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from demo.state import NOTEBOOK, exclusive, fresh_start

REPO = Path(__file__).resolve().parent.parent


def test_help_prints_before_anything_is_installed(tmp_path: Path) -> None:
    # No venv on PATH: the help comes from the system's python3 and the stdlib alone.
    venv = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv)
    env = {"PATH": path, "HOME": str(tmp_path)}
    r = subprocess.run(
        ["bash", "scripts/demo", "--help"], cwd=REPO, env=env, capture_output=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "--single-user" in out and "--check" in out and "JupyterHub" in out
    assert b"Installing" not in r.stderr and b"==" not in r.stderr


def test_a_second_demo_on_the_same_state_says_which_one_runs(tmp_path: Path) -> None:
    env = {**os.environ, "CONNAUTH_DEMO_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    with exclusive(tmp_path):
        r = subprocess.run(
            [sys.executable, "-m", "demo", "--check"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=60,
        )
    assert r.returncode == 2
    err = r.stderr.decode()
    assert f"another demo (pid {os.getpid()}) is running" in err and str(tmp_path) in err
    with exclusive(tmp_path):  # released: the next one gets it
        pass


def test_each_run_starts_fresh_and_says_so(tmp_path: Path) -> None:
    home = tmp_path / "hub" / "home" / "alice"
    home.mkdir(parents=True)
    (home / NOTEBOOK.name).write_text('{"cells": ["an earlier run\'s outputs"]}')
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tokens.sqlite3").write_text("tokens of another IdP run")
    (tmp_path / "crypt.key").write_text("kept")
    assert fresh_start(tmp_path) is True
    assert not (tmp_path / "hub").exists() and not (tmp_path / "data").exists()
    assert (tmp_path / "crypt.key").exists()
    assert fresh_start(tmp_path) is False  # nothing left to drop: nothing to say


def test_the_demo_extra_needs_no_test_tools() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    demo = " ".join(extras["demo"]).lower()
    assert "jupyterlab" in demo and "[all]" in demo
    assert "pytest" not in demo and "playwright" not in demo and "[test]" not in demo
    assert '".[demo]"' in (REPO / "scripts" / "demo").read_text()


def test_a_later_run_prepares_nothing_and_says_nothing(tmp_path: Path) -> None:
    from tests.servers.bigquery import setup_env as bigquery
    from tests.servers.snowflake import setup_env as snowflake

    if not (snowflake.is_ready() and bigquery.is_ready()):
        pytest.skip("the local warehouses' environments are not built yet")
    log = tmp_path / "install.log"
    r = subprocess.run(
        ["python3", "-m", "demo.prepare", str(log)], cwd=REPO, capture_output=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"" and r.stderr == b"" and not log.exists()
