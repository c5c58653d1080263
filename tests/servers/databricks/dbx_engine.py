"""Sessions and operations of the local Databricks SQL warehouse, executed in DuckDB.

Every session gets its own in-memory DuckDB instance holding only what its user may
see: ``main.demo.sales`` contains the session user's rows and nothing else, and
``current_user()`` is a macro returning the e-mail from the verified token. Nothing a
user runs can reach another user's rows, because they are not in that database. The
optional benchmark table ``main.bench.big`` is one shared Arrow table registered
read-only into every session.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import dbx_sql
import duckdb
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_SALES = [
    # region, amount, owner
    ("EMEA", "120.50", "alice@example.com"),
    ("AMER", "75.00", "alice@example.com"),
    ("APAC", "42.25", "alice@example.com"),
    ("EMEA", "300.00", "bob@example.com"),
    ("AMER", "18.75", "bob@example.com"),
    ("APAC", "999.99", "carol@example.com"),
]

PENDING, RUNNING, FINISHED, CANCELED, CLOSED, ERROR = (
    "PENDING",
    "RUNNING",
    "FINISHED",
    "CANCELED",
    "CLOSED",
    "ERROR",
)


class EngineError(Exception):
    def __init__(self, message: str, sql_state: str = "42000") -> None:
        super().__init__(message)
        self.sql_state = sql_state


# --------------------------------------------------------------------------- arrow


def _normalize_type(t: pa.DataType) -> pa.DataType | None:
    """The Arrow type we hand to the driver for *t* (None = keep)."""
    if pa.types.is_dictionary(t):
        return _normalize_type(t.value_type) or t.value_type
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_uint8(t):
        return pa.int16()
    if pa.types.is_uint16(t):
        return pa.int32()
    if pa.types.is_uint32(t):
        return pa.int64()
    if pa.types.is_uint64(t):
        return pa.decimal128(20, 0)
    if pa.types.is_timestamp(t) and t.unit != "us":
        return pa.timestamp("us", t.tz)
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_decimal256(t):
        return pa.decimal128(min(t.precision, 38), t.scale)
    if (
        pa.types.is_time(t)
        or pa.types.is_interval(t)
        or pa.types.is_duration(t)
        or pa.types.is_float16(t)
    ):
        return pa.string()
    if pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_type)
    if isinstance(t, pa.ExtensionType):
        return _normalize_type(t.storage_type) or t.storage_type
    return None


def normalize_table(table: pa.Table) -> pa.Table:
    cols, fields, changed = [], [], False
    for f, col in zip(table.schema, table.columns, strict=True):
        target = _normalize_type(f.type)
        if target is not None:
            changed = True
            if pa.types.is_dictionary(f.type):
                col = pc.cast(col, f.type.value_type)
            if target == pa.string() and not (
                pa.types.is_string(col.type)
                or pa.types.is_large_string(col.type)
                or pa.types.is_string_view(col.type)
            ):
                col = (
                    pa.chunked_array(
                        [
                            pa.array(
                                [None if v is None else str(v) for v in ch.to_pylist()], pa.string()
                            )
                            for ch in col.chunks
                        ],
                        pa.string(),
                    )
                    if col.num_chunks
                    else pa.chunked_array([], pa.string())
                )
            else:
                col = col.cast(target)
            f = pa.field(f.name, target, f.nullable)
        cols.append(col)
        fields.append(f)
    if not changed:
        return table
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


# --------------------------------------------------------------------------- model


@dataclass
class Operation:
    guid: bytes
    session: Session
    sql: str = ""
    kind: str = "EXECUTE_STATEMENT"
    state: str = PENDING
    error: str | None = None
    sql_state: str | None = None
    table: pa.Table | None = None
    offset: int = 0
    lz4: bool = False
    num_modified_rows: int | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def finish(
        self,
        state: str,
        table: pa.Table | None = None,
        error: str | None = None,
        sql_state: str | None = None,
    ) -> None:
        if self.state in (CANCELED, CLOSED):
            self.done.set()
            return
        self.state = state
        self.table = table
        self.error = error
        self.sql_state = sql_state
        self.done.set()

    @property
    def has_more_rows(self) -> bool:
        return self.table is not None and self.offset < self.table.num_rows


@dataclass
class Session:
    guid: bytes
    secret: bytes
    email: str
    con: duckdb.DuckDBPyConnection
    catalog: str = "main"
    schema: str = "default"
    lock: threading.RLock = field(default_factory=threading.RLock)
    running: Operation | None = None
    closed: bool = False


class Engine:
    """Config keys used: sales_rows, seed_big_rows, duckdb_threads."""

    def __init__(self, cfg: dict[str, Any], stats: Stats) -> None:
        self.cfg = cfg
        self.stats = stats
        self.threads = int(cfg.get("duckdb_threads", 2))
        rows = cfg.get("sales_rows")
        self.sales = [tuple(r) for r in rows] if rows is not None else DEFAULT_SALES
        self.sessions: dict[bytes, Session] = {}
        self.operations: dict[bytes, Operation] = {}
        self._lock = threading.Lock()
        self.big: pa.Table | None = None
        n = int(cfg.get("seed_big_rows", 0) or 0)
        if n > 0:
            self.big = make_big_table(n)

    # ----------------------------------------------------------------- sessions

    def open_session(self, email: str, catalog: str | None, schema: str | None) -> Session:
        con = duckdb.connect(":memory:", config={"threads": self.threads})
        try:
            self._seed(con, email)
            s = Session(uuid.uuid4().bytes, uuid.uuid4().bytes, email, con)
            if catalog or schema:
                self._use(s, catalog, schema)
            else:
                self._use(s, "main", "default")
        except Exception:
            con.close()
            raise
        with self._lock:
            self.sessions[s.guid] = s
        self.stats.bump("sessions_opened")
        self.stats.bump_user(email)
        return s

    def _seed(self, con: duckdb.DuckDBPyConnection, email: str) -> None:
        lit = dbx_sql.sql_literal
        con.execute("SET TimeZone = 'UTC'")
        con.execute("ATTACH ':memory:' AS dbx_main")
        for schema in ("default", "demo"):
            con.execute(f"CREATE SCHEMA dbx_main.{schema}")
        con.execute(
            "CREATE TABLE dbx_main.demo.sales (region VARCHAR, amount DECIMAL(12,2), owner VARCHAR)"
        )
        mine = [r for r in self.sales if str(r[2]).lower() == email]
        if mine:
            con.executemany(
                "INSERT INTO dbx_main.demo.sales VALUES (?, ?, ?)",
                [[r[0], str(r[1]), r[2]] for r in mine],
            )
        con.execute(f"CREATE TEMP MACRO current_user() AS {lit(email)}")
        con.execute(f"CREATE TEMP MACRO session_user() AS {lit(email)}")
        if self.big is not None:
            con.execute("CREATE SCHEMA dbx_main.bench")
            con.register("__connauth_big", self.big)
            con.execute("CREATE VIEW dbx_main.bench.big AS SELECT * FROM __connauth_big")

    def _use(self, s: Session, catalog: str | None, schema: str | None) -> None:
        cat = catalog or s.catalog
        sch = schema or ("default" if catalog else s.schema)
        duck_cat = dbx_sql.CATALOG_ALIASES.get(cat.lower(), cat)
        try:
            s.con.execute(f"USE {dbx_sql._quote_ident(duck_cat)}.{dbx_sql._quote_ident(sch)}")
        except duckdb.Error as e:
            raise EngineError(
                f"[SCHEMA_NOT_FOUND] The schema `{cat}`.`{sch}` cannot be found. ({e})",
                "42704",
            ) from None
        s.catalog, s.schema = cat, sch
        lit = dbx_sql.sql_literal(cat)
        s.con.execute(f"CREATE OR REPLACE TEMP MACRO current_catalog() AS {lit}")

    def session(self, guid: bytes, email: str) -> Session:
        s = self.sessions.get(guid)
        if s is None or s.closed or s.email != email:
            raise EngineError("Invalid SessionHandle: session not found or closed", "HY000")
        return s

    def close_session(self, s: Session) -> None:
        s.closed = True
        with self._lock:
            self.sessions.pop(s.guid, None)
            ops = [o for o in self.operations.values() if o.session is s]
            for o in ops:
                self.operations.pop(o.guid, None)
        for o in ops:
            self.cancel(o)
        with s.lock:
            s.con.close()
        self.stats.bump("sessions_closed")

    # --------------------------------------------------------------- operations

    def operation(self, guid: bytes, email: str) -> Operation:
        o = self.operations.get(guid)
        if o is None or o.session.email != email:
            raise EngineError("Invalid OperationHandle: operation not found", "HY000")
        return o

    def _new_op(self, s: Session, kind: str, sql: str = "") -> Operation:
        o = Operation(uuid.uuid4().bytes, s, sql=sql, kind=kind)
        with self._lock:
            self.operations[o.guid] = o
        return o

    def execute(self, s: Session, sql: str, parameters: list | None) -> Operation:
        self.stats.bump("statements")
        o = self._new_op(s, "EXECUTE_STATEMENT", sql)
        threading.Thread(target=self._run, args=(o, parameters), daemon=True, name="dbx-op").start()
        return o

    def _run(self, o: Operation, parameters: list | None) -> None:
        s = o.session
        try:
            with s.lock:
                if o.state != PENDING or s.closed:
                    o.done.set()
                    return
                o.state = RUNNING
                s.running = o
                try:
                    table = self._execute_sql(s, o.sql, parameters)
                finally:
                    s.running = None
            o.num_modified_rows = _modified_rows(o.sql, table)
            if o.num_modified_rows is not None:
                n = o.num_modified_rows
                table = pa.table(
                    {
                        "num_affected_rows": pa.array([n], pa.int64()),
                        "num_inserted_rows": pa.array(
                            [n if _verb(o.sql) == "INSERT" else 0], pa.int64()
                        ),
                    }
                )
            elif table.column_names == ["Count"] and table.num_rows == 0:
                table = pa.table({})  # DDL: no result columns, like Databricks
            o.finish(FINISHED, table)
        except duckdb.InterruptException:
            o.finish(CANCELED)
        except EngineError as e:
            o.finish(ERROR, error=str(e), sql_state=e.sql_state)
        except duckdb.Error as e:
            message, state = _databricks_error(e, o.sql)
            o.finish(ERROR, error=message, sql_state=state)
        except Exception as e:  # pragma: no cover - a bug in the test server
            o.finish(ERROR, error=f"INTERNAL_ERROR: {type(e).__name__}: {e}", sql_state="XX000")

    def _execute_sql(self, s: Session, sql: str, parameters: list | None) -> pa.Table:
        use = dbx_sql.parse_use(sql)
        if use is not None:
            self._use(s, *use)
            return pa.table({"result": pa.array([], pa.string())}).slice(0, 0)
        try:
            duck_sql, binds = dbx_sql.translate(sql, parameters)
        except dbx_sql.ParameterError as e:
            raise EngineError(str(e), "42P02") from None
        rel = s.con.sql(duck_sql, params=binds or None)
        if rel is None:
            return pa.table({})
        return normalize_table(rel.to_arrow_table())

    def cancel(self, o: Operation) -> None:
        self.stats.bump("cancels")
        prev = o.state
        o.state = CANCELED
        if prev == RUNNING and o.session.running is o:
            try:
                o.session.con.interrupt()
            except duckdb.Error:
                pass
        o.table = None
        o.done.set()

    def close_operation(self, o: Operation) -> None:
        with self._lock:
            self.operations.pop(o.guid, None)
        if o.state in (PENDING, RUNNING):
            self.cancel(o)
        o.state = CLOSED
        o.table = None
        self.stats.bump("operations_closed")

    def metadata(self, s: Session, kind: str, **kw: Any) -> Operation:
        """Run a metadata call synchronously; returns a finished operation."""
        self.stats.bump("metadata_calls")
        o = self._new_op(s, kind)
        try:
            with s.lock:
                table = getattr(self, "_meta_" + kind.lower())(s, **kw)
            o.finish(FINISHED, table)
        except duckdb.Error as e:
            message, state = _databricks_error(e)
            o.finish(ERROR, error=message, sql_state=state)
        return o

    # ------------------------------------------------------------ metadata SQL

    @staticmethod
    def _where(col: str, pattern: str | None, args: list[str]) -> str:
        like = dbx_sql.like_pattern(pattern)
        if like is None:
            return ""
        args.append(like)
        return f" AND {col} ILIKE ? ESCAPE '\\'"

    @staticmethod
    def _cat_expr(col: str) -> str:
        cases = " ".join(
            f"WHEN {dbx_sql.sql_literal(d)} THEN {dbx_sql.sql_literal(c)}"
            for d, c in dbx_sql.REVERSE_ALIASES.items()
        )
        return f"(CASE {col} {cases} ELSE {col} END)"

    _HIDDEN = "('memory', 'system', 'temp')"

    def _meta_catalogs(self, s: Session) -> pa.Table:
        cat = self._cat_expr("database_name")
        rel = s.con.sql(
            f"SELECT {cat} AS TABLE_CAT FROM duckdb_databases() "
            f"WHERE database_name NOT IN {self._HIDDEN} AND NOT internal ORDER BY 1"
        )
        return normalize_table(rel.to_arrow_table())

    def _meta_schemas(self, s: Session, catalog: str | None, schema: str | None) -> pa.Table:
        args: list[str] = []
        cat = self._cat_expr("catalog_name")
        where = self._where(cat, catalog, args) + self._where("schema_name", schema, args)
        q = (
            f"SELECT schema_name AS TABLE_SCHEM, {cat} AS TABLE_CATALOG "
            "FROM information_schema.schemata "
            f"WHERE catalog_name NOT IN {self._HIDDEN} AND schema_name <> 'main'"
            f"{where} ORDER BY 2, 1"
        )
        return normalize_table(s.con.sql(q, params=args or None).to_arrow_table())

    def _meta_tables(
        self,
        s: Session,
        catalog: str | None,
        schema: str | None,
        table: str | None,
        types: list[str] | None,
    ) -> pa.Table:
        args: list[str] = []
        cat = self._cat_expr("table_catalog")
        where = (
            self._where(cat, catalog, args)
            + self._where("table_schema", schema, args)
            + self._where("table_name", table, args)
        )
        ttype = "(CASE table_type WHEN 'BASE TABLE' THEN 'TABLE' ELSE table_type END)"
        if types:
            args.extend(t.upper() for t in types)
            where += f" AND {ttype} IN ({', '.join('?' for _ in types)})"
        q = (
            f"SELECT {cat} AS TABLE_CAT, table_schema AS TABLE_SCHEM, "
            f"table_name AS TABLE_NAME, {ttype} AS TABLE_TYPE, "
            "CAST('' AS VARCHAR) AS REMARKS, CAST(NULL AS VARCHAR) AS TYPE_CAT, "
            "CAST(NULL AS VARCHAR) AS TYPE_SCHEM, CAST(NULL AS VARCHAR) AS TYPE_NAME, "
            "CAST(NULL AS VARCHAR) AS SELF_REFERENCING_COL_NAME, "
            "CAST(NULL AS VARCHAR) AS REF_GENERATION "
            f"FROM information_schema.tables WHERE table_catalog NOT IN {self._HIDDEN}"
            f"{where} ORDER BY 1, 2, 3"
        )
        return normalize_table(s.con.sql(q, params=args or None).to_arrow_table())

    def _meta_columns(
        self,
        s: Session,
        catalog: str | None,
        schema: str | None,
        table: str | None,
        column: str | None,
    ) -> pa.Table:
        args: list[str] = []
        cat = self._cat_expr("c.table_catalog")
        where = (
            self._where(cat, catalog, args)
            + self._where("c.table_schema", schema, args)
            + self._where("c.table_name", table, args)
            + self._where("c.column_name", column, args)
        )
        q = (
            "SELECT " + cat + " AS cat, c.table_schema, c.table_name, c.column_name, "
            "c.data_type, c.numeric_precision, c.numeric_scale, "
            "c.character_maximum_length, c.is_nullable, c.ordinal_position, "
            "c.column_default FROM information_schema.columns c "
            f"WHERE c.table_catalog NOT IN {self._HIDDEN}{where} "
            "ORDER BY 1, 2, 3, c.ordinal_position"
        )
        rows = s.con.sql(q, params=args or None).fetchall()
        out: dict[str, list] = {k: [] for k, _ in COLUMNS_SCHEMA}
        for cat_, sch, tbl, col, dtype, prec, scale, charlen, nullable, pos, default in rows:
            jdbc, tname, size, digits = jdbc_type(dtype, prec, scale, charlen)
            vals = [
                cat_,
                sch,
                tbl,
                col,
                jdbc,
                tname,
                size,
                None,
                digits,
                10 if digits is not None or jdbc in (-6, 5, 4, -5, 6, 8) else None,
                1 if nullable == "YES" else 0,
                "",
                default,
                None,
                None,
                None,
                pos,
                "YES" if nullable == "YES" else "NO",
                None,
                None,
                None,
                None,
                "NO",
                "NO",
            ]
            for (k, _), v in zip(COLUMNS_SCHEMA, vals, strict=True):
                out[k].append(v)
        schema_ = pa.schema([pa.field(k, t) for k, t in COLUMNS_SCHEMA])
        return pa.Table.from_pydict(out, schema=schema_)


COLUMNS_SCHEMA = [
    ("TABLE_CAT", pa.string()),
    ("TABLE_SCHEM", pa.string()),
    ("TABLE_NAME", pa.string()),
    ("COLUMN_NAME", pa.string()),
    ("DATA_TYPE", pa.int32()),
    ("TYPE_NAME", pa.string()),
    ("COLUMN_SIZE", pa.int32()),
    ("BUFFER_LENGTH", pa.int8()),
    ("DECIMAL_DIGITS", pa.int32()),
    ("NUM_PREC_RADIX", pa.int32()),
    ("NULLABLE", pa.int32()),
    ("REMARKS", pa.string()),
    ("COLUMN_DEF", pa.string()),
    ("SQL_DATA_TYPE", pa.int32()),
    ("SQL_DATETIME_SUB", pa.int32()),
    ("CHAR_OCTET_LENGTH", pa.int32()),
    ("ORDINAL_POSITION", pa.int32()),
    ("IS_NULLABLE", pa.string()),
    ("SCOPE_CATALOG", pa.string()),
    ("SCOPE_SCHEMA", pa.string()),
    ("SCOPE_TABLE", pa.string()),
    ("SOURCE_DATA_TYPE", pa.int16()),
    ("IS_AUTO_INCREMENT", pa.string()),
    ("IS_GENERATEDCOLUMN", pa.string()),
]

_JDBC = {
    "BOOLEAN": (16, "BOOLEAN", 1),
    "TINYINT": (-6, "TINYINT", 3),
    "SMALLINT": (5, "SMALLINT", 5),
    "INTEGER": (4, "INT", 10),
    "BIGINT": (-5, "BIGINT", 19),
    "FLOAT": (6, "FLOAT", 7),
    "DOUBLE": (8, "DOUBLE", 15),
    "VARCHAR": (12, "STRING", None),
    "DATE": (91, "DATE", 10),
    "TIMESTAMP": (93, "TIMESTAMP_NTZ", 29),
    "TIMESTAMP WITH TIME ZONE": (93, "TIMESTAMP", 29),
    "BLOB": (-2, "BINARY", None),
    "HUGEINT": (3, "DECIMAL(38,0)", 38),
    "UUID": (12, "STRING", None),
}


def jdbc_type(dtype: str, prec: Any, scale: Any, charlen: Any) -> tuple[int, str, Any, Any]:
    """DuckDB type name -> (java.sql.Types code, Databricks type name, size, digits)."""
    d = dtype.upper()
    if d.startswith("DECIMAL"):
        return 3, f"DECIMAL({prec},{scale})", prec, scale
    if d.endswith("[]"):
        return 2003, "ARRAY<" + jdbc_type(d[:-2], None, None, None)[1] + ">", None, None
    if d.startswith("STRUCT"):
        return 2002, "STRUCT", None, None
    if d.startswith("MAP"):
        return 2000, "MAP", None, None
    if d in _JDBC:
        code, name, size = _JDBC[d]
        digits = 0 if code in (-6, 5, 4, -5) else (6 if code == 93 else None)
        return code, name, size if charlen is None else charlen, digits
    return 1111, d, None, None


def _verb(sql: str) -> str:
    words = sql.lstrip().split(None, 1)
    return words[0].upper() if words else ""


def _modified_rows(sql: str, table: pa.Table) -> int | None:
    """DuckDB answers DML with one ``Count`` column; Databricks with num_affected_rows."""
    if _verb(sql) not in ("INSERT", "UPDATE", "DELETE", "MERGE"):
        return None
    if table.column_names != ["Count"] or table.num_rows != 1:
        return None
    return int(table.column(0)[0].as_py())


_NOT_FOUND = re.compile(r'Table with name "?([^"\s!]+)"? does not exist')
_PART = r'(?:`[^`]+`|"[^"]+"|[A-Za-z_][\w$]*)'


def _databricks_error(e: duckdb.Error, sql: str = "") -> tuple[str, str]:
    """(message, SQLSTATE) as Databricks words them, naming what the user wrote: never
    the DuckDB alias of a catalog (``dbx_main``) nor DuckDB's "Did you mean" guesses.

    TABLE_OR_VIEW_NOT_FOUND, SQLSTATE 42P01: "The table or view <relationName> cannot be
    found. ..." (docs.databricks.com/error-messages/table-or-view-not-found-error-class).
    """
    msg = str(e)
    missing = _NOT_FOUND.search(msg)
    if isinstance(e, duckdb.CatalogException) and missing:
        name = _as_written(sql, missing.group(1)) or missing.group(1)
        return (
            f"[TABLE_OR_VIEW_NOT_FOUND] The table or view {name} cannot be found. Verify the "
            "spelling and correctness of the schema and catalog.\nIf you did not qualify the "
            "name with a schema, verify the current_schema() output, or qualify the name with "
            "the correct schema and catalog.\nTo tolerate the error on drop use DROP VIEW IF "
            "EXISTS or DROP TABLE IF EXISTS. SQLSTATE: 42P01",
            "42P01",
        )
    for duck, catalog in dbx_sql.REVERSE_ALIASES.items():
        msg = re.sub(rf"\b{duck}\b", catalog, msg)
    if isinstance(e, duckdb.CatalogException) and "does not exist" in msg:
        return f"[TABLE_OR_VIEW_NOT_FOUND] {msg}", "42P01"
    if isinstance(e, duckdb.ParserException):
        return f"[PARSE_SYNTAX_ERROR] {msg}", "42601"
    return msg, "42000"


def _as_written(sql: str, name: str) -> str | None:
    """The (qualified) relation in ``sql`` whose last part is ``name``, back-quoted by part."""
    last = re.escape(name.split(".")[-1])
    found = re.search(rf"((?:{_PART}\s*\.\s*){{0,2}}(?:`{last}`|\"{last}\"|\b{last}\b))", sql, re.I)
    if not found:
        return None
    parts = re.findall(_PART, found.group(1))
    return ".".join("`" + p.strip('`"') + "`" for p in parts)


# --------------------------------------------------------------------------- seed


def make_big_table(n: int) -> pa.Table:
    """N rows x 10 mixed columns: ints, floats, strings with NULLs, timestamps,
    decimal(12,2), boolean. Deterministic."""
    con = duckdb.connect(":memory:")
    try:
        rel = con.sql(f"""
            SELECT
              CAST(i AS BIGINT)                                   AS id,
              CAST(i % 1000 AS INTEGER)                           AS int_col,
              (i * 0.5)::DOUBLE                                   AS float_col,
              ((i % 97) / 7.0)::DOUBLE                            AS ratio,
              CASE WHEN i % 10 = 0 THEN NULL ELSE 'name_' || (i % 5000) END AS str_col,
              CASE WHEN i % 7 = 0 THEN NULL
                   ELSE ['EMEA','AMER','APAC','LATAM'][(i % 4) + 1] END       AS category,
              TIMESTAMP '2024-01-01 00:00:00' + to_seconds(i)     AS ts_col,
              CAST((i % 100000) / 100.0 AS DECIMAL(12,2))        AS dec_col,
              (i % 3 = 0)                                         AS bool_col,
              CASE WHEN i % 13 = 0 THEN NULL ELSE CAST(i % 65536 AS INTEGER) END AS nullable_int
            FROM range({int(n)}) t(i)
            ORDER BY i
        """)
        return normalize_table(rel.to_arrow_table()).combine_chunks()
    finally:
        con.close()


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {
            "sessions_opened": 0,
            "sessions_closed": 0,
            "statements": 0,
            "metadata_calls": 0,
            "fetch_results": 0,
            "cancels": 0,
            "operations_closed": 0,
            "http_requests": 0,
            "auth_401": 0,
            "auth_403": 0,
            "token_exchanges": 0,
            "token_exchange_failures": 0,
        }
        self.sessions_by_user: dict[str, int] = {}
        # QUERY_TAGS: per session (OpenSession's configuration, where
        # databricks-sql-connector's query_tags go) and per statement (confOverlay
        # overrides), as system.query.history's query_tags would show them
        self.session_tags: dict[bytes, str | None] = {}
        self.query_tags: list[str | None] = []

    def tag_statement(self, session: bytes, overlay: dict[str, str] | None) -> None:
        with self._lock:
            tag = (overlay or {}).get("QUERY_TAGS") or self.session_tags.get(session)
            self.query_tags.append(tag)

    def bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def bump_user(self, email: str) -> None:
        with self._lock:
            self.sessions_by_user[email] = self.sessions_by_user.get(email, 0) + 1

    def snapshot(self, engine: Engine | None = None) -> dict[str, Any]:
        with self._lock:
            snap: dict[str, Any] = dict(self.counts)
            snap["sessions_by_user"] = dict(self.sessions_by_user)
            snap["query_tags"] = list(self.query_tags)
        if engine is not None:
            snap["sessions_active"] = len(engine.sessions)
            snap["operations_open"] = len(engine.operations)
        return snap
