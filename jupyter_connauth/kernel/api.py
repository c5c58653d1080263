"""The Python API: the user's identity in any code of the kernel, not only the magic.

    from jupyter_connauth import connect, engine, credentials

    conn = connect("sales")                    # the official driver's DB-API connection
    df = pd.read_sql(sql, engine("sales"))     # SQLAlchemy, a fresh credential per connection
    creds = credentials("bq")                  # google-auth Credentials, a Databricks
                                               # credentials_provider, a Snowflake token

Consent is asked the way the magic asks it: the Authorize balloon in a notebook, the
link in a terminal; the call then goes on by itself. The magics and these functions
share one :class:`Kernel` (one broker client: without a Jupyter server, one in-process
broker and its loopback callback; one driver session pool). No token is written to a
file or an environment variable: credentials stay in this process's memory.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from ..connectors import get_connector
from ..connectors.base import ConnectionInfo, Connector, Credential
from ..connectors.sessions import Lease, login
from ..core.errors import ConnAuthError
from .balloon import in_ipython
from .client import TOKEN_ENV, URL_ENV, BrokerAPI, ConsentNeeded, connect_broker
from .runner import ConsentHandler, Runner
from .tags import notebook_path, query_tags, with_tags

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["Kernel", "SnowflakeToken", "connect", "credentials", "engine", "kernel"]

T = TypeVar("T")


class Kernel:
    """What the magics and the API share in one kernel process."""

    def __init__(self, client: BrokerAPI) -> None:
        self.client = client
        #: Tag queries at the warehouse with the Jupyter user and the notebook's path
        #: (``%config ConnAuthMagics.query_tags``).
        self.query_tags = True
        #: BigQuery jobs billing more fail before they run (0: no limit;
        #: ``%config ConnAuthMagics.maximum_bytes_billed``).
        self.maximum_bytes_billed = 0
        self.runner = Runner(client, tune=self._tune)
        self.idp = "your identity provider"
        self.user: str | None = None
        try:
            info = client.info()
            url = info.get("discovery_url") or ""
            self.idp = re.sub(r"/\.well-known/openid-configuration$", "", url) or self.idp
            self.user = info.get("user")
        except ConnAuthError:
            pass

    def _tune(self, info: ConnectionInfo) -> ConnectionInfo:
        """The kernel's settings in the driver options of every lease."""
        if self.maximum_bytes_billed and info.connector == "bigquery":
            options = {"maximum_bytes_billed": self.maximum_bytes_billed}
            info = replace(info, driver_options={**options, **info.driver_options})
        if not self.query_tags:
            return info
        return with_tags(info, query_tags(self.user, notebook_path()))

    def call(
        self, name: str, op: Callable[[Connector, Any], T], on_consent: ConsentHandler | None
    ) -> T:
        """``op(connector, driver_connection)`` on the kernel's session of ``name`` (a
        token the warehouse rejects is reported to the broker, as for the magic)."""
        return self.runner.with_session(name, on_consent, op)

    def close(self) -> None:
        self.runner.close()

    # -- consent ---------------------------------------------------------------------
    def consent(self, answer: ConsentNeeded) -> None:
        """Show the balloon (a notebook) or the link (a terminal) and wait for the flow,
        with the magics' ``wait_timeout`` and ``poll_interval`` when they are loaded."""
        from .balloon import wait_for_consent

        timeout, interval, rich = 600.0, 0.5, False
        shell = _shell()
        if shell is not None:
            rich = getattr(shell, "kernel", None) is not None
            magics = shell.magics_manager.registry.get("ConnAuthMagics")
            if magics is not None:
                timeout, interval = magics.wait_timeout, magics.poll_interval
        wait_for_consent(
            self.client, answer, idp=self.idp, timeout=timeout, interval=interval, rich=rich
        )

    def lease(self, name: str, *, ask: bool = True) -> Lease:
        """The broker's credential for ``name``; with ``ask``, consent is asked when
        needed (else :class:`ConsentRequired` with the fix)."""
        return self.runner.lease(name, self.consent if ask else None)

    def renewer(self, name: str, first: Credential) -> Callable[[], Credential]:
        """For drivers that ask for the credential themselves: the broker's current one
        (it refreshes before expiry), the last one when the broker cannot answer."""
        last = [first]

        def renew() -> Credential:
            try:  # from the driver's thread: never a prompt, never a session closed
                last[0] = self.runner.lease(name, None, drop=False).credential
            except ConnAuthError:
                pass
            return last[0]

        return renew

    def open(self, name: str, lease: Lease) -> Any:
        """A driver connection (BigQuery: a ``bigquery.Client``) for ``lease``; known
        driver errors become :class:`ConnAuthError` with the fix. A token the warehouse
        rejects at login is reported to the broker, which refreshes the grant once (the
        connection is then opened with the new token) or marks it rejected."""
        rejected = self.runner.rejected(name, self.consent)
        _renew, _connector, conn = login(
            lease, lambda ls: self.renewer(name, ls.credential), None, rejected
        )
        return conn


_lock = threading.Lock()
_current: tuple[tuple[str | None, str | None], Kernel] | None = None


def kernel() -> Kernel:
    """This process's :class:`Kernel` (created on first use; a new one when the broker
    the environment names changes)."""
    global _current
    key = (os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV))
    with _lock:
        stale = _current is not None and _current[1].client.closed
        if _current is None or _current[0] != key or stale:
            _current = (key, Kernel(connect_broker()))
        return _current[1]


def _shell() -> Any:
    if not in_ipython():
        return None
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def _dbapi(connector: Connector, client: Any) -> Any:
    """BigQuery's connector gives a ``bigquery.Client``: its DB-API connection."""
    if connector.name != "bigquery":
        return client
    from google.cloud.bigquery import dbapi

    return dbapi.connect(client=client)


# -- the public functions ------------------------------------------------------------------
def connect(name: str) -> Any:
    """The official driver's DB-API 2.0 connection to connection ``name``, as you.

    Snowflake: ``snowflake.connector`` with ``paramstyle="qmark"`` (``?`` placeholders,
    bound at Snowflake); Databricks: ``databricks.sql`` (``:name``); BigQuery:
    ``google.cloud.bigquery.dbapi`` (``%(name)s``). Consent is asked first when needed.
    Close it when done (or use it in a ``with`` block where the driver supports that)."""
    k = kernel()
    lease = k.lease(name)
    return _dbapi(get_connector(lease.info.connector), k.open(name, lease))


def engine(name: str, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine for connection ``name`` through the vendor's dialect
    (``pip install 'jupyter-connauth[sqlalchemy]'``). Each new pooled DB-API connection
    is opened with a fresh credential from the broker; a pooled connection whose grant
    changed (revoked, re-authorized) or whose credential is about to expire is replaced
    at checkout. ``kwargs`` go to :func:`sqlalchemy.create_engine`."""
    from .sqlalchemy_engines import create_engine

    return create_engine(kernel(), name, **kwargs)


def credentials(name: str) -> Any:
    """Credentials for connection ``name`` to hand to a driver or SDK yourself:

    - BigQuery: ``google.oauth2.credentials.Credentials`` with the token's expiry and a
      ``refresh_handler`` that asks the broker (``bigquery.Client(credentials=...)``);
    - Databricks: a ``credentials_provider`` for ``databricks.sql.connect``;
    - Snowflake: a :class:`SnowflakeToken` (``snowflake.connector.connect(
      **creds.connect_args())``).
    """
    k = kernel()
    lease = k.lease(name)
    connector = lease.info.connector
    renew = k.renewer(name, lease.credential)
    if connector == "bigquery":
        from ..connectors.bigquery_credentials import broker_credentials

        return broker_credentials(lease.credential, name, renew)
    if connector == "databricks":
        from ..connectors.databricks import credentials_provider

        return credentials_provider(renew)
    return SnowflakeToken(k, name, lease)


# -- per warehouse ---------------------------------------------------------------------------
class SnowflakeToken:
    """The user's Snowflake credential: ``token`` asks the broker each time (a JWT is
    minted per use), ``connect_args()`` the arguments of ``snowflake.connector.connect``
    for the connection (account, warehouse, database, schema, role, ``authenticator=
    "oauth"``, the token)."""

    def __init__(self, k: Kernel, name: str, lease: Lease) -> None:
        self._kernel = k
        self.name = name
        self._lease = lease

    def _fresh(self) -> Lease:
        cred = self._lease.credential
        if cred.kind == "jwt" or (cred.expires_at or 0) - 60 < time.time():
            self._lease = self._kernel.lease(self.name)
        return self._lease

    @property
    def token(self) -> str:
        return self._fresh().credential.token

    @property
    def expires_at(self) -> float | None:
        return self._lease.credential.expires_at

    @property
    def identity(self) -> str | None:
        return self._lease.credential.identity

    def connect_args(self) -> dict[str, Any]:
        lease = self._fresh()
        params = lease.info.params
        args: dict[str, Any] = {
            k: params[k]
            for k in ("account", "warehouse", "database", "schema", "role")
            if params.get(k)
        }
        args.update(authenticator="oauth", token=lease.credential.token)
        return args

    def __repr__(self) -> str:
        return f"SnowflakeToken(connection={self.name!r}, expires_at={self.expires_at!r})"
