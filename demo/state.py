"""The demo's state in ``.cache/demo``: one demo at a time, a fresh start on every run.

The local IdP keeps its signing key across runs but no grants, and the warehouses trust
the issuer of this run only: tokens stored by an earlier run could only fail. So every
run drops the earlier run's tokens, hub database and notebooks, and says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# $CONNAUTH_DEMO_DIR: another place (the browser test's demo runs beside a user's own).
WORK = Path(os.environ.get("CONNAUTH_DEMO_DIR") or REPO / ".cache" / "demo")
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
# What an earlier run leaves that this run cannot use (see the module's docstring).
STALE = ("data", "hub", "notebooks", "jupyter-runtime")


class DemoBusy(RuntimeError):
    pass


@contextlib.contextmanager
def exclusive(work: Path | None = None) -> Iterator[None]:
    """Hold ``work``'s lock while the demo runs; DemoBusy names the demo that holds it."""
    work = work or WORK
    work.mkdir(parents=True, exist_ok=True)
    path = work / "demo.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DemoBusy(
                f"another demo (pid {pid}) is running from this checkout and uses {work}. "
                "Stop it first (Ctrl-C in its terminal), or run the second demo from "
                "another clone."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def fresh_start(work: Path | None = None) -> bool:
    """Drop what an earlier run left; True if there was something to drop."""
    work = work or WORK
    dropped = False
    for name in STALE:
        if (work / name).exists():
            shutil.rmtree(work / name)
            dropped = True
    return dropped


# JupyterLab's "Would you like to get notified about official Jupyter news?": not offline.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": (
        '{"fetchNews": "false", "checkForUpdates": false}'
    )
}


def quiet_lab(config_dir: Path) -> None:
    """JupyterLab user settings (in ``config_dir``) for an offline demo."""
    for name, text in LAB_SETTINGS.items():
        path = config_dir / "lab" / "user-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def clean_notebook(folder: Path) -> Path:
    """A clean copy of the quickstart (no outputs, no added cells) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / NOTEBOOK.name
    shutil.copyfile(NOTEBOOK, target)
    return target
