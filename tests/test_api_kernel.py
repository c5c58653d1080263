"""The Python API (``from jupyter_connauth import connect, engine, credentials``) in a
real kernel started by the real server: consent through the balloon, the official
Databricks driver against the local warehouse (which checks every token), pandas and
JupySQL through the SQLAlchemy dialect, a revoke reaching a pooled connection, and a
credentials provider renewing across token expiries."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.kernel_session import KernelSession
from tests.servers.databricks.fixture import DatabricksServer
from tests.test_consent_flow import api
from tests.test_sessions_kernel import lake, warehouse  # noqa: F401 - fixtures
from tests.test_stack_databricks import DBX

pytestmark = pytest.mark.timeout(240)

QUERY = "SELECT region, amount, owner FROM main.demo.sales ORDER BY amount"


@pytest.fixture
def idp_config() -> dict[str, Any]:
    # short-lived access tokens: the renewal test outlives several of them
    return {"resources": {DBX: {"audience": DBX, "scopes": ["sql"]}}, "access_token_ttl": 8}


@pytest.fixture
def connections(warehouse: DatabricksServer) -> dict[str, Any]:  # noqa: F811
    return {"lake": lake(warehouse)}


@pytest.fixture
def kernel(jp_fetch: Any, jp_serverapp: Any, jp_auth_header: dict[str, str]) -> KernelSession:
    """Started by ``async with kernel:`` in the test (a kernel of the test's server)."""
    return KernelSession(jp_fetch, jp_serverapp, jp_auth_header)


def test_importing_the_package_stays_light() -> None:
    code = (
        "import sys, jupyter_connauth\n"
        "from jupyter_connauth import connect, engine, credentials\n"
        "heavy = ('IPython', 'sqlalchemy', 'pandas', 'pyarrow', 'snowflake', 'databricks',\n"
        "         'google', 'jupyter_server', 'sql')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not bad, bad\n"
        "assert callable(connect) and callable(engine) and callable(credentials)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_connect_engine_and_jupysql_as_the_user(kernel, jp_fetch, warehouse):  # noqa: F811
    async with kernel:
        # connect(): the balloon, consent, then the DB-API connection of databricks.sql
        cell = await kernel.ok(
            "from jupyter_connauth import connect, engine, credentials\n"
            "conn = connect('lake')\n"
            "cur = conn.cursor(); cur.execute('SELECT current_user()'); print(cur.fetchall())\n"
            "print(type(conn).__module__)\n"
        )
        assert kernel.consents == 1 and "Authorize lake" in cell.text
        assert "alice@example.com" in cell.text and "databricks.sql" in cell.text
        # no live authorize link is left in the notebook's outputs once authorized
        assert "Authorized as alice@example.com for lake" in cell.text

        # engine(): pandas through databricks-sqlalchemy, rows as the warehouse's row filter
        # gives them to alice (bob's row is not hers)
        cell = await kernel.ok(
            "import pandas as pd\n"
            "eng = engine('lake')\n"
            f"df = pd.read_sql({QUERY!r}, eng)\n"
            "print(eng.dialect.name, sorted(set(df['owner'])), len(df))\n"
        )
        assert "databricks ['alice@example.com'] 2" in cell.text, cell.text

        # JupySQL on the same engine
        cell = await kernel.ok(
            "%load_ext sql\n%config SqlMagic.displaylimit = 0\n%sql eng\n"
            f"r = %sql {QUERY}\n"
            "print('JUPYSQL', sorted({row[2] for row in r}), len(r))\n",
            consent=False,
        )
        assert "JUPYSQL ['alice@example.com'] 2" in cell.text, cell.text

        # a revoke in the sidebar reaches the pooled connection: the next checkout asks
        # for consent again (a balloon) before anything runs
        statements = warehouse.stats()["statements"]
        await api(jp_fetch, "connections", "lake", "revoke", method="POST")
        kernel.login = "bob"  # bob signs in this time (switching is allowed after a revoke)
        cell = await kernel.ok(f"print(sorted(set(pd.read_sql({QUERY!r}, eng)['owner'])))")
        assert kernel.consents == 2 and "['bob@example.com']" in cell.text, cell.text
        assert warehouse.stats()["statements"] > statements


async def test_credentials_provider_renews_across_expiries(kernel, warehouse):  # noqa: F811
    async with kernel:
        """The IdP's tokens live 8 s: one driver connection made with credentials('lake')
        keeps working for 15 s, each request carrying the broker's current token (the local
        warehouse rejects an expired token on every request, as Databricks does)."""
        conn = lake(warehouse)
        cell = await kernel.ok(
            "import time, databricks.sql\n"
            "from jupyter_connauth import credentials\n"
            "creds = credentials('lake')\n"
            "print(repr(creds))\n"
            f"conn = databricks.sql.connect(server_hostname={conn['server_hostname']!r},\n"
            f"    http_path={conn['http_path']!r}, credentials_provider=creds,\n"
            f"    **{conn['driver_options']!r})\n"
            "seen = []\n"
            "for i in range(3):\n"
            "    cur = conn.cursor(); cur.execute('SELECT current_user()')\n"
            "    seen.append(cur.fetchall()[0][0]); cur.close(); time.sleep(5)\n"
            "print('USERS', sorted(set(seen)), len(seen))\n"
        )
        assert "USERS ['alice@example.com'] 3" in cell.text, cell.text
        assert "BrokerCredentials()" in cell.text and "eyJ" not in cell.text


async def test_connect_in_a_script_prints_the_link(kernel_env, jp_auth_header, warehouse):  # noqa: F811
    """No IPython (a script in the server's terminal): the link goes to stderr, the user
    signs in, and the script goes on as them."""
    import asyncio
    import os
    import re

    from tests.kernel_session import AUTH_URL

    code = (
        "from jupyter_connauth import connect\n"
        "c = connect('lake'); cur = c.cursor(); cur.execute('SELECT current_user()')\n"
        "print('USER', cur.fetchall()[0][0]); c.close()\n"
    )
    env = {
        **os.environ,
        "JUPYTER_CONNAUTH_URL": kernel_env["url"],
        "JUPYTER_CONNAUTH_TOKEN": kernel_env["token"],
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None and proc.stdout is not None
    err = b""
    while not AUTH_URL.search(err.decode()):
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert line, err.decode()
        err += line
    assert "Authorize lake" in err.decode()
    session = KernelSession(None, None, jp_auth_header)
    await session._sign_in(AUTH_URL.search(err.decode()).group(1))
    out, rest = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (err + rest).decode()
    assert re.search(r"USER alice@example\.com", out.decode())
    assert "Authorized as alice@example.com for lake" in rest.decode()
    assert "{'text/plain'" not in (err + rest).decode()
