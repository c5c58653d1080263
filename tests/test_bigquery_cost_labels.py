"""BigQuery through the magic against the local BigQuery: job labels carrying the
Jupyter user and the notebook (the warehouse records them), the cost guard
(``--dry-run`` reports the bytes a query would process; ``maximum_bytes_billed`` makes
a larger job fail before it runs, as BigQuery documents), and NUMERIC shown as written."""

from __future__ import annotations

import decimal
from typing import Any

import pytest

from tests.ipython_shell import run_signed_in
from tests.test_stack_bigquery import BQ, BQ_SCOPE, PROJECT, bigquery, connections  # noqa: F401

pytestmark = pytest.mark.timeout(180)

SALES_BYTES = 1_234_567  # what a query reading demo.sales processes, in this test bed
NOTEBOOK = "/home/alice/Sales Q3.ipynb"


@pytest.fixture
def idp_config() -> dict[str, Any]:
    # tokens of 8 s: google-auth's Credentials must renew through the broker
    return {"resources": {BQ: {"audience": BQ, "scopes": [BQ_SCOPE]}}, "access_token_ttl": 8}


@pytest.fixture
def bigquery_extra() -> dict[str, Any]:
    return {"table_bytes": {"demo.sales": SALES_BYTES}}


async def test_labels_dry_run_and_bytes_limit(shell, bigquery, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("JPY_SESSION_NAME", NOTEBOOK)  # jupyter_server sets it for kernels
    cell = "%%sql_connector bq -o df\nSELECT region, amount FROM demo.sales ORDER BY amount"
    await run_signed_in(shell, cell)
    df = shell.ip.user_ns["df"]
    # NUMERIC: the value as written, not 100.000000000
    assert list(df["amount"]) == [decimal.Decimal("100"), decimal.Decimal("250.5")]
    assert "100.000000000" not in shell.text() and "250.5" in shell.text()
    labels = bigquery.stats()["job_labels"][-1]
    assert labels == {
        "app": "jupyter-connauth",
        "jupyter_user": "alice",
        "notebook": "_home_alice_sales_q3_ipynb",
    }

    jobs = bigquery.stats()["jobs"]
    capsys.readouterr()
    r = await shell.run("%%sql_connector bq --dry-run -o n\nSELECT * FROM demo.sales")
    assert r.error_in_exec is None, r.error_in_exec
    out = capsys.readouterr().out
    assert "would process 1.2 MB (1,234,567 bytes)" in out and "Nothing ran" in out
    assert shell.ip.user_ns["n"] == SALES_BYTES

    await shell.run("%config ConnAuthMagics.maximum_bytes_billed = 1000000")
    shell.outputs.clear()
    r = await shell.run("%%sql_connector bq\nSELECT * FROM demo.sales")
    err = r.error_in_exec
    assert err is not None and hasattr(err, "_render_traceback_"), err
    assert "Query exceeded limit for bytes billed: 1000000" in str(err)
    assert "maximum_bytes_billed" in str(err.fix)
    assert bigquery.stats()["jobs"] == jobs + 2  # the dry run and the refused job

    await shell.run("%config ConnAuthMagics.maximum_bytes_billed = 2000000")
    r = await shell.run("%%sql_connector bq\nSELECT * FROM demo.sales")
    assert r.error_in_exec is None, r.error_in_exec

    capsys.readouterr()
    r = await shell.run("%%sql_connector bq --dry-run\nSELECT 1")  # reads no table
    assert r.error_in_exec is None and "would process 0 bytes (0 bytes)" in capsys.readouterr().out


async def test_engine_and_credentials_for_bigquery(shell, bigquery):  # noqa: F811
    """sqlalchemy-bigquery on a DB-API connection over our client; google-auth
    Credentials whose refresh_handler asks the broker."""
    code = (
        "import pandas as pd\n"
        "from google.cloud import bigquery\n"
        "from jupyter_connauth import credentials, engine\n"
        "eng = engine('bq')\n"
        "df = pd.read_sql('SELECT owner, amount FROM demo.sales ORDER BY amount', eng)\n"
        "creds = credentials('bq')\n"
        "expiry = creds.expiry\n"
        "creds.token = None  # as if expired: google-auth asks the refresh_handler\n"
        f"client = bigquery.Client(project={PROJECT!r}, credentials=creds,\n"
        f"    client_options={{'api_endpoint': {bigquery.endpoint!r}}})\n"
        "import time\n"
        "seen = []\n"
        "for i in range(3):  # 15 s: two tokens' lifetimes, one client\n"
        "    seen.append(list(client.query('SELECT SESSION_USER() AS u').result())[0]['u'])\n"
        "    time.sleep(5)\n"
        "who = set(seen)\n"
        "client.close(); eng.dispose()\n"
    )
    await run_signed_in(shell, code)
    ns = shell.ip.user_ns
    assert set(ns["df"]["owner"]) == {"alice@example.com"} and len(ns["df"]) == 2
    assert ns["eng"].dialect.name == "bigquery"
    assert ns["who"] == {"alice@example.com"} and ns["expiry"] is not None
    assert len(ns["seen"]) == 3
    assert bigquery.stats()["unauthenticated"] == 0  # never sent an expired token
    assert ns["creds"].token  # refreshed through the broker
