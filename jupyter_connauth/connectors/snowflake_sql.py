"""Snowflake placeholders: ``:name`` with a dict becomes server-bound ``?`` (qmark)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import QueryError

#: ``--params``: a dict for ``:name`` placeholders, or a list/tuple for ``?``.
SnowflakeParams = Mapping[str, Any] | Sequence[Any] | None

# One regex over the SQL: the alternatives that must be kept verbatim come first, so a
# ``:name`` inside a string, quoted identifier, comment or $$ body is never a parameter.
_SQL_TOKENS = re.compile(
    r"""
      (?P<keep>
          '(?:[^'\\]|\\.|'')*'?        # string literal ('' and \' escapes)
        | "(?:[^"]|"")*"?              # quoted identifier
        | --[^\n]*                     # line comments
        | //[^\n]*
        | /\*.*?(?:\*/|\Z)             # block comment
        | \$\$.*?(?:\$\$|\Z)           # dollar-quoted body
        | ::                           # cast
      )
    | (?P<escaped>\\:)                 # \: is a literal colon
    | (?<![\w$"\])]):(?P<name>[A-Za-z_][A-Za-z0-9_]*)   # :name, not col:path
    """,
    re.VERBOSE | re.DOTALL,
)


def named_to_qmark(sql: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``WHERE region = :region`` + ``{"region": "EU"}`` → ``WHERE region = ?``, ``["EU"]``.

    Placeholders in strings, quoted identifiers, comments and ``$$`` bodies stay text;
    ``::`` casts and ``col:field`` paths are not placeholders; ``\\:name`` is a literal.
    Unused entries of ``params`` are ignored; a missing one raises :class:`QueryError`.
    """
    values: list[Any] = []
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group("keep") is not None:
            return m.group("keep")
        if m.group("escaped") is not None:
            return ":"
        name = m.group("name")
        if name not in params:
            missing.append(name)
            return m.group(0)
        values.append(params[name])
        return "?"

    out = _SQL_TOKENS.sub(sub, sql)
    if missing:
        names = ", ".join(f":{n}" for n in dict.fromkeys(missing))
        given = ", ".join(sorted(map(str, params))) or "none"
        raise QueryError(
            f"The query uses {names} but --params has no value for it (given: {given}).",
            "add the name to --params (a dict such as {'region': 'EU'}), "
            "or write \\: for a literal colon",
        )
    return out, values


def bind(sql: str, params: SnowflakeParams) -> tuple[str, list[Any] | None]:
    if params is None:
        return sql, None
    if isinstance(params, Mapping):
        out, values = named_to_qmark(sql, params)
        return out, values if values else None
    if isinstance(params, list | tuple):
        return sql, list(params)
    raise QueryError(
        f"--params must be a dict (for :name) or a list (for ?), not {type(params).__name__}.",
        "pass e.g. {'region': 'EU'} with :region in the SQL",
    )
