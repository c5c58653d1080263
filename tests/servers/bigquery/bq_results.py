"""Query results through the Storage Read API, as BigQuery serves them (bqemulator venv only).

On BigQuery every query job writes its result to a destination table; for a plain query
that is an anonymous table in a hidden dataset, readable by the user who ran the job for
about 24 hours. google-cloud-bigquery's ``RowIterator.to_arrow()`` / ``to_dataframe()``
(with ``create_bqstorage_client=True`` or a ``bqstorage_client``) reads a large result
through ``BigQueryReadClient.create_read_session`` on that table, then ``ReadRows`` on
each stream (Arrow record batches), instead of paging ``getQueryResults`` as JSON. See
cloud.google.com/bigquery/docs/reference/storage ("Use the BigQuery Storage Read API to
read table data"), .../docs/cached-results ("anonymous tables") and
google-cloud-bigquery's ``table.py`` (``_should_use_bqstorage``,
``_download_table_bqstorage``).

bqemulator names the destination ``_bqemu_anonymous.anon<job id without hyphens>`` and
keeps the rows in ``JOB_RESULTS``, but its Storage Read handler reads only catalog tables
(``NotFound: Table read failed``). :func:`install` wraps the handler so a read session on
an anonymous result table serves the job's rows, with BigQuery's Arrow types
(NUMERIC → decimal128(38, 9), TIMESTAMP → timestamp[us, UTC], INT64 → int64, ...), to
the job's owner only (others get ``PERMISSION_DENIED``, as on BigQuery). ``STATS``
counts the sessions and streamed rows so tests can tell the client took this path.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import pyarrow as pa

ANON_DATASET = "_bqemu_anonymous"
_TABLE = re.compile(r"^projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)$")

STATS: dict[str, int] = {"storage_result_sessions": 0, "storage_read_rows_calls": 0}
_lock = threading.Lock()

#: job id → owner email (lower-case); the REST wrapper's own map, set by server.py.
JOB_OWNER: dict[str, str] = {}

_BQ_ARROW = {
    "INTEGER": pa.int64(),
    "INT64": pa.int64(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATETIME": pa.timestamp("us"),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
}


def _bump(key: str, n: int = 1) -> None:
    with _lock:
        STATS[key] = STATS.get(key, 0) + n


def anonymous_job(table_path: str) -> str | None:
    """The job whose anonymous result table ``table_path`` names, if any."""
    m = _TABLE.match(table_path)
    if m is None or m.group(2) != ANON_DATASET:
        return None
    from bqemulator.jobs.executor import JOB_RESULTS

    flat = m.group(3).removeprefix("anon")
    for job_id in list(JOB_RESULTS):
        if job_id.replace("-", "") == flat:
            return job_id
    return None


def owns_result(email: str, table_path: str) -> bool:
    job_id = anonymous_job(table_path)
    return job_id is not None and JOB_OWNER.get(job_id) == email.lower()


def _with_bigquery_types(table: pa.Table, schema_fields: list[dict[str, Any]]) -> pa.Table:
    by_name = {f.get("name"): str(f.get("type", "")).upper() for f in schema_fields}
    columns = []
    fields = []
    for fld, col in zip(table.schema, table.columns, strict=True):
        target = _BQ_ARROW.get(by_name.get(fld.name, ""))
        if target is not None and col.type != target:
            col = col.cast(target)
        columns.append(col)
        fields.append(pa.field(fld.name, col.type, nullable=True))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def install() -> None:
    """Wrap bqemulator's Storage Read handler (CreateReadSession, ReadRows)."""
    import grpc
    from bqemulator.grpc_api import read_servicer as rs
    from bqemulator.jobs.executor import JOB_RESULTS, JOB_SCHEMAS
    from bqemulator.streaming.read_session import create_read_session

    original_create = rs.BigQueryReadHandler._handle_create_read_session
    original_read = rs.BigQueryReadHandler._handle_read_rows

    def create(self: Any, request_bytes: bytes, context: Any) -> bytes:
        from google.cloud.bigquery_storage_v1 import types

        request = types.CreateReadSessionRequest.deserialize(request_bytes)
        read_session = request.read_session
        job_id = anonymous_job(read_session.table)
        if job_id is None:
            return original_create(self, request_bytes, context)  # type: ignore[no-any-return]
        table = _with_bigquery_types(JOB_RESULTS[job_id], list(JOB_SCHEMAS.get(job_id) or []))
        selected = rs._selected_fields(read_session)
        formats = rs._resolve_data_format(read_session, context)
        if formats is None:
            return b""
        if read_session.read_options and read_session.read_options.row_restriction:
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details("row_restriction is not supported on query results here")
            return b""
        session_format, wire_format = formats
        state = create_read_session(
            project_id=request.parent.split("/")[1],
            table_ref=read_session.table,
            arrow_table=table,
            max_streams=request.max_stream_count or 1,
            selected_fields=selected,
            data_format=session_format,
            required_field_names=frozenset(),
        )
        response = rs._build_read_session_response(
            state=state,
            read_session=read_session,
            session_format=session_format,
            wire_format=wire_format,
            arrow_table=table,
        )
        _bump("storage_result_sessions")
        return types.ReadSession.serialize(response)  # type: ignore[no-any-return]

    def read_rows(self: Any, request_bytes: bytes, context: Any) -> Any:
        _bump("storage_read_rows_calls")
        return original_read(self, request_bytes, context)

    rs.BigQueryReadHandler._handle_create_read_session = create
    rs.BigQueryReadHandler._handle_read_rows = read_rows
