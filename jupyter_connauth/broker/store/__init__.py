"""The token store: one implementation (SQLAlchemy Core) for every host.

The Jupyter server extension and the in-kernel broker open a SQLite file (the same file
when they run as the same OS user), the JupyterHub service SQLite or PostgreSQL.
``open_store(url_or_path, crypt)`` is the one way in; SQLAlchemy and alembic load only
then, so importing this package stays light.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ...core.crypto import CryptKeeper
from .base import TokenStore

if TYPE_CHECKING:
    from .sql import SQLTokenStore

__all__ = ["SQLTokenStore", "TokenStore", "open_store"]


def open_store(
    url_or_path: str | os.PathLike[str], crypt: CryptKeeper, **engine_kwargs: Any
) -> SQLTokenStore:
    """Open (creating and migrating when needed) the store at a SQLAlchemy URL
    (``sqlite:///...``, ``postgresql+psycopg://...``) or a SQLite file path."""
    from .sql import SQLTokenStore, sqlite_file

    target = os.fspath(url_or_path)
    if "://" not in target:
        return SQLTokenStore(sqlite_file(target), crypt, **engine_kwargs)
    engine_kwargs.setdefault("setting", "c.ConnAuthHub.db_url")
    return SQLTokenStore(target, crypt, **engine_kwargs)


def __getattr__(name: str) -> Any:
    if name == "SQLTokenStore":
        from .sql import SQLTokenStore

        return SQLTokenStore
    raise AttributeError(name)
