"""Query tags at the warehouse: which Jupyter user and which notebook ran a statement,
so the warehouse's audit (Snowflake QUERY_HISTORY, BigQuery INFORMATION_SCHEMA.JOBS,
Databricks system.query.history) shows it next to the user's own identity.

- Snowflake: the ``QUERY_TAG`` session parameter (a JSON object, at most 2,000
  characters), set at login through ``session_parameters``.
- BigQuery: job labels (keys and values: lower-case letters, digits, ``_`` and ``-``,
  at most 63 characters), through the connector's ``job_labels`` option.
- Databricks: ``query_tags`` of databricks-sql-connector ≥ 4.1 (the session's
  ``QUERY_TAGS`` configuration).

The notebook's path comes from ``JPY_SESSION_NAME``, which jupyter_server sets for the
kernels of its sessions. Tags an admin set in a connection's ``driver_options`` win.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from typing import Any

from ..connectors.base import ConnectionInfo

#: The environment variable jupyter_server sets to the notebook's path for its kernels.
NOTEBOOK_ENV = "JPY_SESSION_NAME"
SNOWFLAKE_TAG_LIMIT = 2000


def notebook_path() -> str | None:
    return os.environ.get(NOTEBOOK_ENV) or None


def query_tags(user: str | None, notebook: str | None) -> dict[str, str]:
    tags = {"app": "jupyter-connauth"}
    if user:
        tags["jupyter_user"] = user
    if notebook:
        tags["notebook"] = notebook
    return tags


def bigquery_label(value: str) -> str:
    """A BigQuery label value: lower case, ``[a-z0-9_-]``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "_", value.lower())[:63]


def with_tags(info: ConnectionInfo, tags: dict[str, str]) -> ConnectionInfo:
    """``info`` whose driver options carry ``tags`` the way its warehouse takes them."""
    options: dict[str, Any] = dict(info.driver_options)
    if info.connector == "snowflake":
        params = dict(options.get("session_parameters") or {})
        params.setdefault("QUERY_TAG", json.dumps(tags)[:SNOWFLAKE_TAG_LIMIT])
        options["session_parameters"] = params
    elif info.connector == "databricks":
        options["query_tags"] = {**tags, **(options.get("query_tags") or {})}
    elif info.connector == "bigquery":
        labels = {bigquery_label(k): bigquery_label(v) for k, v in tags.items()}
        options["job_labels"] = {**labels, **(options.get("job_labels") or {})}
    else:
        return info
    return replace(info, driver_options=options)
