"""Per-user OAuth for data connectors in Jupyter.

    from jupyter_connauth import connect, engine, credentials

Importing this package stays light: it pulls in neither jupyter_server, IPython
nor any warehouse driver. The server extension, the magics, the connectors and the
Python API (``connect``, ``engine``, ``credentials``: jupyter_connauth/kernel/api.py)
are loaded only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .kernel.api import connect, credentials, engine

__all__ = ["__version__", "connect", "credentials", "engine", "load_ipython_extension"]

_API = ("connect", "credentials", "engine")


def __getattr__(name: str) -> Any:
    """``connect``, ``engine`` and ``credentials`` load the kernel side on first use."""
    if name in _API:
        from .kernel import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
