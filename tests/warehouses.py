"""The local warehouses as the tests wire them to connauth: each server's config trusting
the test IdP's tokens, and the connection (a ``connections`` entry) that reaches it.

The Databricks fixtures below (``idp_config``, ``warehouse``, ``connections``: the IdP
issuing ``sql`` for DBX, a warehouse holding SALES, one connection ``lake``) are the
setup most kernel and server tests share; a module takes them with
``from tests.warehouses import connections, idp_config, warehouse  # noqa: F401``
and defines only the fixtures whose values differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.idp_fixture import TestIdP
from tests.servers.databricks.fixture import DatabricksServer

DBX = "https://databricks.local"
USERS = {"alice@example.com": {"name": "Alice"}, "bob@example.com": {"name": "Bob"}}
SALES = [
    ["EU", "120.50", "alice@example.com"],
    ["US", "75.00", "alice@example.com"],
    ["EU", "300.00", "bob@example.com"],
]
HTTP_PATH = "/sql/1.0/warehouses/abc"  # the local warehouse's default


def trusting(idp: TestIdP, audience: str, **config: Any) -> dict[str, Any]:
    """A local warehouse's config that accepts ``idp``'s tokens for ``audience``."""
    return {
        "jwks_url": idp.discovery()["jwks_uri"],
        "issuer": idp.issuer,
        "audience": audience,
        **config,
    }


def databricks_at(
    at: str,
    ca_file: str | None,
    http_path: str = HTTP_PATH,
    *,
    driver_options: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A Databricks connection to the local warehouse at ``host:port`` (HTTPS, trusting
    ``ca_file``); ``fields``: the rest of the connection (scopes, resource, auth...)."""
    return {
        "connector": "databricks",
        "server_hostname": at,
        "http_path": http_path,
        "driver_options": {
            "_connection_uri": f"https://{at}{http_path}",
            "_tls_trusted_ca_file": ca_file,
            "enable_telemetry": False,
            **(driver_options or {}),
        },
        **fields,
    }


def databricks_connection(warehouse: DatabricksServer, **fields: Any) -> dict[str, Any]:
    """A Databricks connection to a running local ``warehouse`` (see databricks_at)."""
    at = f"{warehouse.host}:{warehouse.port}"
    return databricks_at(at, warehouse.ca_file, warehouse.http_path, **fields)


def lake(warehouse: DatabricksServer, scopes: str = "sql offline_access") -> dict[str, Any]:
    """The connection ``lake``: ``warehouse`` with the broker's OAuth tokens for DBX."""
    return databricks_connection(warehouse, scopes=scopes, resource=DBX)


def opaque_lake(warehouse: DatabricksServer) -> dict[str, Any]:
    """The connection ``lake`` asking for scopes with no resource, so the IdP answers an
    opaque access token (as Okta's can be); the driver gives up after one attempt."""
    return databricks_connection(
        warehouse,
        scopes="openid email offline_access",
        driver_options={"_retry_stop_after_attempts_count": 1},
    )


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {"resources": {DBX: {"audience": DBX, "scopes": ["sql"]}}}


@pytest.fixture
def warehouse(idp: TestIdP) -> Iterator[DatabricksServer]:
    with DatabricksServer(trusting(idp, DBX, users=USERS, sales_rows=SALES)) as srv:
        yield srv


@pytest.fixture
def connections(warehouse: DatabricksServer) -> dict[str, Any]:
    return {"lake": lake(warehouse)}
