"""The store's tables as the queries see them (the schema at alembic's head revision).

The migrations under ``migrations/versions`` build this schema step by step; they keep
their own copies of what they create, so editing this file never rewrites history.
"""

from __future__ import annotations

import sqlalchemy as sa

#: The newest migration; checked against the migration scripts by the tests.
HEAD = "0002"
#: ``meta.schema_version`` at HEAD (the stores before alembic read it to refuse a newer schema).
SCHEMA_VERSION = 2

metadata = sa.MetaData()
meta_t = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
tokens_t = sa.Table(
    "tokens",
    metadata,
    sa.Column("user", sa.String(255), primary_key=True),
    sa.Column("connection", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(255), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=True),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_holder", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("previous_identity", sa.LargeBinary, nullable=True),
)
flows_t = sa.Table(
    "flows",
    metadata,
    sa.Column("flow_id", sa.String(64), primary_key=True),
    sa.Column("state_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("used", sa.Integer, nullable=False, server_default="0"),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


def _by_name(table: str) -> sa.Table:
    """A table of encrypted blobs by name (connections defined through the API, secrets)."""
    return sa.Table(
        table,
        metadata,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


connections_t = _by_name("connections")
secrets_t = _by_name("secrets")
