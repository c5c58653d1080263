"""Row versions (compare-and-set), refresh leases, and the identity of a dropped token.

Also sets ``meta.schema_version`` to 2, so a replica still running the store before
alembic (which refreshes without leases) refuses to open the database.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("version", sa.Integer, nullable=False, server_default="0"))
    op.add_column("tokens", sa.Column("lease_holder", sa.String(64), nullable=True))
    op.add_column("tokens", sa.Column("lease_until", sa.Float, nullable=True))
    op.add_column("tokens", sa.Column("previous_identity", sa.LargeBinary, nullable=True))
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="2"))
