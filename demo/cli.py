"""``bash scripts/demo``'s command line (stdlib only: ``--help`` works before the install).

The default runs a JupyterHub where alice and bob sign in at the local IdP, each to a
server of their own; ``--single-user`` runs one JupyterLab instead (the laptop mode).
"""

from __future__ import annotations

import argparse
import sys

USAGE = """\
Runs the whole product on this machine, offline: a local OpenID provider, three local
warehouses (Snowflake, Databricks SQL, BigQuery) where alice and bob see different rows,
and a JupyterHub where each of them signs in (any password) and gets their own server
opening the quickstart. Ctrl-C stops everything. State lives in .cache/demo and starts
fresh on every run."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bash scripts/demo", description=USAGE)
    p.add_argument(
        "--check",
        action="store_true",
        help="sign in as alice, then bob, run the quickstart in each one's server, "
        "and exit non-zero unless each saw only their own rows and identity",
    )
    p.add_argument(
        "--single-user",
        action="store_true",
        help="one JupyterLab for one person instead of the hub (the laptop mode)",
    )
    p.add_argument(
        "--port", type=int, default=0, help="the hub's (or JupyterLab's) port (default: a free one)"
    )
    return p


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.port and not port_is_free(args.port):
        print(
            f"jupyter-connauth demo: port {args.port} is in use. Choose another with --port, "
            "or leave --port out to get a free one.",
            file=sys.stderr,
        )
        return 2
    from demo.state import DemoBusy, exclusive

    try:
        with exclusive():
            return run(args)
    except DemoBusy as e:
        print(f"jupyter-connauth demo: {e}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as e:
        print(f"jupyter-connauth demo: could not start: {e}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    if args.single_user:
        from demo.stack import run_single_user

        return run_single_user(args)
    from demo.hub import run_hub

    return run_hub(args)
