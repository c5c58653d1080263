"""The ``%sql_connector`` command line, parsed by IPython's ``magic_arguments`` (argparse).

Two grammars share one magic: the cell form ``%%sql_connector NAME [options]`` is
declared with magic_arguments' ``@argument`` decorators (:func:`cell_form`), and the
line commands (``list``, ``authorize NAME``, ``admin revoke USER [NAME]`` ...) are
argparse sub-parsers, one per command. All are built once, at import. The commands'
usage lines, generated from their sub-parsers, are the epilog of the magic's help, so
``%sql_connector?`` and ``%sql_connector --help`` show both forms from the parsers that
parse them, and ``%sql_connector COMMAND -h`` shows one command's help.

A mistake is one :class:`UsageError` line with the usage as its fix, never argparse's
``SystemExit``.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic_arguments import (
    MagicArgumentParser,
    MagicHelpFormatter,
    argument,
    kwds,
    magic_arguments,
)

from ..core.errors import ConnAuthError

PROG = "%sql_connector"
F = TypeVar("F", bound=Callable[..., Any])


class UsageError(ConnAuthError):
    code = "usage"


class ShowHelp(Exception):
    """``-h``/``--help`` was given: the magic prints this text (argparse would exit)."""

    def __init__(self, text: str) -> None:
        text = plain_help(text)
        super().__init__(text)
        self.text = text


def plain_help(doc: str) -> str:
    """The help as printed: IPython's RST ``::`` block opener becomes ``usage:``."""
    return "usage: " + doc.removeprefix("::\n\n  ") if doc.startswith("::\n") else doc


class HelpAction(argparse.Action):
    """``-h``/``--help`` that raises :class:`ShowHelp` instead of printing and exiting."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        raise ShowHelp(parser.format_help())


def variable_name(value: str) -> str:
    """``-o VAR``: a Python identifier."""
    if not value.isidentifier():
        raise argparse.ArgumentTypeError(f"needs a variable name, got {value!r}")
    return value


def positive_int(value: str) -> int:
    """``--max-rows N``: a whole number of at least 1."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"needs a positive number, got {value!r}")
    return int(value)


def duration(value: str) -> float:
    """``--for 2h``: a duration in seconds."""
    from .preflight import parse_duration

    try:
        return parse_duration(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def split(line: str, form: str) -> list[str]:
    """The magic's arguments as the shell would split them (quotes removed)."""
    try:
        return shlex.split(line)
    except ValueError as e:
        raise UsageError(
            f"Cannot parse the magic's arguments: {e}.", f"check the quotes ({form} --help)"
        ) from None


class _Formatter(MagicHelpFormatter):
    """IPython's help layout, with usage lines that need no RST block."""

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any = "usage: ") -> None:
        argparse.RawDescriptionHelpFormatter.add_usage(self, usage, actions, groups, prefix)


class _Parser(MagicArgumentParser):
    """Errors as one :class:`UsageError` naming the command, with its usage as the fix."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(**kwargs)
        self.allow_abbrev = False  # --switch is no --switch-account
        self.add_argument("-h", "--help", action=HelpAction)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}.", self.format_usage().strip())


class _Commands:
    """The line commands' parsers; ``listing``: (parser, help) per command to list."""

    def __init__(self) -> None:
        self.parser = _Parser(prog=PROG)
        self._subs = self.parser.add_subparsers(dest="command", metavar="COMMAND")
        self._subs.required = True
        self.listing: list[tuple[_Parser, str]] = []
        self.names: list[str] = []
        self.parsers: dict[str, _Parser] = {}  # "authorize", "admin revoke", ...

    def add(self, name: str, help: str, under: Any = None, *, listed: bool = True) -> _Parser:
        """A command, or with ``under`` (an ``add_subparsers`` of admin) a sub-command."""
        subs = under or self._subs
        prog = f"{PROG} admin {name}" if under else f"{PROG} {name}"
        sub: _Parser = subs.add_parser(name, prog=prog, help=help, description=help)
        if under is None:
            self.names.append(name)
        else:  # no dest on admin's sub-parsers: argparse then names their choices
            sub.set_defaults(admin=name)
        self.parsers[prog.removeprefix(f"{PROG} ")] = sub
        if listed:
            self.listing.append((sub, help))
        return sub


def _connection(sub: _Parser, *, required: bool = True) -> None:
    sub.add_argument(
        "name",
        metavar="NAME",
        nargs=None if required else "?",
        help="the connection (%%sql_connector list shows them)",
    )


def _build() -> _Commands:
    c = _Commands()
    c.add("list", "connections you can use")
    c.add("status", "per connection: authorized as, expiry, scopes")
    sub = c.add("authorize", "sign in at the IdP now (again)")
    _connection(sub)
    sub.add_argument(
        "--switch-account",
        action="store_true",
        help="consent with another IdP account than the one stored for NAME "
        "(refused without this flag)",
    )
    sub.add_argument(
        "--device",
        action="store_true",
        help="a code to enter at the IdP on any device (RFC 8628), for a kernel no "
        "browser can reach",
    )
    sub = c.add(
        "preflight",
        "before Run All: consent for every connection the notebook's cells use, in one balloon",
    )
    sub.add_argument("names", nargs="*", metavar="NAME", help="more connections to check")
    sub.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        type=duration,
        help="report grants that cannot last this long (e.g. 2h, 90m)",
    )
    _connection(c.add("revoke", "forget your token (and revoke it at the IdP)"))
    _connection(c.add("test", "run a trivial query"))
    _connection(c.add("whoami", "the warehouse's view of you (user, role)"))
    _connection(c.add("doctor", "check the setup and say what to fix"))

    admin = c.add("admin", "for JupyterHub admins (never shows tokens)", listed=False)
    subs = admin.add_subparsers()
    subs.required = True
    c.add("users", "every user's status per connection", subs)
    sub = c.add("revoke", "revoke one user's tokens (all, or NAME's)", subs)
    sub.add_argument("user", metavar="USER", help="the JupyterHub user")
    _connection(sub, required=False)
    _connection(c.add("revoke-all", "revoke every user's tokens for NAME", subs))
    sub = c.add("scopes", "change NAME's scopes: everyone consents again", subs)
    _connection(sub)
    sub.add_argument("scopes", metavar="SCOPES", help='space-separated, in quotes: "a b c"')
    return c


_COMMANDS = _build()
COMMANDS = tuple(_COMMANDS.names)


def commands_help() -> str:
    """The line commands: one generated usage line each, and what it does."""
    lines = [f"Line commands ({PROG} COMMAND -h shows one command's help):"]
    for parser, help in _COMMANDS.listing:
        usage = " ".join(parser.format_usage().split()[1:])
        lines.append(f"  {usage}\n      {help}")
    lines.append(
        "\nDefaults: %config ConnAuthMagics.max_rows / wait_timeout / poll_interval / progress"
        " / query_tags / maximum_bytes_billed"
    )
    return "\n".join(lines)


def parse_line(argv: list[str]) -> argparse.Namespace:
    """``%sql_connector COMMAND ...`` as a namespace (``command``, ``name``, ...)."""
    if argv[0] not in COMMANDS:
        raise UsageError(
            f"Unknown command {argv[0]!r}.",
            f"the commands are {', '.join(COMMANDS)} ({PROG}? shows them); "
            f"a query is a cell: %{PROG} NAME on the first line, the SQL below",
        )
    ns, extra = _COMMANDS.parser.parse_known_args(argv)
    if extra:  # argparse would blame the top parser; name the command instead
        command = " ".join(filter(None, (ns.command, getattr(ns, "admin", None))))
        _COMMANDS.parsers[command].error(f"unrecognized arguments: {' '.join(extra)}")
    return ns


# -- the cell form: %%sql_connector NAME [options] ---------------------------------------
_CELL_DESCRIPTION = """\
%%sql_connector NAME [options] runs the cell's SQL on connection NAME as you and
shows the result as a DataFrame (also in _ and, with -o/--out, in VAR). Parameters
are bound by the warehouse, never formatted into the SQL: BigQuery @name,
Databricks and Snowflake :name. For example:

    %%sql_connector sales -o df --params {filters}
    SELECT region, SUM(amount) FROM sales WHERE region = :region GROUP BY region"""

_CELL_ARGUMENTS = (  # in the order the help lists them
    argument("name", metavar="NAME", help="the connection (%%sql_connector list shows them)"),
    argument("-o", "--out", metavar="VAR", type=variable_name, help="also store the result in VAR"),
    argument(
        "--params",
        metavar="JSON|{var}",
        help="parameters bound by the warehouse: a JSON object, or {var} naming a dict "
        "(a list for ? placeholders)",
    ),
    argument(
        "--no-wait",
        action="store_true",
        help="when consent is needed, show the Authorize balloon and return",
    ),
    argument(
        "--dry-run",
        action="store_true",
        help="BigQuery: report the bytes the query would process; nothing runs or is billed",
    ),
    argument(
        "--max-rows",
        metavar="N",
        type=positive_int,
        help="refuse results larger than N rows (default: %%config ConnAuthMagics.max_rows)",
    ),
    argument("-h", "--help", action=HelpAction),
)


def cell_form(magic: F) -> F:
    """``@magic_arguments`` with the cell form's arguments, and the line commands as the
    epilog: IPython builds the parser once and makes its help the magic's docstring."""
    decorated: Any = magic
    for deco in reversed(_CELL_ARGUMENTS):  # decorators apply bottom-up
        decorated = deco(decorated)
    decorated = kwds(description=_CELL_DESCRIPTION, epilog=commands_help())(decorated)
    decorated = magic_arguments(PROG)(decorated)  # usage "%" + PROG: %%sql_connector
    decorated.parser.allow_abbrev = False
    return magic


def parse_cell(magic: Any, line: str) -> argparse.Namespace:
    """``%%sql_connector NAME [options]`` as a namespace (``name``, ``out``, ...)."""
    parser: argparse.ArgumentParser = magic.parser
    try:
        return parser.parse_args(split(line, f"%{PROG}"))
    except IPythonUsageError as e:  # magic_arguments' one-line error: ours, with the fix
        message = str(e)
    if "required: NAME" in message:
        raise UsageError("Which connection?", f"write %{PROG} NAME (see {PROG} list)")
    usage = " ".join(parser.format_usage().split()).removeprefix(":: ")
    raise UsageError(f"%{PROG}: {message}.", f"usage: {usage}")
