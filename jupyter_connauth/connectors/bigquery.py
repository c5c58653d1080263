"""BigQuery through the official ``google-cloud-bigquery`` client, as the notebook user.

Connection parameters (``params``): ``project`` (required; jobs run and are billed
there), ``location`` (optional, e.g. ``EU``), ``dataset`` (optional default dataset
for unqualified table names).

``driver_options`` go to ``bigquery.Client`` (``{ACCESS_TOKEN}`` is substituted), e.g.
``client_options={"api_endpoint": "http://127.0.0.1:9050"}``, except for our own:

- ``use_storage_api`` (bool, default True): download large query results through the
  BigQuery Storage Read API (gRPC, Arrow) when google-cloud-bigquery-storage is
  installed (``jupyter-connauth[bigquery]`` installs it); otherwise REST pages.
- ``storage_api_endpoint`` (optional): the Storage Read API's ``host:port`` (TLS), or
  ``http://host:port`` for a local emulator's plaintext gRPC (see bigquery_storage.py).
- ``retry_deadline`` (seconds, default: the driver's 600): how long the driver keeps
  retrying transient failures (connection refused, 5xx, rate limits) before giving up.
- ``job_labels`` (dict): labels of every query job (the kernel's query tags).
- ``maximum_bytes_billed`` (int): jobs that would bill more fail before they run.

Credentials (:mod:`.bigquery_credentials`): google-auth's ``Credentials(token,
expiry=..., refresh_handler=...)``, the form google-auth provides for tokens from a
token broker (google-auth-library-python PR #812). The handler asks the session's
renewer, which asks the broker shortly before the token expires, so a job polled past
the token's life and a Storage Read stream (the read client shares these credentials)
keep going. google-auth refreshes ``REFRESH_THRESHOLD`` (3 min 45 s) before ``expiry``
and refuses a refreshed token within that threshold, so the expiry it is given is when
to ask the handler again (at most ``RECHECK_SECONDS`` ahead, three quarters of the
remaining life), not the token's own. Without a renewer the credentials hold the token
only and ``refresh()`` raises :class:`ConsentRequired` (code ``token_rejected``);
:meth:`BigQueryConnector.is_auth_error` is True for it.

Results come through ``RowIterator.to_arrow()`` (REST pages parsed to Arrow, or the
Storage Read API; :meth:`BigQueryConnector.query_pandas` converts the Storage API's
record batches one at a time as they arrive, :mod:`.streaming`) and are converted here,
which avoids the deprecated ``to_dataframe()`` (google-cloud-bigquery 3.47 warns on
every call) and gives these dtypes: INT64 → ``Int64`` (nullable), BOOL → ``boolean``,
FLOAT64 → ``float64``, STRING → pandas' string dtype, TIMESTAMP →
``datetime64[us, UTC]``, DATETIME → ``datetime64[us]``, NUMERIC/BIGNUMERIC →
``decimal.Decimal`` objects, DATE/TIME → ``datetime.date``/``datetime.time`` objects.
"""

from __future__ import annotations

import importlib
import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import (
    ConfigError,
    ConnAuthError,
    ConsentRequired,
    QueryError,
    TooManyRows,
)
from .base import (
    ConnectionInfo,
    Connector,
    Credential,
    Params,
    Progress,
    Renew,
    note_query_id,
    with_token,
)
from .bigquery_credentials import broker_credentials, token_rejected
from .bigquery_dtypes import NumericScales, arrow_to_pandas, types_mapper
from .bigquery_errors import (
    endpoint_of,
    exception_chain,
    is_auth_failure,
    is_network_failure,
    network_reason,
    scrub,
    translate_api_error,
)
from .bigquery_params import query_parameter
from .bigquery_storage import read_client, storage_installed
from .streaming import SMALL_ROWS, batches_to_pandas

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)


#: Our own driver_options, removed before the rest goes to ``bigquery.Client``.
OWN_OPTIONS = (
    "use_storage_api",
    "storage_api_endpoint",
    "retry_deadline",
    "job_labels",
    "maximum_bytes_billed",
)


@dataclass(frozen=True)
class _Settings:
    use_storage_api: bool = True
    retry_deadline: float | None = None
    storage_api_endpoint: str | None = None
    job_labels: Mapping[str, str] | None = None
    maximum_bytes_billed: int | None = None


class BigQueryConnector(Connector):
    name = "bigquery"
    extra = "bigquery"
    driver_module = "google.cloud.bigquery"

    def __init__(self) -> None:
        # Our options per client, so connect() can hand back a plain bigquery.Client.
        self._settings: weakref.WeakKeyDictionary[Any, _Settings] = weakref.WeakKeyDictionary()
        self._read_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    # -- connections --------------------------------------------------------------
    def connect(self, info: ConnectionInfo, cred: Credential, renew: Renew | None = None) -> Any:
        bigquery = self.driver()
        project = info.params.get("project")
        if not project:
            raise ConfigError(
                "project",
                f"connection {info.name!r} has no BigQuery project",
                "set 'project' in the connection (the project that runs and pays for the "
                "query jobs)",
            )
        options = with_token(info.driver_options, cred.token)
        settings = _Settings(
            use_storage_api=_flag(options.pop("use_storage_api", True)),
            retry_deadline=_optional_float(options.pop("retry_deadline", None)),
            storage_api_endpoint=options.pop("storage_api_endpoint", None) or None,
            job_labels=dict(options.pop("job_labels", None) or {}) or None,
            maximum_bytes_billed=_optional_int(options.pop("maximum_bytes_billed", None)),
        )
        client = bigquery.Client(
            project=project,
            location=info.params.get("location"),
            credentials=broker_credentials(cred, info.name, renew),
            **options,
        )
        dataset = info.params.get("dataset")
        if dataset:
            default = dataset if "." in str(dataset) else f"{project}.{dataset}"
            client.default_query_job_config = bigquery.QueryJobConfig(default_dataset=default)
        self._settings[client] = settings
        return client

    def _settings_for(self, client: Any) -> _Settings:
        try:
            return self._settings.get(client) or _Settings()
        except TypeError:  # not weak-referenceable: someone else's object
            return _Settings()

    def _retry(self, client: Any) -> dict[str, Any]:
        """``retry=`` bounded by retry_deadline (empty: the driver's defaults)."""
        deadline = self._settings_for(client).retry_deadline
        if deadline is None:
            return {}
        self.driver()
        retries = importlib.import_module("google.cloud.bigquery.retry")
        return {"retry": retries.DEFAULT_RETRY.with_deadline(deadline)}

    def _job_retry(self, client: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """kwargs for ``client.query()`` and ``job.result()`` bounded by retry_deadline.

        ``query()`` wraps jobs.insert in its own 10-minute retry unless ``job_retry`` is
        None there; the job is still re-run on job failures through ``result()``.
        """
        retry = self._retry(client)
        if not retry:
            return {}, {}
        retries = importlib.import_module("google.cloud.bigquery.retry")
        deadline = self._settings_for(client).retry_deadline
        job_retry = retries.DEFAULT_JOB_RETRY.with_deadline(deadline)
        return {**retry, "job_retry": None}, {**retry, "job_retry": job_retry}

    # -- queries ----------------------------------------------------------------
    def query_parameters(self, params: Params) -> list[Any]:
        """``{"region": "EU"}`` → BigQuery query parameters for ``@region``."""
        if not params:
            return []
        if not isinstance(params, Mapping):
            raise QueryError(
                "BigQuery parameters must be a mapping of names to values.",
                "pass a dict such as {'region': 'EU'} and write @region in the SQL",
            )
        bigquery = self.driver()
        return [query_parameter(bigquery, str(name), value) for name, value in params.items()]

    def job_config(self, client: Any, params: Params, **kwargs: Any) -> Any:
        """The query job's config: bound parameters, the labels and the byte limit."""
        settings = self._settings_for(client)
        config = self.driver().QueryJobConfig(
            query_parameters=self.query_parameters(params), **kwargs
        )
        if settings.job_labels:
            config.labels = dict(settings.job_labels)
        if settings.maximum_bytes_billed is not None:
            config.maximum_bytes_billed = settings.maximum_bytes_billed
        return config

    def dry_run(self, client: Any, sql: str, params: Params = None) -> int:
        """The bytes the query would process (a dry run: nothing runs, nothing is billed)."""
        config = self.job_config(client, params, dry_run=True, use_query_cache=False)
        job = client.query(sql, job_config=config, **self._job_retry(client)[0])
        return int(job.total_bytes_processed or 0)

    def _run(
        self,
        client: Any,
        sql: str,
        params: Params,
        max_rows: int | None,
        progress: Progress | None,
    ) -> Any:
        """Run the job and wait for it: the finished RowIterator."""
        job_config = self.job_config(client, params)
        query_retry, result_retry = self._job_retry(client)
        job = client.query(sql, job_config=job_config, job_id_prefix="connauth_", **query_retry)
        note_query_id(progress, job.job_id)
        try:
            if progress is not None:
                progress(f"running job {job.job_id}")
            rows = job.result(**result_retry)
        except KeyboardInterrupt:
            _cancel(job)
            raise
        total = rows.total_rows
        if max_rows is not None and total is not None and total > max_rows:
            raise TooManyRows(
                f"The query returned {total} rows, more than the limit of {max_rows}.",
                "add a LIMIT or a narrower WHERE clause, aggregate in SQL, or raise the limit "
                "with --max-rows",
            )
        if progress is not None:
            progress(f"downloading {total if total is not None else 0} rows")
        return rows

    def query_arrow(
        self,
        conn: Any,
        sql: str,
        params: Params = None,
        *,
        max_rows: int | None = None,
        progress: Progress | None = None,
    ) -> pa.Table:
        rows = self._run(conn, sql, params, max_rows, progress)
        return self._download(rows, self._reader(conn))

    def query_pandas(
        self,
        conn: Any,
        sql: str,
        params: Params = None,
        *,
        max_rows: int | None = None,
        progress: Progress | None = None,
    ) -> pd.DataFrame:
        """Through the Storage Read API, each Arrow record batch converted as it arrives
        into columns of ``total_rows`` rows (:mod:`.streaming`), so the whole result never
        exists as Arrow and pandas at once; REST pages, small and empty results whole."""
        rows = self._run(conn, sql, params, max_rows, progress)
        reader = self._reader(conn)
        if reader is None or not rows.total_rows or rows.total_rows <= SMALL_ROWS:
            return self.to_pandas(self._download(rows, reader))
        return batches_to_pandas(
            rows.to_arrow_iterable(bqstorage_client=reader),
            rows=int(rows.total_rows),
            types_mapper=types_mapper(),
            adjust=NumericScales(),
            empty=lambda: self.to_pandas(self._download(rows, reader)),
        )

    @staticmethod
    def _download(rows: Any, reader: Any) -> pa.Table:
        """The whole result as Arrow: REST pages (no reader) or the Storage Read API."""
        table: pa.Table = (
            rows.to_arrow(create_bqstorage_client=False)
            if reader is None
            else rows.to_arrow(bqstorage_client=reader)
        )
        return table

    def _reader(self, conn: Any) -> Any:
        """The Storage Read API client of this BigQuery client (one gRPC channel per
        client), or None when the Storage API is off or not installed (REST pages)."""
        settings = self._settings_for(conn)
        if not (settings.use_storage_api and storage_installed()):
            return None
        reader = self._read_clients.get(conn)
        if reader is None:
            endpoint = settings.storage_api_endpoint
            reader = self._read_clients[conn] = read_client(conn, endpoint and str(endpoint))
        return reader

    def to_pandas(self, table: pa.Table) -> pd.DataFrame:
        return arrow_to_pandas(table)

    def whoami(self, conn: Any) -> dict[str, Any]:
        rows = self._run(conn, "SELECT SESSION_USER() AS user", None, None, None)
        user = next(iter(rows))["user"]
        return {"user": user, "role": None}

    # -- metadata -------------------------------------------------------------------
    def list_catalogs(self, conn: Any) -> list[str]:
        """The connection's project first, then other projects the user can see."""
        projects = [str(conn.project)]
        try:
            others = [p.project_id for p in conn.list_projects(max_results=1000, retry=None)]
        except Exception as exc:
            if isinstance(exc, ConnAuthError) or self.is_auth_error(exc):
                raise
            # projects.list is optional (emulators lack it); the project is enough.
            log.debug("BigQuery projects.list failed: %s", scrub(str(exc)))
            return projects
        return projects + sorted(p for p in set(others) if p not in projects)

    def list_schemas(self, conn: Any, catalog: str) -> list[str]:
        datasets = conn.list_datasets(project=catalog, **self._retry(conn))
        return sorted(str(d.dataset_id) for d in datasets)

    def list_tables(self, conn: Any, catalog: str, schema: str) -> list[dict[str, Any]]:
        tables = conn.list_tables(f"{catalog}.{schema}", **self._retry(conn))
        out = []
        for t in tables:
            kind = str(t.table_type or "TABLE")
            out.append(
                {
                    "name": str(t.table_id),
                    "type": "VIEW" if kind in ("VIEW", "MATERIALIZED_VIEW") else "TABLE",
                    "kind": kind,
                }
            )
        return sorted(out, key=lambda t: t["name"])

    def list_columns(
        self, conn: Any, catalog: str, schema: str, table: str
    ) -> list[dict[str, Any]]:
        tbl = conn.get_table(f"{catalog}.{schema}.{table}", **self._retry(conn))
        return [
            {
                "name": str(f.name),
                "type": _field_type(f),
                "nullable": f.mode != "REQUIRED",
            }
            for f in tbl.schema
        ]

    # -- errors -------------------------------------------------------------------
    def is_auth_error(self, exc: BaseException) -> bool:
        if isinstance(exc, ConsentRequired):
            return True
        for e in exception_chain(exc):
            if is_auth_failure(e):
                return True
        return False

    def translate_error(self, exc: BaseException, info: ConnectionInfo) -> ConnAuthError | None:
        if isinstance(exc, ConnAuthError):
            return exc
        if self.is_auth_error(exc):
            return token_rejected(info.name)
        try:
            exceptions = importlib.import_module("google.api_core.exceptions")
        except ImportError:
            exceptions = None
        chain = exception_chain(exc)
        api_error = None
        if exceptions is not None:
            api_error = next(
                (e for e in chain if isinstance(e, exceptions.GoogleAPICallError)), None
            )
        if api_error is not None and exceptions is not None:
            translated = translate_api_error(api_error, exceptions, info)
            if translated is not None:
                return translated
        if any(is_network_failure(e) for e in chain) or (
            exceptions is not None and isinstance(exc, exceptions.RetryError)
        ):
            endpoint = endpoint_of(info)
            return ConnAuthError(
                f"Cannot reach BigQuery at {endpoint}: {network_reason(chain)}.",
                "check the endpoint (driver_options client_options.api_endpoint), the network "
                "and any proxy settings, then run the query again",
                code="warehouse_unreachable",
            )
        return None


def _field_type(field: Any) -> str:
    type_ = str(field.field_type)
    if type_ == "RECORD":
        type_ = "STRUCT"
    if type_ in ("STRUCT",) and field.fields:
        inner = ", ".join(f"{f.name} {_field_type(f)}" for f in field.fields)
        type_ = f"STRUCT<{inner}>"
    if field.mode == "REPEATED":
        return f"ARRAY<{type_}>"
    return type_


def _cancel(job: Any) -> None:
    """Best effort: stop the job at BigQuery (the user pressed interrupt)."""
    try:
        job.cancel(retry=None, timeout=10)
    except Exception as exc:
        log.warning("Could not cancel BigQuery job %s: %s", job.job_id, scrub(str(exc)))


def _flag(value: Any) -> bool:
    """A boolean option that may come from JSON or an environment string."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


CONNECTOR = BigQueryConnector()
