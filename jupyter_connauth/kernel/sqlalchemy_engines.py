"""SQLAlchemy engines per user: the vendors' dialects with a ``creator`` that asks the
broker for a fresh credential for every new DB-API connection.

Dialects (``pip install 'jupyter-connauth[sqlalchemy]'``): ``snowflake-sqlalchemy``
(``snowflake://``), ``databricks-sqlalchemy`` (``databricks://``), ``sqlalchemy-bigquery``
(``bigquery://``, with ``user_supplied_client``: the DB-API connection wraps our client).

Pooled connections never carry a stale grant: at every checkout the broker is asked
(one local HTTP round trip, as each ``%%sql_connector`` cell does); a connection opened
under another grant (revoked, re-authorized, scopes edited) or with a credential that
expires within a minute, where the driver cannot renew it itself, is discarded and a
new one opened (SQLAlchemy's ``DisconnectionError`` at checkout). ``pool_pre_ping``
also replaces connections the warehouse has closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..connectors import get_connector
from ..connectors.base import ConnectionInfo
from ..core.errors import DriverMissing
from .api import Kernel, _dbapi
from .client import AccessToken

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

#: Reconnect when the connection's credential has less than this left (at most a
#: quarter of its lifetime, for short-lived tokens).
MARGIN = 60.0

_DIALECTS = {
    "snowflake": ("snowflake.sqlalchemy", "snowflake-sqlalchemy"),
    "databricks": ("databricks.sqlalchemy", "databricks-sqlalchemy"),
    "bigquery": ("sqlalchemy_bigquery", "sqlalchemy-bigquery"),
}


def _require_dialect(connector: str) -> None:
    import importlib

    module, package = _DIALECTS[connector]
    try:
        importlib.import_module(module)
    except ImportError:
        raise DriverMissing(
            f"The SQLAlchemy dialect for {connector} ({package}) is not installed.",
            "pip install 'jupyter-connauth[sqlalchemy]' in the kernel's environment, "
            "then restart the kernel",
        ) from None


def engine_url(info: ConnectionInfo) -> URL:
    """The dialect's URL for a connection (no credential in it: the creator connects)."""
    from sqlalchemy.engine import URL

    p: Mapping[str, Any] = info.params
    if info.connector == "snowflake":
        query = {k: str(p[k]) for k in ("warehouse", "role") if p.get(k)}
        database = "/".join(str(p[k]) for k in ("database", "schema") if p.get(k)) or None
        return URL.create("snowflake", host=str(p.get("account") or ""), database=database,
                          query=query)  # fmt: skip
    if info.connector == "databricks":
        host, _, port = str(p.get("server_hostname") or "").partition(":")
        query = {k: str(p[k]) for k in ("http_path", "catalog", "schema") if p.get(k)}
        return URL.create(
            "databricks", username="token", host=host, port=int(port) if port else None,
            query=query,
        )  # fmt: skip
    query = {"user_supplied_client": "true"}
    if p.get("location"):
        query["location"] = str(p["location"])
    dataset = str(p["dataset"]).split(".")[-1] if p.get("dataset") else None
    return URL.create("bigquery", host=str(p.get("project") or ""), database=dataset,
                      query=query)  # fmt: skip


def create_engine(k: Kernel, name: str, **kwargs: Any) -> Engine:
    import sqlalchemy
    from sqlalchemy import event, exc

    lease = k.lease(name)  # consent now, before the first query needs it
    info = lease.info
    _require_dialect(info.connector)
    connector = get_connector(info.connector)
    renews = info.connector in ("databricks", "bigquery") and _renews(connector)
    opened: dict[int, tuple[str | None, float | None, float]] = {}  # thread → creator's

    def creator() -> Any:
        current = k.lease(name)
        conn = _dbapi(connector, k.open(name, current))
        opened[threading.get_ident()] = (
            current.grant,
            current.credential.expires_at,
            time.time(),
        )
        return conn

    if info.connector == "snowflake":
        kwargs.setdefault("paramstyle", "qmark")  # as the connector's connections bind
    kwargs.setdefault("pool_pre_ping", True)
    eng = sqlalchemy.create_engine(engine_url(info), creator=creator, **kwargs)

    @event.listens_for(eng, "connect")
    def _connected(dbapi_conn: Any, record: Any) -> None:
        record.info["connauth"] = opened.pop(threading.get_ident(), (None, None, 0.0))

    @event.listens_for(eng, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        grant, expires_at, opened_at = record.info.get("connauth", (None, None, 0.0))
        answer = k.client.token(name)
        if not isinstance(answer, AccessToken) or answer.grant != grant:
            raise exc.DisconnectionError("jupyter-connauth: the grant changed")
        if not renews and expires_at is not None:
            margin = min(MARGIN, (expires_at - opened_at) / 4)
            if expires_at - margin < time.time():
                raise exc.DisconnectionError("jupyter-connauth: the credential expires")

    return eng


def _renews(connector: Any) -> bool:
    import inspect

    return "renew" in inspect.signature(connector.connect).parameters
