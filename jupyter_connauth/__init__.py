"""Per-user OAuth for data connectors in Jupyter.

Importing this package stays light: it pulls in neither jupyter_server, IPython
nor any warehouse driver. The server extension, the magics and the connectors are
loaded only by the entry points below.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__", "load_ipython_extension"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import ConnAuthApp

    return [{"module": "jupyter_connauth.server.app", "app": ConnAuthApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (the Connections sidebar), for
    ``jupyter labextension develop``; wheels install it under share/jupyter."""
    return [{"src": "labextension", "dest": "jupyter-connauth"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_connauth``: registers the ``%%sql_connector`` magics."""
    from .kernel.magics import load_ipython_extension as _load

    _load(ipython)
