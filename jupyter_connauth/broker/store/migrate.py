"""Schema migrations with alembic, run when a store opens.

The scripts ship in the package (``migrations/``). :func:`upgrade` runs them inside one
transaction that first takes a cross-process lock, so processes opening the store at
once (replicas, two ``jupyter lab``\\ s, a kernel) migrate once and the others see the
result: on PostgreSQL a transaction-scoped advisory lock, on SQLite the database's own
write lock (``BEGIN IMMEDIATE`` on the file), which the crash of a migrating process
releases with its half-done DDL rolled back.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ...core.errors import ConfigError
from .schema import HEAD, SCHEMA_VERSION, meta_t

log = logging.getLogger(__name__)

SCRIPTS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x636F6E6E61757468  # "connauth"


def current_revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    value = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)


def _legacy_version(conn: Connection) -> int:
    if not sa.inspect(conn).has_table("meta"):
        return 0
    value = conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar()
    return int(value) if value is not None else 0


def upgrade(engine: Engine, setting: str) -> str | None:
    """Bring the schema to :data:`HEAD`; returns the revision found (None: a new store
    or one made before alembic). ``setting`` names the config field in errors."""
    with engine.connect() as conn:  # the usual case: nothing to do, no lock taken
        if current_revision(conn) == HEAD:
            return HEAD
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    known = {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        found = current_revision(conn)
        legacy = _legacy_version(conn)
        if (found is not None and found not in known) or legacy > SCHEMA_VERSION:
            raise ConfigError(
                setting,
                f"the token store's schema ({found or legacy}) is newer than this "
                f"jupyter-connauth knows ({HEAD})",
                "upgrade jupyter-connauth in every process sharing the store to the same version",
            )
        if found != HEAD:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            log.info(
                "jupyter-connauth: token store schema migrated from %s to %s",
                found or f"v{legacy}",
                HEAD,
            )
    return found
