"""Databricks SQL -> DuckDB text translation for the local warehouse (test only).

Only what the tests and the connector need, done on tokens (never inside string
literals or comments):

* Unity Catalog names whose catalog is reserved in DuckDB (``main``) are renamed to
  their DuckDB alias (``main.demo.sales`` -> ``dbx_main.demo.sales``);
* backtick-quoted identifiers become double-quoted ones;
* native parameter markers (``:name`` and ``?``) become DuckDB named parameters
  wrapped in a CAST to the type the driver sent (the server binds, never inlines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Databricks catalog name -> DuckDB catalog (ATTACH alias). "main" is reserved in DuckDB.
CATALOG_ALIASES = {"main": "dbx_main"}
REVERSE_ALIASES = {v: k for k, v in CATALOG_ALIASES.items()}


class ParameterError(Exception):
    """A parameter marker has no bound value, or a bound value has an unknown type."""


@dataclass
class Token:
    kind: str  # ident | qident | str | comment | ws | named | positional | other
    text: str
    value: str = ""  # identifier name (unquoted) or parameter name


_IDENT_START = re.compile(r"[A-Za-z_]")
_IDENT = re.compile(r"[A-Za-z0-9_$]*")


def tokenize(sql: str) -> list[Token]:
    out: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            j = min(j + 1, n)
            kind = "str" if c == "'" else "dqident"
            out.append(Token(kind, sql[i:j], sql[i + 1 : j - 1]))
            i = j
        elif c == "`":
            j = i + 1
            buf = []
            while j < n:
                if sql[j] == "`":
                    if j + 1 < n and sql[j + 1] == "`":
                        buf.append("`")
                        j += 2
                        continue
                    break
                buf.append(sql[j])
                j += 1
            out.append(Token("qident", sql[i : j + 1], "".join(buf)))
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(Token("comment", sql[i:j]))
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(Token("comment", sql[i:j]))
            i = j
        elif c.isspace():
            j = i
            while j < n and sql[j].isspace():
                j += 1
            out.append(Token("ws", sql[i:j]))
            i = j
        elif sql.startswith("::", i):
            out.append(Token("other", "::"))
            i += 2
        elif c == ":" and i + 1 < n and _IDENT_START.match(sql[i + 1]):
            m = _IDENT.match(sql, i + 2)
            end = m.end() if m else i + 2
            out.append(Token("named", sql[i:end], sql[i + 1 : end]))
            i = end
        elif c == "?":
            out.append(Token("positional", "?"))
            i += 1
        elif _IDENT_START.match(c):
            m = _IDENT.match(sql, i + 1)
            end = m.end() if m else i + 1
            out.append(Token("ident", sql[i:end], sql[i:end]))
            i = end
        else:
            out.append(Token("other", c))
            i += 1
    return out


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_name(tok: Token) -> bool:
    return tok.kind in ("ident", "qident", "dqident")


# Databricks type names (as sent in TSparkParameter.type) -> DuckDB cast targets.
_SCALAR_TYPES = {
    "BIGINT": "BIGINT",
    "BINARY": "BLOB",
    "BOOLEAN": "BOOLEAN",
    "DATE": "DATE",
    "DOUBLE": "DOUBLE",
    "FLOAT": "FLOAT",
    "INT": "INTEGER",
    "INTEGER": "INTEGER",
    "SMALLINT": "SMALLINT",
    "TINYINT": "TINYINT",
    "STRING": "VARCHAR",
    "TIMESTAMP": "TIMESTAMPTZ",
    "TIMESTAMP_NTZ": "TIMESTAMP",
    "INTERVAL": "INTERVAL",
}
_DECIMAL = re.compile(r"DECIMAL\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", re.IGNORECASE)


@dataclass
class Bound:
    """A parameter rendered to a DuckDB expression plus its bind values."""

    expr: str
    binds: dict[str, str] = field(default_factory=dict)


class _Binder:
    def __init__(self) -> None:
        self.binds: dict[str, str] = {}

    def _slot(self, value: str) -> str:
        name = f"__p{len(self.binds)}"
        self.binds[name] = value
        return "$" + name

    def render(self, type_: str | None, value: str | None, arguments: list | None) -> str:
        t = (type_ or "STRING").strip().upper()
        if t == "VOID":
            return "NULL"
        if t == "ARRAY":
            items = [self.render(a.type, a.value, a.arguments) for a in (arguments or [])]
            return "[" + ", ".join(items) + "]"
        if t == "MAP":
            args = arguments or []
            pairs = [
                self.render(args[k].type, args[k].value, args[k].arguments)
                + ": "
                + self.render(args[k + 1].type, args[k + 1].value, args[k + 1].arguments)
                for k in range(0, len(args) - 1, 2)
            ]
            return "MAP {" + ", ".join(pairs) + "}"
        m = _DECIMAL.fullmatch(t)
        if m:
            p, s = int(m.group(1)), int(m.group(2))
            if s > p:  # the 4.x driver formats DECIMAL(scale, precision); accept either order
                p, s = s, p
            duck = f"DECIMAL({max(p, 1)},{s})"
        elif t == "DECIMAL":
            duck = "DECIMAL(38,18)"
        elif t in _SCALAR_TYPES:
            duck = _SCALAR_TYPES[t]
        else:
            raise ParameterError(f"[UNSUPPORTED_PARAMETER_TYPE] Unsupported parameter type {t}.")
        if value is None:
            return f"CAST(NULL AS {duck})"
        return f"CAST({self._slot(value)} AS {duck})"


def _param_value(p: object) -> str | None:
    v = getattr(p, "value", None)
    if v is None:
        return None
    if v.stringValue is not None:
        return str(v.stringValue)
    if v.doubleValue is not None:
        return repr(float(v.doubleValue))
    if v.booleanValue is not None:
        return "true" if v.booleanValue else "false"
    return None


def translate(sql: str, parameters: list | None = None) -> tuple[str, dict[str, str]]:
    """Return (duckdb_sql, bind_values) for one Databricks SQL statement."""
    toks = tokenize(sql)
    named: dict[str, object] = {}
    positional: list[object] = []
    for p in parameters or []:
        if getattr(p, "name", None):
            named[p.name] = p
        else:
            positional.append(p)
    binder = _Binder()
    out: list[str] = []
    pos_index = 0
    sig = [k for k, t in enumerate(toks) if t.kind not in ("ws", "comment")]
    nxt = {sig[k]: sig[k + 1] for k in range(len(sig) - 1)}
    for k, tok in enumerate(toks):
        if tok.kind == "named":
            p = named.get(tok.value)
            if p is None:
                raise ParameterError(
                    f"[UNBOUND_SQL_PARAMETER] Found the unbound parameter: {tok.value}. "
                    "Please, fix `args` and provide a mapping of the parameter to either "
                    "a SQL literal or collection constructor functions."
                )
            out.append(binder.render(p.type, _param_value(p), p.arguments))
        elif tok.kind == "positional":
            if pos_index >= len(positional):
                raise ParameterError(
                    "[UNBOUND_SQL_PARAMETER] Found the unbound parameter: "
                    f"_{pos_index + 1}. Please, fix `args`."
                )
            p = positional[pos_index]
            pos_index += 1
            out.append(binder.render(p.type, _param_value(p), p.arguments))
        elif _is_name(tok) and tok.kind != "dqident":
            name = tok.value
            alias = CATALOG_ALIASES.get(name.lower())
            # a catalog is the first part of a three-part name: cat . schema . obj
            j1 = nxt.get(k)
            j2 = nxt.get(j1) if j1 is not None else None
            j3 = nxt.get(j2) if j2 is not None else None
            prev_dot = bool(out) and out[-1].rstrip().endswith(".")
            three_part = (
                j1 is not None
                and toks[j1].text == "."
                and j2 is not None
                and _is_name(toks[j2])
                and j3 is not None
                and toks[j3].text == "."
            )
            if alias and three_part and not prev_dot:
                out.append(alias)
            elif tok.kind == "qident":
                out.append(_quote_ident(name))
            else:
                out.append(tok.text)
        else:
            out.append(tok.text)
    return "".join(out), binder.binds


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def like_pattern(pattern: str | None) -> str | None:
    """A JDBC/Hive metadata pattern as a LIKE pattern (None = match everything)."""
    if pattern is None or pattern in ("", "*", "%"):
        return None
    return pattern.replace("*", "%")


_USE = re.compile(r"^\s*USE\s+(?:(CATALOG|SCHEMA|DATABASE)\s+)?([`\w.]+)\s*;?\s*$", re.IGNORECASE)


def parse_use(sql: str) -> tuple[str | None, str | None] | None:
    """``USE [CATALOG|SCHEMA|DATABASE] name`` -> (catalog, schema); None if not a USE."""
    m = _USE.match(sql)
    if not m:
        return None
    kind = (m.group(1) or "SCHEMA").upper()
    parts = [p.strip("`") for p in m.group(2).split(".")]
    if kind == "CATALOG":
        return parts[0], None
    if len(parts) == 2:
        return parts[0], parts[1]
    return None, parts[0]
