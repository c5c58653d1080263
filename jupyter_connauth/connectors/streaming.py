"""A result's Arrow record batches → one DataFrame, a batch at a time.

The drivers' all-at-once paths (Snowflake ``fetch_pandas_all``, Databricks
``fetchall_arrow().to_pandas()``, BigQuery ``to_arrow().to_pandas()``) hold the whole
result as Arrow and then convert it, so the Arrow table and most of the DataFrame exist
at once. Here each batch the driver hands over is converted by pyarrow itself
(``Table.to_pandas`` with the connector's ``types_mapper``: the same dtype rules) and
copied into the result's columns, then dropped: the peak is the DataFrame plus one
batch plus whatever the driver buffers ahead.

Columns of plain numpy dtypes are allocated once when the row count is known up front
(Snowflake's ``rowcount``, BigQuery's ``total_rows``) and filled in place; otherwise
(unknown counts, extension dtypes such as pandas' Arrow-backed ``str``, nullable
``Int64``/``boolean``, time-zone-aware timestamps) the per-batch pieces are joined column
by column at the end, each column's pieces released as soon as it is joined. Where
batches convert to different dtypes (an ``int64`` column with nulls in only some batches
becomes ``float64``; ``bool`` with nulls becomes ``object``) the column takes the dtype
pyarrow gives the whole column, as :func:`numpy.result_type` and :func:`pandas.concat`
would.

No piece may share memory with the driver's batch, which would keep the whole batch
alive: strings are copied into Arrow's jemalloc pool (the system pool where pyarrow has
no jemalloc; Arrow's default mimalloc pool kept freed pages resident: 149-170 MB peak
instead of 117-120 MB for Snowflake's 1M rows), zero-copy numeric views are copied.
Databricks does not use this module: its driver downloads every CloudFetch file during
``execute`` (10 threads by default), so converting batch by batch measured no lower
peak than ``fetchall_arrow().to_pandas()`` (benchmarks/README.md).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .base import PANDAS_OPTIONS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

#: Results of at most this many rows (when the driver announces the count) are converted
#: whole, as before: for them the per-batch bookkeeping costs more time than the memory
#: it saves (Snowflake SELECT 1: 8.16 vs 7.68 ms, medians of 400 interleaved queries).
SMALL_ROWS = 1_000

#: ``Table.to_pandas(types_mapper=...)``: an Arrow type → a pandas dtype (or None).
TypesMapper = Callable[["pa.DataType"], Any]


class Adjust(Protocol):
    """A connector's per-column fix-ups that need the whole column (BigQuery's NUMERIC
    scale): each Arrow batch before conversion, then each finished column."""

    def batch(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...

    def column(self, index: int, values: Any) -> Any: ...


class Cancelled(Exception):
    """The caller asked to stop between batches (the user interrupted the query)."""


class _Column:
    """One result column being filled, in place (``values``) or by pieces."""

    __slots__ = ("filled", "pieces", "rows", "values")

    def __init__(self, rows: int | None) -> None:
        self.rows = rows
        self.values: np.ndarray[Any, Any] | None = None
        self.pieces: list[Any] = []
        self.filled = 0

    def add(self, piece: Any) -> None:
        import numpy as np

        n = len(piece)
        in_place = isinstance(piece, np.ndarray) and not self.pieces and self.rows is not None
        if in_place and self.filled + n <= (self.rows or 0):
            if self.values is None:
                self.values = np.empty(self.rows or 0, dtype=piece.dtype)
            elif piece.dtype != self.values.dtype:
                dtype = np.result_type(self.values.dtype, piece.dtype)
                if dtype != self.values.dtype:  # e.g. int64 → float64 once nulls show up
                    self.values = self.values.astype(dtype)
            self.values[self.filled : self.filled + n] = piece
        else:
            if self.values is not None:  # more rows than announced: go on by pieces
                self.pieces.append(self.values[: self.filled])
                self.values = None
            self.pieces.append(_owned(piece))
        self.filled += n

    def finish(self) -> Any:
        import numpy as np
        import pandas as pd

        if self.values is not None:
            values = self.values
            self.values = None
            return values if self.filled == len(values) else values[: self.filled].copy()
        pieces, self.pieces = self.pieces, []
        if all(isinstance(p, np.ndarray) for p in pieces):
            return np.concatenate(pieces)
        joined = pd.concat([pd.Series(p, copy=False) for p in pieces], ignore_index=True)
        return joined.array


def batches_to_pandas(
    batches: Iterable[pa.RecordBatch | pa.Table],
    *,
    rows: int | None = None,
    types_mapper: TypesMapper | None = None,
    adjust: Adjust | None = None,
    empty: Callable[[], pd.DataFrame],
    stop: threading.Event | None = None,
) -> pd.DataFrame:
    """One DataFrame from ``batches`` (record batches, or tables of a few batches), as
    ``pa.Table.from_batches(batches).to_pandas(types_mapper=...)`` would give it, without
    ever holding all batches. ``rows``: the result's row count when the driver knows it
    up front (columns are then filled in place). ``empty()`` gives the result when no
    batch has a row (its dtypes come from the driver's schema). ``stop`` set →
    :class:`Cancelled` before the next batch."""
    import pandas as pd
    import pyarrow as pa

    pool = _pool()
    options: dict[str, Any] = dict(PANDAS_OPTIONS, memory_pool=pool)
    if types_mapper is not None:
        options["types_mapper"] = types_mapper
    columns: list[_Column] = []
    names: list[str] = []
    trim = _trimmer()
    for item in batches:
        if stop is not None and stop.is_set():
            raise Cancelled
        parts = item.to_batches() if isinstance(item, pa.Table) else [item]
        del item
        for batch in parts:
            if batch.num_rows == 0:
                continue
            if adjust is not None:
                batch = adjust.batch(batch)
            batch = _own_strings(batch, pool)
            if not columns:
                names = list(batch.schema.names)
                columns = [_Column(rows) for _ in names]
            frame = pa.Table.from_batches([batch]).to_pandas(**options)
            trim.converted(batch.nbytes)
            del batch
            for column, (_, series) in zip(columns, frame.items(), strict=True):
                dtype = series.dtype
                column.add(series.to_numpy() if _is_numpy(dtype) else series.array)
            del frame
        del parts
    if not columns:
        return empty()
    finished: dict[int, Any] = {}
    for i, column in enumerate(columns):
        values = column.finish()
        finished[i] = values if adjust is None else adjust.column(i, values)
    df = pd.DataFrame(finished, copy=False)  # not consolidated: no second copy
    df.columns = pd.Index(names)
    return df


def _owned(piece: Any) -> Any:
    """``piece`` in memory of its own: pyarrow converts numbers and timestamps without
    nulls zero-copy, and a view would keep the driver's whole batch alive."""
    import numpy as np
    import pandas as pd

    if isinstance(piece, np.ndarray):
        return piece if piece.flags.owndata else piece.copy()
    if isinstance(piece, pd.arrays.DatetimeArray | pd.arrays.TimedeltaArray):
        return piece.copy()
    return piece  # Arrow-backed (strings copied before conversion) or pandas' own copy


def _own_strings(batch: pa.RecordBatch, pool: pa.MemoryPool) -> pa.RecordBatch:
    """String and binary columns copied into ``pool``: pandas' Arrow-backed ``str``
    would otherwise share the batch's data buffers and keep the whole batch alive.
    Strings become ``large_string``, the type pandas keeps them in (it would cast them
    itself, in Arrow's default pool)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = list(batch.columns)
    copied = False
    for i, array in enumerate(arrays):
        kind = array.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            own = pa.concat_arrays([array], memory_pool=pool)
            arrays[i] = pc.cast(own, pa.large_string(), memory_pool=pool)
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            arrays[i] = pa.concat_arrays([array], memory_pool=pool)
        else:
            continue
        copied = True
    if not copied:
        return batch
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


class _Trim:
    """Hands the memory of converted batches back to the OS (glibc ``malloc_trim``) every
    ``TRIM_BYTES`` of Arrow data converted. The drivers allocate their downloads on their
    own threads, in glibc arenas of those threads, where the DataFrame's arrays (allocated
    on this thread) cannot reuse the freed space: without the trim that space stays
    resident until the process exits and adds to the peak (1M rows, measured: Snowflake
    120 to 131 MB without, 112 to 127 MB with; BigQuery 273 to 280 MB without, 243 to 256
    MB with, for about 0.05 s more CPU)."""

    def __init__(self, malloc_trim: Callable[[int], int] | None) -> None:
        self.malloc_trim = malloc_trim
        self.pending = 0

    def converted(self, nbytes: int) -> None:
        if self.malloc_trim is None:
            return
        self.pending += nbytes
        if self.pending >= TRIM_BYTES:
            self.pending = 0
            self.malloc_trim(0)


#: Arrow bytes converted between two ``malloc_trim`` calls (each takes about a millisecond).
TRIM_BYTES = 16 << 20


def _trimmer() -> _Trim:
    return _Trim(_malloc_trim())


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up once per process (None elsewhere: musl, macOS)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        malloc_trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return malloc_trim


def _pool() -> pa.MemoryPool:
    import pyarrow as pa

    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.system_memory_pool()


def _is_numpy(dtype: Any) -> bool:
    import numpy as np

    return isinstance(dtype, np.dtype)
