"""BigQuery through the magic against the local BigQuery: job labels carrying the
Jupyter user and the notebook (the warehouse records them), the cost guard
(``--dry-run`` reports the bytes a query would process; ``maximum_bytes_billed`` makes
a larger job fail before it runs, as BigQuery documents), and NUMERIC shown as written."""

from __future__ import annotations

import asyncio
import decimal
from collections.abc import Iterator

import pytest

from tests.idp_fixture import TestIdP
from tests.ipython_shell import sign_in_when_asked
from tests.servers.bigquery.fixture import BigQueryServer
from tests.test_stack_bigquery import BQ, PROJECT, connections, idp_config  # noqa: F401

pytestmark = pytest.mark.timeout(180)

SALES_BYTES = 1_234_567  # what a query reading demo.sales processes, in this test bed
NOTEBOOK = "/home/alice/Sales Q3.ipynb"


@pytest.fixture
def bigquery(idp: TestIdP) -> Iterator[BigQueryServer]:
    srv = BigQueryServer(
        {
            "project": PROJECT,
            "jwks_url": idp.discovery()["jwks_uri"],
            "issuer": idp.issuer,
            "audience": BQ,
            "users": {"alice@example.com": ["demo"], "bob@example.com": ["demo"]},
            "table_bytes": {"demo.sales": SALES_BYTES},
        }
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def test_labels_dry_run_and_bytes_limit(shell, bigquery, monkeypatch, capsys):
    monkeypatch.setenv("JPY_SESSION_NAME", NOTEBOOK)  # jupyter_server sets it for kernels
    cell = "%%sql_connector bq -o df\nSELECT region, amount FROM demo.sales ORDER BY amount"
    running = asyncio.ensure_future(shell.run(cell))
    await sign_in_when_asked(shell, "alice")
    result = await running
    assert result.error_in_exec is None, result.error_in_exec
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
