"""``%%sql_connector`` and ``%sql_connector``: queries under the user's own identity.

    %load_ext jupyter_connauth
    %%sql_connector sales -o df --params {filters}
    SELECT region, SUM(amount) FROM sales WHERE region = :region GROUP BY region

Line commands: list, status, authorize NAME [--switch-account], revoke NAME, test NAME,
whoami NAME, doctor NAME, admin ... (``%sql_connector?`` shows them all; the parsing
is magic_args.py). Drivers and pandas are imported only when a query runs.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from traitlets import Bool, Float, Int, observe

from ..core.errors import ConfigError, ConnAuthError
from .api import kernel
from .balloon import NOTHING_RAN, QUERY_CANCELLED, Cancelled, wait_for_consent
from .client import BrokerAPI, BrokerClient, ConsentNeeded
from .display import Ticker, format_time, result_footer, show_table
from .magic_args import (
    PROG,
    ShowHelp,
    UsageError,
    cell_form,
    parse_cell,
    parse_line,
    plain_help,
    split,
)
from .runner import Runner
from .tags import notebook_path

_VAR = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


@magics_class
class ConnAuthMagics(Magics):
    """The ``%%sql_connector`` magics; these settings are the defaults of every cell."""

    max_rows = Int(1_000_000, help="Refuse results with more rows than this.").tag(config=True)
    wait_timeout = Float(600.0, help="Seconds a cell waits for you to authorize.").tag(config=True)
    poll_interval = Float(0.5, help="Seconds between checks of the consent flow.").tag(config=True)
    progress = Bool(True, help="Show elapsed time while a query runs.").tag(config=True)
    query_tags = Bool(
        True,
        help="""Tag every query at the warehouse with your Jupyter user name and the
        notebook's path (Snowflake QUERY_TAG, BigQuery job labels, Databricks query tags),
        for the warehouse's audit. Applies to the magics and to connect()/engine().""",
    ).tag(config=True)

    maximum_bytes_billed = Int(
        0,
        help="""BigQuery: a query that would bill more bytes than this fails before it
        runs, and nothing is billed (0: no limit). --dry-run shows a query's bytes.""",
    ).tag(config=True)

    @observe("query_tags", "maximum_bytes_billed")
    def _kernel_setting_changed(self, change: Any) -> None:
        if self._client is not None:
            setattr(kernel(), change["name"], change["new"])

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._client: BrokerAPI | None = None
        self._runner: Runner | None = None
        self._idp = "your identity provider"

    # -- plumbing ------------------------------------------------------------------
    @property
    def client(self) -> BrokerAPI:
        """The kernel's broker client, shared with the Python API (kernel/api.py)."""
        if self._client is None:
            shared = kernel()
            shared.query_tags = self.query_tags
            shared.maximum_bytes_billed = self.maximum_bytes_billed
            self._client, self._runner, self._idp = shared.client, shared.runner, shared.idp
        return self._client

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            client = self.client  # sets the shared runner
            if self._runner is None:  # a client given from outside (tests, scripts)
                self._runner = Runner(client)
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
    @cell_form  # the cell form's arguments: magic_arguments builds its parser and help
    def sql_connector(self, line: str, cell: str | None = None) -> Any:
        """Replaced by the generated help (``%sql_connector?``)."""
        try:
            if cell is not None:
                return self._run_cell(parse_cell(type(self).sql_connector, line), cell)
            argv = split(line, PROG)
            if not argv or argv[0] in ("-h", "--help"):
                print(plain_help(type(self).sql_connector.__doc__ or ""))
                return None
            return self._command(parse_line(argv))
        except ShowHelp as e:
            print(e.text)
            return None
        except KeyboardInterrupt:  # outside a consent wait or a query (they say more)
            raise Cancelled(NOTHING_RAN) from None

    def _run_cell(self, opts: argparse.Namespace, cell: str) -> Any:
        name = opts.name
        params = self._params(opts.params)
        if not cell.strip():
            raise UsageError("The cell has no SQL.", f"write a query under %%sql_connector {name}")
        if opts.no_wait:
            answer = self.client.token(name)
            if isinstance(answer, ConsentNeeded):
                from .balloon import Balloon

                Balloon(answer, self._idp, rich=self._rich()).show(
                    "Run the cell again after you have authorized."
                )
                return None
        if opts.dry_run:
            return self._dry_run(name, cell, params, opts.out)
        max_rows = opts.max_rows or self.max_rows
        ticker = Ticker(enabled=self.progress)
        waited = [0.0]  # seconds spent waiting for consent: not the query's time

        def on_consent(answer: ConsentNeeded) -> None:
            began = time.perf_counter()
            ticker.status("waiting for your consent")
            try:
                self._consent(answer)
            finally:
                waited[0] += time.perf_counter() - began
                ticker.status("running")

        started = time.perf_counter()
        try:
            df = self.runner.query(
                name, cell, params, max_rows=max_rows, on_consent=on_consent, progress=ticker
            )
        except KeyboardInterrupt:  # the connectors cancel a submitted statement first
            raise Cancelled(QUERY_CANCELLED if ticker.submitted else NOTHING_RAN) from None
        finally:
            ticker.stop()
        elapsed = time.perf_counter() - started - waited[0]
        self._ns["_"] = df
        if opts.out:
            self._ns[opts.out] = df
        footer, metadata = result_footer(self.runner, name, len(df), elapsed, ticker.query_ids)
        show_table(df, footer, metadata)
        return None

    def _dry_run(self, name: str, sql: str, params: Any, out: str | None) -> None:
        lease = self.runner.lease(name, self._consent)
        if lease.info.connector != "bigquery":
            raise UsageError(
                f"--dry-run is BigQuery's; {name!r} is a {lease.info.connector} connection.",
                "remove --dry-run (EXPLAIN shows the plan on Databricks and Snowflake)",
            )
        processed = int(
            kernel().call(name, lambda c, conn: getattr(c, "dry_run")(conn, sql, params), None)  # noqa: B009 - BigQuery's connector only
        )
        self._ns["_"] = processed
        if out:
            self._ns[out] = processed
        print(
            f"Dry run on {name}: the query would process {_bytes(processed)} "
            f"({processed:,} bytes). Nothing ran; nothing was billed."
        )

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

    def _command(self, ns: argparse.Namespace) -> Any:
        if ns.command in ("authorize", "revoke"):
            self.runner.drop(ns.name)  # no more queries on the old grant's session
        match ns.command:
            case "list":
                return self._list()
            case "status":
                return self._status()
            case "authorize":
                authorize = self.client.authorize_device if ns.device else self.client.authorize
                return self._consent(authorize(ns.name, switch_account=ns.switch_account))
            case "revoke":
                return self._revoke(ns.name)
            case "preflight":
                return self._preflight(ns.names, ns.duration)
            case "test":
                return self._test(ns.name)
            case "whoami":
                return show_table([self.runner.whoami(ns.name, on_consent=self._consent)], None)
            case "doctor":
                return self._doctor(ns.name)
            case "admin":
                return self._admin(ns)
        raise AssertionError(ns.command)  # parse_line knows no other command

    def _list(self) -> Any:
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

    def _status(self) -> Any:
        rows = []
        for c in self.client.connections():
            exp = c.get("expires_at")
            rows.append(
                {
                    "connection": c["name"],
                    "connector": c.get("connector"),
                    "authorized as": c.get("authorized_as") or "",
                    "expires": format_time(exp) if exp else "",
                    "scopes": " ".join(c.get("granted_scopes") or c.get("scopes") or []),
                    "status": c.get("reason_text") or c.get("message") or c["status"],
                }
            )
        return show_table(rows, None)

    def _preflight(self, extra: list[str], seconds: float | None) -> Any:
        from . import preflight

        def connection_of(line: str) -> str | None:
            try:
                return str(parse_cell(type(self).sql_connector, line).name)
            except (ConnAuthError, ShowHelp):
                return None

        names = preflight.notebook_connections(notebook_path(), connection_of)
        names += [n for n in extra if n not in names]
        if not names:
            raise UsageError(
                "No connection to check: this notebook has no %%sql_connector cell.",
                "name them: %sql_connector preflight NAME [NAME ...]",
            )
        consents = []
        for name in names:
            answer = self.client.token(name)
            if isinstance(answer, ConsentNeeded):
                consents.append(answer)
        missing: list[str] = []
        if consents:
            missing = preflight.wait_for_all(
                self.client,
                consents,
                idp=self._idp,
                timeout=self.wait_timeout,
                interval=self.poll_interval,
                rich=self._rich(),
            )
        rows = []
        for name in names:
            status = self.client.status(name)
            problem = preflight.lasting(status, seconds or 0.0)
            rows.append(
                {
                    "connection": name,
                    "authorized as": status.get("authorized_as") or "",
                    "ready": "✘" if problem else "✔",
                    "note": problem or "",
                }
            )
        show_table(rows, None)
        if missing:
            raise preflight.failed(missing)
        return None

    def _revoke(self, name: str) -> None:
        out = self.client.revoke(name)
        where = " and at the IdP" if out.get("revoked_at_idp") else ""
        print(
            f"Revoked your token for {name}{where}."
            if out.get("revoked")
            else f"You had no token for {name}."
        )

    def _test(self, name: str) -> None:
        elapsed = self.runner.test(name, on_consent=self._consent)
        who = self.client.status(name).get("authorized_as")
        print(f"OK: {name} answered in {elapsed:.2f} s" + (f" (as {who})" if who else ""))

    def _doctor(self, name: str) -> Any:
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

    def _admin(self, ns: argparse.Namespace) -> Any:
        client = self.client
        if not isinstance(client, BrokerClient):  # the in-kernel broker has no admins
            raise UsageError(
                "Admin commands need the JupyterHub connauth service.",
                "run them in a notebook on the JupyterHub where the service is enabled",
            )
        if ns.admin == "users":
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
        if ns.admin == "revoke":
            out = client.admin_revoke_user(ns.user, ns.name)
            done = [r["connection"] for r in out.get("results", []) if r.get("revoked")]
            print(f"Revoked {ns.user}'s tokens for: {', '.join(done) or 'nothing (none held)'}.")
        elif ns.admin == "revoke-all":
            out = client.admin_revoke_all(ns.name)
            print(f"Revoked {out.get('tokens_revoked', 0)} token(s) for {ns.name}.")
        else:  # scopes
            out = client.admin_scopes(ns.name, ns.scopes)
            print(
                f"{ns.name} now asks for {' '.join(out['scopes'])}; "
                f"{out['tokens_invalidated']} user(s) will consent again."
            )
        return None


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(ConnAuthMagics)


__all__ = ["ConfigError", "ConnAuthMagics", "UsageError", "load_ipython_extension"]
