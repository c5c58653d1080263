"""engine() and connect() through the vendors' dialects for Snowflake
(snowflake-sqlalchemy, server-side ``qmark`` binding as the connector binds) against the
local Snowflake, from an IPython shell whose kernel environment points at the real
server: pandas reads as the user, bound parameters, credentials() for the driver."""

from __future__ import annotations

import pytest

from tests.ipython_shell import run_signed_in
from tests.test_stack_snowflake import (  # noqa: F401 - fixtures
    broker_key,
    connauth_config,
    connections,
    idp_config,
    snowflake,
)

pytestmark = pytest.mark.timeout(180)


async def test_snowflake_engine_connect_and_credentials(shell, snowflake):  # noqa: F811
    code = (
        "import pandas as pd, sqlalchemy as sa\n"
        "from jupyter_connauth import connect, credentials, engine\n"
        "eng = engine('sales')\n"
        "df = pd.read_sql(sa.text('SELECT region, amount, owner FROM sales "
        "WHERE amount > :m ORDER BY amount'), eng, params={'m': 0})\n"
    )
    await run_signed_in(shell, code)
    df = shell.ip.user_ns["df"]
    assert len(df) == 3 and set(df["owner"]) == {"ALICE"}
    assert shell.ip.user_ns["eng"].dialect.name == "snowflake"

    r = await shell.run(
        "conn = connect('sales')\n"
        "cur = conn.cursor(); cur.execute('SELECT CURRENT_USER()'); who = cur.fetchone()[0]\n"
        "conn.close()\n"
        "import snowflake.connector\n"
        "creds = credentials('sales')\n"
        "args = creds.connect_args()\n"
    )
    assert r.error_in_exec is None, r.error_in_exec
    assert shell.ip.user_ns["who"] == "ALICE"
    args = shell.ip.user_ns["args"]
    assert args["authenticator"] == "oauth" and args["account"] == "connauth"
    assert "token=" not in repr(shell.ip.user_ns["creds"])
    shell.ip.user_ns["eng"].dispose()
