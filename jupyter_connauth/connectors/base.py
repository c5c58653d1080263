"""What every warehouse connector provides.

A connector turns (connection info, credential) into a driver connection, runs SQL
with server-side bound parameters, and fetches results through the driver's Arrow
path (never row-by-row Python conversion). It also lists metadata for the browse
tree, tells the warehouse's view of the user, and translates driver errors into
:class:`ConnAuthError` with the fix.
"""

from __future__ import annotations

import importlib
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ..core.errors import ConnAuthError, DriverMissing

T = TypeVar("T")

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

ACCESS_TOKEN_PLACEHOLDER = "{ACCESS_TOKEN}"  # noqa: S105 - a placeholder

#: ``pyarrow.Table.to_pandas`` options for a table nobody else holds (see ``to_pandas``).
PANDAS_OPTIONS: dict[str, Any] = {"split_blocks": True, "self_destruct": True}

#: Named parameters (a dict) or positional ones (a list).
Params = Mapping[str, Any] | Sequence[Any] | None
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ConnectionInfo:
    """What the kernel learns about a connection from the broker (no secrets)."""

    name: str
    connector: str
    auth: str
    params: Mapping[str, Any]
    driver_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConnectionInfo:
        return cls(
            name=data["name"],
            connector=data["connector"],
            auth=data.get("auth", "oauth"),
            params=dict(data.get("params") or {}),
            driver_options=dict(data.get("driver_options") or {}),
        )


@dataclass(frozen=True)
class Credential:
    """An access token (or a Snowflake JWT minted by the broker) for one use."""

    token: str
    expires_at: float | None
    kind: Literal["oauth", "jwt"] = "oauth"
    identity: str | None = None

    def __repr__(self) -> str:
        return f"Credential(kind={self.kind!r}, expires_at={self.expires_at!r})"


#: How a driver gets a fresh credential during a session, from the broker: called on the
#: driver's own threads (Databricks on every request, BigQuery when google-auth finds its
#: token about to expire); answers the session's current credential, a newer one of the
#: same grant when that one is about to expire. Never raises for a broker that cannot
#: renew: it answers the last credential, which the warehouse then rejects.
Renew = Callable[[], Credential]


def note_query_id(progress: Progress | None, query_id: Any) -> None:
    """Tell the caller the warehouse's id of the statement (Snowflake's query id,
    Databricks' statement id, BigQuery's job id) when its ``progress`` callback has a
    ``query_id`` method (the magic's ticker: the result's footer and metadata)."""
    hook = getattr(progress, "query_id", None)
    if callable(hook) and query_id:
        hook(str(query_id))


def with_token(options: Mapping[str, Any], token: str) -> dict[str, Any]:
    """``driver_options`` with ``{ACCESS_TOKEN}`` replaced wherever a driver wants it."""

    def sub(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(ACCESS_TOKEN_PLACEHOLDER, token)
        if isinstance(value, Mapping):
            return {k: sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v) for v in value]
        return value

    return {k: sub(v) for k, v in options.items()}


class _Worker(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="connauth-driver-call", daemon=True)
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                job()
            finally:
                with _IDLE_LOCK:
                    _IDLE.append(self)


_IDLE: list[_Worker] = []
_IDLE_LOCK = threading.Lock()


def in_worker(job: Callable[[], None]) -> None:
    """Run ``job`` (which must not raise) on a daemon thread reused across calls: a new
    thread per driver call costs about a millisecond on a busy machine. Daemon, so a
    driver call stuck in native code never holds up the kernel's exit."""
    with _IDLE_LOCK:
        worker = _IDLE.pop() if _IDLE else None
    if worker is None:
        worker = _Worker()
        worker.start()
    worker.jobs.put(job)


#: How long an interrupted query waits for the cancel request and the driver call.
CANCEL_GRACE_SECONDS = 5.0


def interruptible(fn: Callable[[], T], on_interrupt: Callable[[], None]) -> T:
    """Run a blocking driver call on a worker thread so Ctrl-C reaches the kernel at once
    (drivers block in native code with the GIL released, or in a socket read that the
    interrupt would cut, losing the answer that names the statement to cancel); on
    KeyboardInterrupt call ``on_interrupt`` (cancel at the warehouse), give the driver
    call ``CANCEL_GRACE_SECONDS`` to end, then re-raise."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the calling thread
            box["error"] = exc
        finally:
            done.set()

    in_worker(work)
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        on_interrupt()
        done.wait(CANCEL_GRACE_SECONDS)
        raise
    if "error" in box:
        error: BaseException = box.pop("error")
        try:
            raise error
        finally:
            del error
    value: T = box.pop("value")
    return value


class Connector(ABC):
    """One warehouse. Subclasses keep driver imports inside their methods."""

    name: ClassVar[str]
    #: The pip extra that installs the driver: ``jupyter-connauth[<extra>]``.
    extra: ClassVar[str]
    #: The driver's import name, for the "missing driver" message.
    driver_module: ClassVar[str]

    def driver(self) -> ModuleType:
        try:
            return importlib.import_module(self.driver_module)
        except ImportError:
            raise DriverMissing(
                f"The {self.name} driver ({self.driver_module}) is not installed in this kernel.",
                f"pip install 'jupyter-connauth[{self.extra}]' in the kernel's environment, "
                "then restart the kernel",
            ) from None

    # -- connections --------------------------------------------------------------
    @abstractmethod
    def connect(self, info: ConnectionInfo, cred: Credential, renew: Renew | None = None) -> Any:
        """A driver connection (or client) authenticated as the credential's user.

        With ``renew``, the driver asks it for the credential whenever it needs one, so a
        session and a running statement outlive the first token (Databricks'
        ``credentials_provider``, google-auth's ``refresh_handler``); Snowflake logs in
        once with ``cred`` and then lives on its own session and master tokens."""

    def close(self, conn: Any) -> None:
        close = getattr(conn, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: S110 - closing a dead connection is best effort
                pass

    # -- queries ----------------------------------------------------------------
    @abstractmethod
    def query_arrow(
        self,
        conn: Any,
        sql: str,
        params: Params = None,
        *,
        max_rows: int | None = None,
        progress: Progress | None = None,
    ) -> pa.Table:
        """Run SQL with server-side bound parameters; the result as Arrow.

        On KeyboardInterrupt the running job is cancelled at the warehouse before the
        interrupt propagates. More than ``max_rows`` rows → :class:`TooManyRows`.
        """

    def query_pandas(
        self,
        conn: Any,
        sql: str,
        params: Params = None,
        *,
        max_rows: int | None = None,
        progress: Progress | None = None,
    ) -> pd.DataFrame:
        """The result as a DataFrame through the driver's fastest path (default: Arrow)."""
        table = self.query_arrow(conn, sql, params, max_rows=max_rows, progress=progress)
        return self.to_pandas(table)

    def to_pandas(self, table: pa.Table) -> pd.DataFrame:
        """Arrow → pandas with the warehouse's dtypes (default: pyarrow's).

        The table is consumed: each column's Arrow buffers are released as soon as that
        column is converted (``self_destruct``), and columns are not consolidated into
        2-D blocks (``split_blocks``, which would copy every numeric column once more),
        so the peak is about one copy of the data instead of two."""
        return table.to_pandas(**PANDAS_OPTIONS)

    @abstractmethod
    def whoami(self, conn: Any) -> dict[str, Any]:
        """The warehouse's view of the user: ``{"user": ..., "role": ...}``."""

    # -- metadata for the browse tree --------------------------------------------
    @abstractmethod
    def list_catalogs(self, conn: Any) -> list[str]:
        """Projects (BigQuery), catalogs (Databricks) or databases (Snowflake)."""

    @abstractmethod
    def list_schemas(self, conn: Any, catalog: str) -> list[str]:
        """Datasets (BigQuery) or schemas."""

    @abstractmethod
    def list_tables(self, conn: Any, catalog: str, schema: str) -> list[dict[str, Any]]:
        """``[{"name": ..., "type": "TABLE" | "VIEW"}]``"""

    @abstractmethod
    def list_columns(
        self, conn: Any, catalog: str, schema: str, table: str
    ) -> list[dict[str, Any]]:
        """``[{"name": ..., "type": ..., "nullable": bool}]``"""

    # -- errors -------------------------------------------------------------------
    def translate_error(self, exc: BaseException, info: ConnectionInfo) -> ConnAuthError | None:
        """A known driver error → the error with its fix (no token in the text)."""
        return None

    def is_auth_error(self, exc: BaseException) -> bool:
        """True when the warehouse rejected the credential (reconnect with a fresh one)."""
        return False

    def session_gone(self, exc: BaseException) -> bool:
        """True when the warehouse no longer knows the driver session (it restarted, or
        the session expired): it refused the call, so nothing ran and a reconnect may
        run it."""
        return False
