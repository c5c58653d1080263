"""Warehouse connectors (kernel side): each runs queries through the official driver
with the user's credential. Drivers are imported only when a connector is used."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ..core.errors import ConfigError

if TYPE_CHECKING:
    from .base import Connector

_MODULES = {
    "bigquery": "jupyter_connauth.connectors.bigquery",
    "databricks": "jupyter_connauth.connectors.databricks",
    "snowflake": "jupyter_connauth.connectors.snowflake",
}


def get_connector(name: str) -> Connector:
    """The connector for ``bigquery``, ``databricks`` or ``snowflake``."""
    module = _MODULES.get(name)
    if module is None:
        raise ConfigError(
            "connector", f"unknown connector {name!r}", f"use one of: {', '.join(_MODULES)}"
        )
    connector: Connector = import_module(module).CONNECTOR
    return connector
