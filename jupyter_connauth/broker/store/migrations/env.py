"""Alembic's environment for the token store: run by :func:`..migrate.upgrade` on a
connection that already holds the migration lock and an open transaction."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=False)
with context.begin_transaction():
    context.run_migrations()
