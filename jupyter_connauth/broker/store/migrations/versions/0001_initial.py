"""The schema of both stores before alembic (raw-sqlite3 ``SQLiteTokenStore`` and the
hub's ``SQLTokenStore``, ``meta.schema_version`` 1): created where missing, so an
existing file or database of either kind is adopted as it is.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "meta" not in have:
        op.create_table(
            "meta",
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
    if "tokens" not in have:
        op.create_table(
            "tokens",
            sa.Column("user", sa.String(255), primary_key=True),
            sa.Column("connection", sa.String(255), primary_key=True),
            sa.Column("fingerprint", sa.String(255), nullable=False),
            sa.Column("data", sa.LargeBinary, nullable=True),
            sa.Column("reason", sa.String(64), nullable=True),
            sa.Column("updated_at", sa.Float, nullable=False),
        )
        op.create_index("tokens_by_connection", "tokens", ["connection"])
    if "flows" not in have:
        op.create_table(
            "flows",
            sa.Column("flow_id", sa.String(64), primary_key=True),
            sa.Column("state_hash", sa.String(64), nullable=False, unique=True),
            sa.Column("used", sa.Integer, nullable=False, server_default="0"),
            sa.Column("expires_at", sa.Float, nullable=False),
            sa.Column("data", sa.LargeBinary, nullable=False),
        )
    for by_name in ("connections", "secrets"):  # encrypted blobs by name
        if by_name not in have:
            op.create_table(
                by_name,
                sa.Column("name", sa.String(255), primary_key=True),
                sa.Column("data", sa.LargeBinary, nullable=False),
            )
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    found = (
        op.get_bind().execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
    )
    if found is None:
        op.execute(meta.insert().values(key="schema_version", value="1"))
