"""``%%sql_connector`` and ``%sql_connector``: queries under the user's own identity.

    %load_ext jupyter_connauth
    %%sql_connector sales -o df --params {filters}
    SELECT region, SUM(amount) FROM sales WHERE region = :region GROUP BY region

Line commands: list, status, authorize NAME, revoke NAME, test NAME, whoami NAME,
doctor NAME. Drivers and pandas are imported only when a query runs.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from traitlets import Bool, Float, Int

from ..core.errors import ConfigError, ConnAuthError
from .balloon import wait_for_consent
from .client import BrokerAPI, BrokerClient, ConsentNeeded, connect_broker
from .display import Ticker, show_table
from .runner import Runner

USAGE = """\
%%sql_connector NAME [-o VAR] [--params JSON|{dict_var}] [--no-wait] [--max-rows N]
    Run the cell's SQL on connection NAME as you, show the result as a DataFrame
    (also in _ and, with -o/--out, in VAR). Parameters are bound by the warehouse,
    never formatted into the SQL: BigQuery @name, Databricks and Snowflake :name.
    --no-wait   show the Authorize balloon (when consent is needed) and return
    --max-rows  refuse results larger than N rows (default %config ConnAuthMagics.max_rows)

%sql_connector list                 connections you can use
%sql_connector status               per connection: authorized as, expiry, scopes
%sql_connector authorize NAME       sign in at the IdP now (again)
%sql_connector revoke NAME          forget your token (and revoke it at the IdP)
%sql_connector test NAME            run a trivial query
%sql_connector whoami NAME          the warehouse's view of you (user, role)
%sql_connector doctor NAME          check the setup and say what to fix

JupyterHub admins (through the hub's connauth service; never shows tokens):
%sql_connector admin users                   every user's status per connection
%sql_connector admin revoke USER [NAME]      revoke one user's tokens (all, or NAME)
%sql_connector admin revoke-all NAME         revoke every user's tokens for NAME
%sql_connector admin scopes NAME "a b c"     change NAME's scopes: everyone consents again

Defaults: %config ConnAuthMagics.max_rows / wait_timeout / poll_interval / progress
"""

_VAR = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class UsageError(ConnAuthError):
    code = "usage"


@magics_class
class ConnAuthMagics(Magics):
    max_rows = Int(1_000_000, help="Refuse results with more rows than this.").tag(config=True)
    wait_timeout = Float(600.0, help="Seconds a cell waits for you to authorize.").tag(config=True)
    poll_interval = Float(0.5, help="Seconds between checks of the consent flow.").tag(config=True)
    progress = Bool(True, help="Show elapsed time while a query runs.").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._client: BrokerAPI | None = None
        self._runner: Runner | None = None
        self._idp = "your identity provider"

    # -- plumbing ------------------------------------------------------------------
    @property
    def client(self) -> BrokerAPI:
        if self._client is None:
            self._client = connect_broker()
            try:
                info = self._client.info()
                url = info.get("discovery_url") or ""
                self._idp = re.sub(r"/\.well-known/openid-configuration$", "", url) or self._idp
            except ConnAuthError:
                pass
        return self._client

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = Runner(self.client)
        return self._runner

    @property
    def _ns(self) -> dict[str, Any]:
        assert self.shell is not None
        ns: dict[str, Any] = self.shell.user_ns
        return ns

    def _rich(self) -> bool:
        kernel = getattr(self.shell, "kernel", None)
        return kernel is not None

    def _consent(self, consent: ConsentNeeded) -> None:
        wait_for_consent(
            self.client,
            consent,
            idp=self._idp,
            timeout=self.wait_timeout,
            interval=self.poll_interval,
            rich=self._rich(),
        )

    # -- the magic -----------------------------------------------------------------
    @no_var_expand  # {dict_var} reaches --params as a name, never as formatted text
    @line_cell_magic
    def sql_connector(self, line: str, cell: str | None = None) -> Any:
        try:
            args = shlex.split(line)
        except ValueError as e:
            raise UsageError(
                f"Cannot parse the magic's arguments: {e}.", "check the quotes"
            ) from None
        if args[:1] in (["-h"], ["--help"]) or (not args and cell is None):
            print(USAGE)
            return None
        if cell is not None:
            return self._run_cell(args, cell)
        return self._command(args)

    def _run_cell(self, args: list[str], cell: str) -> Any:
        opts = _parse_cell_args(args)
        name = opts["name"]
        params = self._params(opts.get("params"))
        if not cell.strip():
            raise UsageError("The cell has no SQL.", f"write a query under %%sql_connector {name}")
        if opts["no_wait"]:
            answer = self.client.token(name)
            if isinstance(answer, ConsentNeeded):
                from .balloon import Balloon

                Balloon(answer, self._idp, rich=self._rich()).show(
                    "Run the cell again after you have authorized."
                )
                return None
        max_rows = opts.get("max_rows") or self.max_rows
        ticker = Ticker(enabled=self.progress)
        started = time.perf_counter()
        try:
            df = self.runner.query(
                name,
                cell,
                params,
                max_rows=max_rows,
                on_consent=self._consent,
                progress=ticker.status,
            )
        finally:
            ticker.stop()
        elapsed = time.perf_counter() - started
        self._ns["_"] = df
        if opts.get("out"):
            self._ns[opts["out"]] = df
        show_table(df, f"{len(df):,} rows in {elapsed:.2f} s from {name}")
        return None

    def _params(self, raw: str | None) -> dict[str, Any] | list[Any] | None:
        if raw is None:
            return None
        m = _VAR.match(raw)
        if m:
            try:
                value = self._ns[m.group(1)]
            except KeyError:
                raise UsageError(
                    f"--params names the variable {m.group(1)!r}, which is not defined.",
                    "define it as a dict, e.g. filters = {'region': 'EU'}",
                ) from None
        else:
            try:
                value = json.loads(raw)
            except ValueError:
                raise UsageError(
                    "--params is neither JSON nor {variable}.",
                    'write --params \'{"region": "EU"}\' or --params {filters}',
                ) from None
        if not isinstance(value, dict | list | tuple):
            raise UsageError("--params must be a dict (or a list for ? placeholders).")
        return value if isinstance(value, dict) else list(value)

    def _command(self, args: list[str]) -> Any:
        cmd, rest = args[0], args[1:]
        if cmd == "list":
            conns = self.client.connections()
            return show_table(
                [
                    {
                        "connection": c["name"],
                        "connector": c.get("connector"),
                        "auth": c.get("auth"),
                        "description": c.get("description", ""),
                    }
                    for c in conns
                ],
                None,
            )
        if cmd == "status":
            rows = []
            for c in self.client.connections():
                exp = c.get("expires_at")
                rows.append(
                    {
                        "connection": c["name"],
                        "connector": c.get("connector"),
                        "authorized as": c.get("authorized_as") or "",
                        "expires": time.strftime("%H:%M:%S", time.localtime(exp)) if exp else "",
                        "scopes": " ".join(c.get("granted_scopes") or c.get("scopes") or []),
                        "status": c.get("reason_text") or c.get("message") or c["status"],
                    }
                )
            return show_table(rows, None)
        if cmd == "admin":
            return self._admin(rest)
        if cmd not in ("authorize", "revoke", "test", "whoami", "doctor"):
            raise UsageError(f"Unknown command {cmd!r}.", "see %sql_connector --help")
        if len(rest) != 1:
            raise UsageError(f"%sql_connector {cmd} needs one connection name.")
        name = rest[0]
        if cmd == "authorize":
            self.runner.drop(name)
            self._consent(self.client.authorize(name))
            return None
        if cmd == "revoke":
            self.runner.drop(name)
            out = self.client.revoke(name)
            where = " and at the IdP" if out.get("revoked_at_idp") else ""
            print(
                f"Revoked your token for {name}{where}."
                if out.get("revoked")
                else f"You had no token for {name}."
            )
            return None
        if cmd == "test":
            elapsed = self.runner.test(name, on_consent=self._consent)
            who = self.client.status(name).get("authorized_as")
            print(f"OK: {name} answered in {elapsed:.2f} s" + (f" (as {who})" if who else ""))
            return None
        if cmd == "whoami":
            return show_table([self.runner.whoami(name, on_consent=self._consent)], None)
        checks = self.client.doctor(name)
        return show_table(
            [
                {
                    "check": c["check"],
                    "ok": {True: "✔", False: "✘", None: "·"}[c["ok"]],
                    "detail": c["detail"],
                    "fix": c.get("fix") or "",
                }
                for c in checks
            ],
            None,
        )

    def _admin(self, rest: list[str]) -> Any:
        client = self.client
        if not isinstance(client, BrokerClient):  # the in-kernel broker has no admins
            raise UsageError(
                "Admin commands need the JupyterHub connauth service.",
                "run them in a notebook on the JupyterHub where the service is enabled",
            )
        sub, args = (rest[0], rest[1:]) if rest else ("", [])
        if sub == "users" and not args:
            rows = [
                {
                    "user": u["name"],
                    "connection": c["name"],
                    "status": c.get("status", ""),
                    "authorized as": c.get("authorized_as") or "",
                    "reason": c.get("reason") or "",
                }
                for u in client.admin_users()
                for c in u["connections"]
            ]
            return show_table(rows, None)
        if sub == "revoke" and len(args) in (1, 2):
            out = client.admin_revoke_user(args[0], args[1] if len(args) == 2 else None)
            done = [r["connection"] for r in out.get("results", []) if r.get("revoked")]
            print(f"Revoked {args[0]}'s tokens for: {', '.join(done) or 'nothing (none held)'}.")
            return None
        if sub == "revoke-all" and len(args) == 1:
            out = client.admin_revoke_all(args[0])
            print(f"Revoked {out.get('tokens_revoked', 0)} token(s) for {args[0]}.")
            return None
        if sub == "scopes" and len(args) == 2:
            out = client.admin_scopes(args[0], args[1])
            print(
                f"{args[0]} now asks for {' '.join(out['scopes'])}; "
                f"{out['tokens_invalidated']} user(s) will consent again."
            )
            return None
        raise UsageError(
            "Unknown admin command.",
            "admin users | admin revoke USER [NAME] | admin revoke-all NAME | "
            'admin scopes NAME "scopes"',
        )


def _parse_cell_args(args: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"no_wait": False}
    it = iter(args)
    for arg in it:
        if arg in ("-o", "--out"):
            opts["out"] = _value(it, arg)
            if not str(opts["out"]).isidentifier():
                raise UsageError(f"{arg} needs a variable name, got {opts['out']!r}.")
        elif arg == "--params":
            opts["params"] = _value(it, arg)
        elif arg == "--no-wait":
            opts["no_wait"] = True
        elif arg == "--max-rows":
            raw = _value(it, arg)
            if not raw.isdigit() or int(raw) < 1:
                raise UsageError(f"--max-rows needs a positive number, got {raw!r}.")
            opts["max_rows"] = int(raw)
        elif arg.startswith("-"):
            raise UsageError(f"Unknown option {arg!r}.", "see %sql_connector --help")
        elif "name" in opts:
            raise UsageError(f"Unexpected argument {arg!r}.", "see %sql_connector --help")
        else:
            opts["name"] = arg
    if "name" not in opts:
        raise UsageError(
            "Which connection?", "write %%sql_connector NAME (see %sql_connector list)"
        )
    return opts


def _value(it: Any, flag: str) -> str:
    try:
        return str(next(it))
    except StopIteration:
        raise UsageError(f"{flag} needs a value.") from None


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(ConnAuthMagics)


__all__ = ["ConfigError", "ConnAuthMagics", "load_ipython_extension"]
