"""BigQuery through the official ``google-cloud-bigquery`` client, as the notebook user.

Connection parameters (``params``): ``project`` (required; jobs run and are billed
there), ``location`` (optional, e.g. ``EU``), ``dataset`` (optional default dataset
for unqualified table names).

``driver_options`` go to ``bigquery.Client`` (``{ACCESS_TOKEN}`` is substituted), e.g.
``client_options={"api_endpoint": "http://127.0.0.1:9050"}``, except for our own:

- ``use_storage_api`` (bool, default True): download large query results through the
  BigQuery Storage Read API (gRPC, Arrow). Local emulators do not serve it for query
  results: set it to False there.
- ``retry_deadline`` (seconds, default: the driver's 600): how long the driver keeps
  retrying transient failures (connection refused, 5xx, rate limits) before giving up.

Credentials carry the user's access token only. The broker owns refresh, so when
BigQuery rejects the token, ``refresh()`` raises :class:`ConsentRequired` (code
``token_rejected``) instead of google-auth's "credentials do not contain the necessary
fields" ``RefreshError``; :meth:`BigQueryConnector.is_auth_error` is True for it and the
caller reconnects with a fresh credential from the broker.

Results come through ``RowIterator.to_arrow()`` (REST pages parsed to Arrow, or the
Storage Read API); :meth:`BigQueryConnector.query_pandas` converts that table itself,
which avoids the deprecated ``to_dataframe()`` (google-cloud-bigquery 3.47 warns on
every call) and gives these dtypes: INT64 → ``Int64`` (nullable), BOOL → ``boolean``,
FLOAT64 → ``float64``, STRING → pandas' string dtype, TIMESTAMP →
``datetime64[us, UTC]``, DATETIME → ``datetime64[us]``, NUMERIC/BIGNUMERIC →
``decimal.Decimal`` objects, DATE/TIME → ``datetime.date``/``datetime.time`` objects.
"""

from __future__ import annotations

import datetime as dt
import decimal
import importlib
import logging
import numbers
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import (
    AccessDenied,
    ConfigError,
    ConnAuthError,
    ConsentRequired,
)
from .base import (
    ConnectionInfo,
    Connector,
    Credential,
    Params,
    Progress,
    QueryError,
    TooManyRows,
    with_token,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://bigquery.googleapis.com"

#: Our own driver_options, removed before the rest goes to ``bigquery.Client``.
OWN_OPTIONS = ("use_storage_api", "retry_deadline")

_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_GOOGLE_TOKEN_RE = re.compile(r"ya29\.[A-Za-z0-9_.-]+")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[^\s,;\"']+")
_REQUEST_PREFIX_RE = re.compile(r"^\d{3} (?:GET|POST|PUT|PATCH|DELETE) \S+: ")
_FOOTER_RE = re.compile(r"\n\nLocation: [^\n]*\nJob ID: [^\n]*\n?$")

# The NUMERIC type holds 38 digits, 9 of them after the point.
_NUMERIC_MAX_INTEGER_DIGITS = 29
_NUMERIC_MAX_SCALE = 9


def _scrub(text: str) -> str:
    """Remove anything shaped like a bearer token from a driver message."""
    text = _JWT_RE.sub("[token]", text)
    text = _GOOGLE_TOKEN_RE.sub("[token]", text)
    return _BEARER_RE.sub(r"\1[token]", text)


@dataclass(frozen=True)
class _Settings:
    use_storage_api: bool = True
    retry_deadline: float | None = None


class BigQueryConnector(Connector):
    name = "bigquery"
    extra = "bigquery"
    driver_module = "google.cloud.bigquery"

    def __init__(self) -> None:
        # Our options per client, so connect() can hand back a plain bigquery.Client.
        self._settings: weakref.WeakKeyDictionary[Any, _Settings] = weakref.WeakKeyDictionary()

    # -- connections --------------------------------------------------------------
    def connect(self, info: ConnectionInfo, cred: Credential) -> Any:
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
        )
        client = bigquery.Client(
            project=project,
            location=info.params.get("location"),
            credentials=_broker_credentials(cred.token, info.name),
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
        return [_parameter(bigquery, str(name), value) for name, value in params.items()]

    def _run(
        self,
        client: Any,
        sql: str,
        params: Params,
        max_rows: int | None,
        progress: Progress | None,
    ) -> Any:
        """Run the job and wait for it: the finished RowIterator."""
        bigquery = self.driver()
        job_config = bigquery.QueryJobConfig(query_parameters=self.query_parameters(params))
        query_retry, result_retry = self._job_retry(client)
        job = client.query(sql, job_config=job_config, job_id_prefix="connauth_", **query_retry)
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
        table: pa.Table = rows.to_arrow(
            create_bqstorage_client=self._settings_for(conn).use_storage_api
        )
        return table

    def query_pandas(
        self,
        conn: Any,
        sql: str,
        params: Params = None,
        *,
        max_rows: int | None = None,
        progress: Progress | None = None,
    ) -> pd.DataFrame:
        table = self.query_arrow(conn, sql, params, max_rows=max_rows, progress=progress)
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
            log.debug("BigQuery projects.list failed: %s", _scrub(str(exc)))
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
        for e in _chain(exc):
            if _is_auth_failure(e):
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
        chain = _chain(exc)
        api_error = None
        if exceptions is not None:
            api_error = next(
                (e for e in chain if isinstance(e, exceptions.GoogleAPICallError)), None
            )
        if api_error is not None and exceptions is not None:
            translated = _translate_api_error(api_error, exceptions, info)
            if translated is not None:
                return translated
        if any(_is_network_failure(e) for e in chain) or (
            exceptions is not None and isinstance(exc, exceptions.RetryError)
        ):
            endpoint = _endpoint(info)
            return ConnAuthError(
                f"Cannot reach BigQuery at {endpoint}: {_network_reason(chain)}.",
                "check the endpoint (driver_options client_options.api_endpoint), the network "
                "and any proxy settings, then run the query again",
                code="warehouse_unreachable",
            )
        return None


def token_rejected(name: str) -> ConsentRequired:
    return ConsentRequired(
        f"BigQuery rejected the access token for connection {name!r} "
        "(it expired, was revoked, or is not valid for BigQuery).",
        f"the access token was rejected: re-authorize through the broker "
        f"(%sql_connector authorize {name})",
        code="token_rejected",
    )


# -- credentials ---------------------------------------------------------------------


def _broker_credentials(token: str, name: str) -> Any:
    """google-auth credentials holding only the user's token; refresh() is the broker's job."""
    from google.oauth2.credentials import Credentials

    class BrokerCredentials(Credentials):
        """Refreshing needs the broker (it owns the refresh token): raise, clearly."""

        def refresh(self, request: Any) -> None:
            raise token_rejected(name)

    return BrokerCredentials(token)  # type: ignore[no-untyped-call]


# -- parameters ---------------------------------------------------------------------


def _scalar_type(name: str, value: Any) -> str:
    """BigQuery's type for a Python value (bool before int: bool is an int)."""
    if value is None:
        return "STRING"
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, numbers.Integral):
        return "INT64"
    if isinstance(value, decimal.Decimal):
        _sign, digits, exponent = value.as_tuple()
        if isinstance(exponent, int):
            scale = max(0, -exponent)
            integer_digits = max(0, len(digits) + exponent)
            if scale > _NUMERIC_MAX_SCALE or integer_digits > _NUMERIC_MAX_INTEGER_DIGITS:
                return "BIGNUMERIC"
        return "NUMERIC"
    if isinstance(value, numbers.Real):
        return "FLOAT64"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP" if value.tzinfo is not None else "DATETIME"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, dt.time):
        return "TIME"
    if isinstance(value, bytes | bytearray | memoryview):
        return "BYTES"
    raise QueryError(
        f"Parameter @{name}: cannot bind a value of type {type(value).__name__}.",
        "pass str, int, float, bool, Decimal, date, datetime, time, bytes, None, a list of "
        "those, a dict (STRUCT), or a google.cloud.bigquery query parameter",
    )


def _plain(value: Any) -> Any:
    """numpy/pandas scalars → Python values; bytes-likes → bytes."""
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if hasattr(value, "dtype") and hasattr(value, "item") and not isinstance(value, dt.datetime):
        return value.item()
    return value


def _array_type(name: str, values: Sequence[Any]) -> str:
    types = {_scalar_type(name, v) for v in values if v is not None}
    if not types:
        return "STRING"
    if types == {"INT64", "FLOAT64"}:
        return "FLOAT64"
    if types <= {"INT64", "NUMERIC", "BIGNUMERIC"} and len(types) > 1:
        return "BIGNUMERIC" if "BIGNUMERIC" in types else "NUMERIC"
    if len(types) > 1:
        raise QueryError(
            f"Parameter @{name}: the list mixes types ({', '.join(sorted(types))}).",
            "pass a list whose values all have one type",
        )
    return types.pop()


def _parameter(bigquery: Any, name: str, value: Any) -> Any:
    param_types = (
        bigquery.ScalarQueryParameter,
        bigquery.ArrayQueryParameter,
        bigquery.StructQueryParameter,
    )
    if isinstance(value, param_types):
        if value.name not in (None, name):
            raise QueryError(
                f"Parameter @{name}: the query parameter object is named @{value.name}.",
                "give the object the same name as its key",
            )
        value.name = name
        return value
    if isinstance(value, Mapping):
        fields = [_parameter(bigquery, str(k), v) for k, v in value.items()]
        return bigquery.StructQueryParameter(name, *fields)
    if getattr(value, "ndim", 0) == 1 and hasattr(value, "tolist"):
        value = value.tolist()  # a numpy array or pandas Series
    if isinstance(value, list | tuple):
        items = [_plain(v) for v in value]
        if any(isinstance(v, list | tuple | Mapping) for v in items):
            raise QueryError(
                f"Parameter @{name}: lists of lists or dicts are not supported.",
                "pass a bigquery.ArrayQueryParameter built by hand",
            )
        return bigquery.ArrayQueryParameter(name, _array_type(name, items), items)
    value = _plain(value)
    type_ = _scalar_type(name, value)
    if type_ == "INT64":
        value = int(value)
    elif type_ == "FLOAT64":
        value = float(value)
    return bigquery.ScalarQueryParameter(name, type_, value)


# -- results ------------------------------------------------------------------------


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow → pandas with BigQuery's nullable dtypes (INT64 → Int64, BOOL → boolean)."""
    import pandas as pd
    import pyarrow as pa

    nullable = {
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
    }
    return table.to_pandas(types_mapper=nullable.get)


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
        log.warning("Could not cancel BigQuery job %s: %s", job.job_id, _scrub(str(exc)))


def _flag(value: Any) -> bool:
    """A boolean option that may come from JSON or an environment string."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


# -- error helpers ----------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what it wraps (RetryError.cause, __cause__, __context__)."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is seen for seen in out) or len(out) > 10:
            continue
        out.append(e)
        cause = getattr(e, "cause", None)
        todo.extend(
            [
                cause if isinstance(cause, BaseException) else None,
                e.__cause__,
                e.__context__,
            ]
        )
    return out


def _is_auth_failure(exc: BaseException) -> bool:
    module = type(exc).__module__
    name = type(exc).__name__
    if module.startswith("google.auth") and name == "RefreshError":
        return True
    if module.startswith("google.api_core") and name in ("Unauthorized", "Unauthenticated"):
        return True
    return getattr(exc, "code", None) == 401 and module.startswith("google.")


def _is_network_failure(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    module = type(exc).__module__
    name = type(exc).__name__
    if module.startswith(("requests", "urllib3")) and (
        "Connection" in name or "Timeout" in name or name in ("MaxRetryError", "ProxyError")
    ):
        return True
    return module.startswith("google.auth") and name == "TransportError"


def _network_reason(chain: list[BaseException]) -> str:
    text = " ".join(str(e) for e in chain)
    if "Connection refused" in text or any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, TimeoutError) or "Timeout" in type(e).__name__ for e in chain):
        return "the connection timed out"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "the host name does not resolve"
    if "timed out" in text.lower():
        return "the connection timed out"
    return "the connection failed"


def _endpoint(info: ConnectionInfo) -> str:
    options = info.driver_options.get("client_options")
    endpoint = None
    if isinstance(options, Mapping):
        endpoint = options.get("api_endpoint")
    else:
        endpoint = getattr(options, "api_endpoint", None)
    return str(endpoint or DEFAULT_ENDPOINT)


def _api_message(exc: Any) -> str:
    """BigQuery's own message, without the request line and the job footer."""
    message = ""
    errors = getattr(exc, "errors", None) or []
    if errors and isinstance(errors[0], Mapping):
        message = str(errors[0].get("message") or "")
    if not message:
        message = str(getattr(exc, "message", "") or str(exc))
        message = _FOOTER_RE.sub("", message)
        message = _REQUEST_PREFIX_RE.sub("", message)
    return _scrub(message.strip())


def _reasons(exc: Any) -> set[str]:
    errors = getattr(exc, "errors", None) or []
    return {str(e.get("reason")) for e in errors if isinstance(e, Mapping) and e.get("reason")}


def _job_suffix(exc: Any) -> str:
    job = getattr(exc, "query_job", None)
    job_id = getattr(job, "job_id", None)
    return f" (job {job_id})" if job_id else ""


def _translate_api_error(exc: Any, exceptions: Any, info: ConnectionInfo) -> ConnAuthError | None:
    message = _api_message(exc)
    reasons = _reasons(exc)
    project = info.params.get("project") or "the project"
    if _is_storage_api_error(exc, message):
        return _storage_api_error(exc, exceptions, message, project)
    if isinstance(exc, exceptions.Forbidden | exceptions.PermissionDenied):
        if reasons & {"quotaExceeded", "rateLimitExceeded"}:
            return ConnAuthError(
                f"BigQuery quota exceeded: {message}",
                "wait and run the query again, or ask a BigQuery admin to raise the quota",
                code="quota_exceeded",
            )
        if "billingNotEnabled" in reasons:
            return AccessDenied(
                f"BigQuery refused the job: {message}",
                f"enable billing on project {project}, or set the connection's project to one "
                "with billing",
            )
        if "responseTooLarge" in reasons:
            return QueryError(
                f"BigQuery could not return the result: {message}",
                "add a LIMIT or aggregate in SQL",
                code="response_too_large",
            )
        if "jobs.create" in message:
            fix = (
                f"ask a BigQuery admin to grant the user roles/bigquery.jobUser on project "
                f"{project} (and roles/bigquery.dataViewer on the datasets to query)"
            )
        else:
            fix = (
                "ask a BigQuery admin to grant the user roles/bigquery.dataViewer on the dataset "
                f"(and roles/bigquery.jobUser on project {project})"
            )
        return AccessDenied(
            f"BigQuery permission denied{_job_suffix(exc)}: {message}",
            fix,
            code="permission_denied",
        )
    if isinstance(exc, exceptions.NotFound):
        return QueryError(
            f"BigQuery: {message}{_job_suffix(exc)}",
            "check the project, dataset and table names (`project.dataset.table`) and the "
            "connection's location: datasets in another location are not found from it",
            code="not_found",
        )
    if isinstance(exc, exceptions.BadRequest | exceptions.InvalidArgument):
        sql_fix = None
        if re.search(r"(?i)query parameter|not provided for the following parameters", message):
            sql_fix = "pass every @name the SQL uses in --params (a dict), and only those"
        return QueryError(f"BigQuery: {message}{_job_suffix(exc)}", sql_fix)
    if isinstance(exc, exceptions.ServerError | exceptions.DeadlineExceeded):
        return ConnAuthError(
            f"BigQuery failed: {message}",
            "try again in a minute; if it persists, check https://status.cloud.google.com",
            code="warehouse_error",
        )
    return None


def _is_storage_api_error(exc: Any, message: str) -> bool:
    text = f"{message} {exc}".lower()
    return "bigquerystorage" in text or "readsession" in text or "read session" in text


def _storage_api_error(
    exc: Any, exceptions: Any, message: str, project: str
) -> ConnAuthError | None:
    """The Storage Read API (gRPC) failed while downloading a result."""
    off = "or set use_storage_api: False in the connection's driver_options (slower REST download)"
    if isinstance(exc, exceptions.Forbidden | exceptions.PermissionDenied):
        return AccessDenied(
            f"BigQuery Storage Read API permission denied: {message}",
            f"ask a BigQuery admin to grant the user roles/bigquery.readSessionUser on project "
            f"{project}, {off}",
            code="permission_denied",
        )
    if isinstance(exc, exceptions.ServiceUnavailable | exceptions.DeadlineExceeded):
        return ConnAuthError(
            f"Cannot reach the BigQuery Storage Read API: {message}",
            f"check network access to bigquerystorage.googleapis.com:443 (gRPC), {off}",
            code="warehouse_unreachable",
        )
    return None


CONNECTOR = BigQueryConnector()
