"""The wheel ships the server extension and the prebuilt JupyterLab extension.

Builds the wheel once per session (or takes ``$CONNAUTH_WHEEL``, e.g. the wheel CI
already built), installs it into a clean venv and asks Jupyter itself whether both
extensions are enabled and OK: what a user gets from ``pip install``, with no Node.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import jupyter_connauth

REPO = Path(__file__).resolve().parents[1]
LABEXT_NAME = "jupyter-connauth"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> str:
    done = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    out = ANSI.sub("", done.stdout + done.stderr)
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{out[-4000:]}"
    return out


def test_labextension_version_matches_the_package() -> None:
    package = json.loads((REPO / "labextension" / "package.json").read_text())
    assert package["name"] == LABEXT_NAME
    assert package["version"] == jupyter_connauth.__version__
    assert jupyter_connauth._jupyter_labextension_paths() == [
        {"src": "labextension", "dest": LABEXT_NAME}
    ]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("CONNAUTH_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)]
    try:  # the dev venv has the build backend: skip the isolated build env (faster)
        import hatch_jupyter_builder  # noqa: F401

        cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    env = dict(os.environ)  # jlpm comes with the venv's jupyterlab (jupyter-builder)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    run(cmd, env)
    (built,) = out.glob("jupyter_connauth-*.whl")
    return built


@pytest.fixture(scope="session")
def clean_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("clean")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER", "JPY_", "PYTHON", "VIRTUAL_ENV", "CONDA"))
    }
    env.update(
        HOME=str(root / "home"),
        JUPYTER_CONFIG_DIR=str(root / "config"),
        JUPYTER_DATA_DIR=str(root / "data"),
        JUPYTER_PLATFORM_DIRS="0",
        PATH=str(bin_dir) + os.pathsep + env.get("PATH", ""),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    # jupyterlab only to run `jupyter labextension list`: the wheel itself needs no Node
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel), "jupyterlab"], env)
    yield env


@pytest.mark.slow
def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    data = next(n.split("/")[0] for n in names if ".data/" in n)
    share = f"{data}/data/share/jupyter/labextensions/{LABEXT_NAME}"
    assert f"{share}/package.json" in names
    assert f"{share}/install.json" in names
    assert any(
        re.match(rf"{re.escape(share)}/static/remoteEntry\.[0-9a-f]+\.js$", n) for n in names
    )
    assert f"{data}/data/etc/jupyter/jupyter_server_config.d/jupyter_connauth.json" in names
    assert not any("node_modules" in n or n.endswith(".ts") for n in names)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_installed_wheel_enables_both_extensions(clean_venv: dict[str, str]) -> None:
    server = run(["jupyter", "server", "extension", "list"], clean_venv, timeout=60)
    assert re.search(r"jupyter_connauth\s+enabled", server), server
    assert re.search(rf"jupyter_connauth {re.escape(jupyter_connauth.__version__)}\s+OK", server), (
        server
    )
    lab = run(["jupyter", "labextension", "list"], clean_venv, timeout=60)
    line = next((ln for ln in lab.splitlines() if LABEXT_NAME in ln), "")
    assert re.search(
        rf"{LABEXT_NAME} v{re.escape(jupyter_connauth.__version__)}\s+enabled\s+OK"
        r"\s+\(python, jupyter_connauth\)",
        line,
    ), lab
