"""TCLIService handler of the local Databricks SQL warehouse (test only).

Built on the Thrift types shipped inside databricks-sql-connector. Results go out as
Arrow IPC batches (``ARROW_BASED_SET``), inline: the first page in ``directResults``,
the rest through ``FetchResults`` with ``hasMoreRows``. Large results for clients that
allow it go out as CloudFetch links instead (``URL_BASED_SET``, dbx_cloudfetch.py).
"""

from __future__ import annotations

import threading
from typing import Any

import dbx_engine as E
import pyarrow as pa
from databricks.sql.thrift_api.TCLIService import ttypes as T
from dbx_cloudfetch import CloudFetchStore

# The identity of the request being processed (set by the HTTP layer per request).
current = threading.local()

_OK = T.TStatus(statusCode=T.TStatusCode.SUCCESS_STATUS)

_STATE = {
    E.PENDING: T.TOperationState.PENDING_STATE,
    E.RUNNING: T.TOperationState.RUNNING_STATE,
    E.FINISHED: T.TOperationState.FINISHED_STATE,
    E.CANCELED: T.TOperationState.CANCELED_STATE,
    E.CLOSED: T.TOperationState.CLOSED_STATE,
    E.ERROR: T.TOperationState.ERROR_STATE,
}
_OP_TYPE = {
    "EXECUTE_STATEMENT": T.TOperationType.EXECUTE_STATEMENT,
    "CATALOGS": T.TOperationType.GET_CATALOGS,
    "SCHEMAS": T.TOperationType.GET_SCHEMAS,
    "TABLES": T.TOperationType.GET_TABLES,
    "COLUMNS": T.TOperationType.GET_COLUMNS,
}


def _error(message: str, sql_state: str = "HY000", invalid_handle: bool = False) -> T.TStatus:
    code = T.TStatusCode.INVALID_HANDLE_STATUS if invalid_handle else T.TStatusCode.ERROR_STATUS
    return T.TStatus(
        statusCode=code, errorMessage=message, displayMessage=message, sqlState=sql_state
    )


def _ttype(t: pa.DataType) -> T.TTypeDesc:
    ids = T.TTypeId
    quals = None
    if pa.types.is_boolean(t):
        tid = ids.BOOLEAN_TYPE
    elif pa.types.is_int8(t):
        tid = ids.TINYINT_TYPE
    elif pa.types.is_int16(t):
        tid = ids.SMALLINT_TYPE
    elif pa.types.is_int32(t):
        tid = ids.INT_TYPE
    elif pa.types.is_int64(t):
        tid = ids.BIGINT_TYPE
    elif pa.types.is_float32(t):
        tid = ids.FLOAT_TYPE
    elif pa.types.is_float64(t):
        tid = ids.DOUBLE_TYPE
    elif pa.types.is_string(t):
        tid = ids.STRING_TYPE
    elif pa.types.is_binary(t):
        tid = ids.BINARY_TYPE
    elif pa.types.is_timestamp(t):
        tid = ids.TIMESTAMP_TYPE
    elif pa.types.is_date(t):
        tid = ids.DATE_TYPE
    elif pa.types.is_decimal(t):
        tid = ids.DECIMAL_TYPE
        quals = T.TTypeQualifiers(
            qualifiers={
                "precision": T.TTypeQualifierValue(i32Value=t.precision),
                "scale": T.TTypeQualifierValue(i32Value=t.scale),
            }
        )
    elif pa.types.is_list(t):
        tid = ids.ARRAY_TYPE
    elif pa.types.is_map(t):
        tid = ids.MAP_TYPE
    elif pa.types.is_struct(t):
        tid = ids.STRUCT_TYPE
    elif pa.types.is_null(t):
        tid = ids.NULL_TYPE
    else:
        tid = ids.STRING_TYPE
    entry = T.TTypeEntry(primitiveEntry=T.TPrimitiveTypeEntry(type=tid, typeQualifiers=quals))
    return T.TTypeDesc(types=[entry])


def _metadata_resp(o: E.Operation, urls: bool = False) -> T.TGetResultSetMetadataResp:
    schema = o.table.schema if o.table is not None else pa.schema([])
    cols = [
        T.TColumnDesc(columnName=f.name, typeDesc=_ttype(f.type), position=i + 1)
        for i, f in enumerate(schema)
    ]
    return T.TGetResultSetMetadataResp(
        status=_OK,
        schema=T.TTableSchema(columns=cols),
        resultFormat=T.TSparkRowSetType.URL_BASED_SET
        if urls
        else T.TSparkRowSetType.ARROW_BASED_SET,
        lz4Compressed=o.lz4,
        arrowSchema=schema.serialize().to_pybytes(),
        isStagingOperation=False,
    )


class Handler:
    """TCLIService.Iface for the driver's calls; config keys: http_path is checked by
    the HTTP layer; direct_results_wait_s, status_poll_wait_s, max_page_rows, lz4."""

    def __init__(self, engine: E.Engine, cfg: dict[str, Any]) -> None:
        self.engine = engine
        self.direct_wait = float(cfg.get("direct_results_wait_s", 1.0))
        self.poll_wait = float(cfg.get("status_poll_wait_s", 0.5))
        self.max_page_rows = int(cfg.get("max_page_rows", 0) or 0)
        self.lz4 = bool(cfg.get("lz4", False))
        self.cloudfetch = CloudFetchStore(cfg, engine.stats)

    @property
    def _email(self) -> str:
        return current.identity.email

    def _op_handle(self, o: E.Operation) -> T.TOperationHandle:
        return T.TOperationHandle(
            operationId=T.THandleIdentifier(guid=o.guid, secret=o.session.secret),
            operationType=_OP_TYPE.get(o.kind, T.TOperationType.UNKNOWN),
            hasResultSet=True,
        )

    # ---------------------------------------------------------------- paging

    def _urls(self, o: E.Operation) -> bool:
        return self.cloudfetch.use_links(o.table, getattr(o, "can_download", False))

    def _page(self, o: E.Operation, max_rows: int | None, max_bytes: int | None) -> T.TRowSet:
        table = o.table
        start = o.offset
        if table is None or start >= table.num_rows:
            return T.TRowSet(startRowOffset=start, rows=[], arrowBatches=[])
        if self._urls(o):  # CloudFetch: links to files, whatever maxRows says
            base = getattr(current, "base_url", "http://127.0.0.1")
            links, o.offset = self.cloudfetch.links(table, start, o.lz4, base)
            return T.TRowSet(startRowOffset=start, rows=[], resultLinks=links)
        n = table.num_rows - start
        if max_rows and max_rows > 0:
            n = min(n, max_rows)
        if self.max_page_rows:
            n = min(n, self.max_page_rows)
        if max_bytes and max_bytes > 0 and table.num_rows:
            per_row = max(1, table.nbytes // table.num_rows)
            n = max(1, min(n, max_bytes // per_row))
        chunk = table.slice(start, n)
        batches = []
        for rb in chunk.to_batches():
            if rb.num_rows == 0:
                continue
            data = rb.serialize().to_pybytes()
            if o.lz4:
                import lz4.frame

                data = lz4.frame.compress(data)
            batches.append(T.TSparkArrowBatch(batch=data, rowCount=rb.num_rows))
        o.offset = start + n
        return T.TRowSet(startRowOffset=start, rows=[], arrowBatches=batches)

    def _status_resp(self, o: E.Operation) -> T.TGetOperationStatusResp:
        state = _STATE[o.state]
        resp = T.TGetOperationStatusResp(status=_OK, operationState=state, hasResultSet=True)
        if o.state == E.ERROR:
            resp.errorMessage = o.error
            resp.displayMessage = o.error
            resp.sqlState = o.sql_state
        if o.state == E.FINISHED:
            resp.numModifiedRows = o.num_modified_rows
        return resp

    def _direct(self, o: E.Operation, req_direct: Any) -> T.TSparkDirectResults | None:
        """directResults for a finished (or failed) operation; None if still running."""
        if req_direct is None:
            return None
        if not o.done.is_set():
            return T.TSparkDirectResults(operationStatus=self._status_resp(o))
        status = self._status_resp(o)
        if o.state != E.FINISHED:
            return T.TSparkDirectResults(operationStatus=status)
        meta = _metadata_resp(o, self._urls(o))
        rows = self._page(o, req_direct.maxRows, req_direct.maxBytes)
        more = o.has_more_rows
        self.engine.stats.bump("fetch_results")
        direct = T.TSparkDirectResults(
            operationStatus=status,
            resultSetMetadata=meta,
            resultSet=T.TFetchResultsResp(status=_OK, hasMoreRows=more, results=rows),
        )
        if not more:  # everything delivered: close server-side like Databricks does
            self.engine.close_operation(o)
            direct.closeOperation = T.TCloseOperationResp(status=_OK)
        return direct

    # ---------------------------------------------------------------- sessions

    def OpenSession(self, req: T.TOpenSessionReq) -> T.TOpenSessionResp:
        ns = req.initialNamespace
        try:
            s = self.engine.open_session(
                self._email, ns.catalogName if ns else None, ns.schemaName if ns else None
            )
        except E.EngineError as e:
            return T.TOpenSessionResp(
                status=_error(str(e), e.sql_state),
                serverProtocolVersion=T.TProtocolVersion.SPARK_CLI_SERVICE_PROTOCOL_V8,
            )
        self.engine.stats.session_tags[s.guid] = (req.configuration or {}).get("QUERY_TAGS")
        return T.TOpenSessionResp(
            status=_OK,
            serverProtocolVersion=T.TProtocolVersion.SPARK_CLI_SERVICE_PROTOCOL_V8,
            sessionHandle=T.TSessionHandle(
                sessionId=T.THandleIdentifier(guid=s.guid, secret=s.secret)
            ),
            configuration={},
            initialNamespace=T.TNamespace(catalogName=s.catalog, schemaName=s.schema),
            canUseMultipleCatalogs=True,
        )

    def CloseSession(self, req: T.TCloseSessionReq) -> T.TCloseSessionResp:
        try:
            s = self.engine.session(req.sessionHandle.sessionId.guid, self._email)
        except E.EngineError as e:
            return T.TCloseSessionResp(status=_error(str(e), invalid_handle=True))
        self.engine.close_session(s)
        return T.TCloseSessionResp(status=_OK)

    def GetInfo(self, req: T.TGetInfoReq) -> T.TGetInfoResp:
        values = {
            T.TGetInfoType.CLI_SERVER_NAME: "Databricks SQL (connauth local test warehouse)",
            T.TGetInfoType.CLI_DBMS_NAME: "Spark SQL",
            T.TGetInfoType.CLI_DBMS_VER: "3.5.0",
        }
        return T.TGetInfoResp(
            status=_OK, infoValue=T.TGetInfoValue(stringValue=values.get(req.infoType, ""))
        )

    # -------------------------------------------------------------- statements

    def ExecuteStatement(self, req: T.TExecuteStatementReq) -> T.TExecuteStatementResp:
        try:
            s = self.engine.session(req.sessionHandle.sessionId.guid, self._email)
        except E.EngineError as e:
            return T.TExecuteStatementResp(status=_error(str(e), invalid_handle=True))
        self.engine.stats.tag_statement(s.guid, req.confOverlay)
        o = self.engine.execute(s, req.statement, req.parameters)
        o.lz4 = self.lz4 and bool(req.canDecompressLZ4Result)
        o.can_download = bool(req.canDownloadResult)  # type: ignore[attr-defined]
        if req.getDirectResults is not None:
            o.done.wait(self.direct_wait)
        return T.TExecuteStatementResp(
            status=_OK,
            operationHandle=self._op_handle(o),
            directResults=self._direct(o, req.getDirectResults),
        )

    def _metadata_call(self, req: Any, resp_cls: type, kind: str, **kw: Any) -> Any:
        try:
            s = self.engine.session(req.sessionHandle.sessionId.guid, self._email)
        except E.EngineError as e:
            return resp_cls(status=_error(str(e), invalid_handle=True))
        o = self.engine.metadata(s, kind, **kw)
        return resp_cls(
            status=_OK,
            operationHandle=self._op_handle(o),
            directResults=self._direct(o, req.getDirectResults),
        )

    def GetCatalogs(self, req: T.TGetCatalogsReq) -> T.TGetCatalogsResp:
        return self._metadata_call(req, T.TGetCatalogsResp, "CATALOGS")

    def GetSchemas(self, req: T.TGetSchemasReq) -> T.TGetSchemasResp:
        return self._metadata_call(
            req, T.TGetSchemasResp, "SCHEMAS", catalog=req.catalogName, schema=req.schemaName
        )

    def GetTables(self, req: T.TGetTablesReq) -> T.TGetTablesResp:
        return self._metadata_call(
            req,
            T.TGetTablesResp,
            "TABLES",
            catalog=req.catalogName,
            schema=req.schemaName,
            table=req.tableName,
            types=req.tableTypes,
        )

    def GetColumns(self, req: T.TGetColumnsReq) -> T.TGetColumnsResp:
        return self._metadata_call(
            req,
            T.TGetColumnsResp,
            "COLUMNS",
            catalog=req.catalogName,
            schema=req.schemaName,
            table=req.tableName,
            column=req.columnName,
        )

    # -------------------------------------------------------------- operations

    def _op(self, handle: T.TOperationHandle) -> E.Operation:
        return self.engine.operation(handle.operationId.guid, self._email)

    def GetOperationStatus(self, req: T.TGetOperationStatusReq) -> T.TGetOperationStatusResp:
        try:
            o = self._op(req.operationHandle)
        except E.EngineError as e:
            return T.TGetOperationStatusResp(status=_error(str(e), invalid_handle=True))
        o.done.wait(self.poll_wait)  # long-poll: the driver polls without sleeping
        return self._status_resp(o)

    def GetResultSetMetadata(self, req: T.TGetResultSetMetadataReq) -> T.TGetResultSetMetadataResp:
        try:
            o = self._op(req.operationHandle)
        except E.EngineError as e:
            return T.TGetResultSetMetadataResp(status=_error(str(e), invalid_handle=True))
        if o.state == E.CANCELED:
            return T.TGetResultSetMetadataResp(
                status=_error("[OPERATION_CANCELED] The operation was canceled.", "HY008")
            )
        if o.state != E.FINISHED:
            return T.TGetResultSetMetadataResp(
                status=_error(o.error or f"Operation is in state {o.state}", o.sql_state or "HY000")
            )
        return _metadata_resp(o, self._urls(o))

    def FetchResults(self, req: T.TFetchResultsReq) -> T.TFetchResultsResp:
        try:
            o = self._op(req.operationHandle)
        except E.EngineError as e:
            return T.TFetchResultsResp(status=_error(str(e), invalid_handle=True))
        if req.fetchType == 1:  # logs
            return T.TFetchResultsResp(
                status=_OK, hasMoreRows=False, results=T.TRowSet(startRowOffset=0, rows=[])
            )
        if o.state != E.FINISHED:
            return T.TFetchResultsResp(
                status=_error(o.error or f"Operation is in state {o.state}", o.sql_state or "HY000")
            )
        if req.orientation == T.TFetchOrientation.FETCH_FIRST:
            o.offset = 0
        self.engine.stats.bump("fetch_results")
        rows = self._page(o, req.maxRows, req.maxBytes)
        return T.TFetchResultsResp(
            status=_OK,
            hasMoreRows=o.has_more_rows,
            results=rows,
            resultSetMetadata=_metadata_resp(o, self._urls(o))
            if req.includeResultSetMetadata
            else None,
        )

    def CancelOperation(self, req: T.TCancelOperationReq) -> T.TCancelOperationResp:
        try:
            o = self._op(req.operationHandle)
        except E.EngineError as e:
            return T.TCancelOperationResp(status=_error(str(e), invalid_handle=True))
        self.engine.cancel(o)
        return T.TCancelOperationResp(status=_OK)

    def CloseOperation(self, req: T.TCloseOperationReq) -> T.TCloseOperationResp:
        try:
            o = self._op(req.operationHandle)
        except E.EngineError as e:
            return T.TCloseOperationResp(status=_error(str(e), invalid_handle=True))
        self.engine.close_operation(o)
        return T.TCloseOperationResp(status=_OK)

    # ---------------------------------------------------------- not supported

    def _unsupported(self, resp_cls: type, what: str) -> Any:
        return resp_cls(
            status=_error(
                f"[NOT_SUPPORTED] {what} is not supported by the local test warehouse.", "0A000"
            )
        )

    def GetTypeInfo(self, req: Any) -> Any:
        return self._unsupported(T.TGetTypeInfoResp, "GetTypeInfo")

    def GetTableTypes(self, req: Any) -> Any:
        return self._unsupported(T.TGetTableTypesResp, "GetTableTypes")

    def GetFunctions(self, req: Any) -> Any:
        return self._unsupported(T.TGetFunctionsResp, "GetFunctions")

    def GetPrimaryKeys(self, req: Any) -> Any:
        return self._unsupported(T.TGetPrimaryKeysResp, "GetPrimaryKeys")

    def GetCrossReference(self, req: Any) -> Any:
        return self._unsupported(T.TGetCrossReferenceResp, "GetCrossReference")

    def GetDelegationToken(self, req: Any) -> Any:
        return self._unsupported(T.TGetDelegationTokenResp, "GetDelegationToken")

    def CancelDelegationToken(self, req: Any) -> Any:
        return self._unsupported(T.TCancelDelegationTokenResp, "CancelDelegationToken")

    def RenewDelegationToken(self, req: Any) -> Any:
        return self._unsupported(T.TRenewDelegationTokenResp, "RenewDelegationToken")
