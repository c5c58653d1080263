"""Per-user OAuth for data connectors in Jupyter.

Importing this package stays light: it pulls in neither jupyter_server, IPython
nor any warehouse driver. The server extension, the magics and the connectors are
loaded only by the entry points below.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import ConnAuthApp

    return [{"module": "jupyter_connauth.server.app", "app": ConnAuthApp}]
