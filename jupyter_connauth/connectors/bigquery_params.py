"""BigQuery query parameters from Python values: server-side, typed, never formatted in."""

from __future__ import annotations

import datetime as dt
import decimal
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import QueryError

#: NUMERIC holds 29 integer digits and 9 decimals; beyond that, BIGNUMERIC.
_NUMERIC_MAX_INTEGER_DIGITS = 29
_NUMERIC_MAX_SCALE = 9


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


def query_parameter(bigquery: Any, name: str, value: Any) -> Any:
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
        fields = [query_parameter(bigquery, str(k), v) for k, v in value.items()]
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
