"""``%sql_connector preflight``: before Run All, the kernel of a notebook reads the
notebook's ``%%sql_connector`` cells, asks consent for every connection that needs it
in one balloon, and reports the grants that cannot last the given time. A real kernel
of a notebook session started by the real server, the real IdP (a connection without
offline_access gets no refresh token there)."""

from __future__ import annotations

import json
import re
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tests.kernel_session import AUTH_URL, KernelSession

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def connections() -> dict[str, Any]:
    base = {"connector": "databricks", "server_hostname": "dbc.example.com"}
    return {
        "sales": {**base, "http_path": "/sql/1.0/warehouses/a", "scopes": "sql offline_access"},
        "finance": {**base, "http_path": "/sql/1.0/warehouses/b", "scopes": "sql offline_access"},
        "ops": {**base, "http_path": "/sql/1.0/warehouses/c", "scopes": "sql"},  # no refresh
        "unused": {**base, "http_path": "/sql/1.0/warehouses/d", "scopes": "sql offline_access"},
    }


def write_notebook(path: Any) -> None:
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("%%sql_connector unused\nnot code"),
        new_code_cell("%load_ext jupyter_connauth"),
        new_code_cell("%%sql_connector sales -o df --max-rows 10\nSELECT 1"),
        new_code_cell("filters = {'region': 'EU'}"),
        new_code_cell("%%sql_connector --params {filters} finance\nSELECT :region"),
        new_code_cell("%%sql_connector ops\nSELECT 2"),
        new_code_cell("%%sql_connector sales\nSELECT 3"),
    ]
    nbformat.write(nb, path)


async def test_one_balloon_for_the_notebooks_connections(
    jp_fetch, jp_serverapp, jp_auth_header, jp_root_dir
):
    write_notebook(jp_root_dir / "analysis.ipynb")
    kernel = KernelSession(jp_fetch, jp_serverapp, jp_auth_header)
    kernel.path = "analysis.ipynb"
    async with kernel:
        await kernel.ok("%load_ext jupyter_connauth")
        cell = await kernel.ok("%sql_connector preflight --for 2h")
        # one balloon (one output, updated in place) with the three links
        first = next(o for o in cell.outputs if o["output_type"] == "display_data")
        links = AUTH_URL.findall(first["data"]["text/plain"])
        assert len(links) == 3 and "Preflight: 3 connection(s)" in first["data"]["text/plain"]
        assert kernel.consents == 3
        assert "unused" not in cell.text  # a Markdown cell is no query
        table = cell.outputs[-1]["data"]["text/plain"]
        rows = {line.split()[0]: line for line in table.splitlines()[1:]}
        assert set(rows) == {"sales", "finance", "ops"}
        assert "✔" in rows["sales"] and "✔" in rows["finance"]
        assert "✘" in rows["ops"] and "no refresh token" in rows["ops"]
        assert re.search(r"expires at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+", rows["ops"])
        # the balloon ends without a live link in the notebook
        last_balloon = [o for o in cell.outputs if "Preflight:" in json.dumps(o)][-1]
        assert not AUTH_URL.search(json.dumps(last_balloon))

        # the notebook's three are granted: only 'unused', named on the line, asks now
        again = await kernel.ok("%sql_connector preflight unused")
        assert "Preflight: 1 connection(s)" in again.text and kernel.consents == 4
        assert "✘" not in again.outputs[-1]["data"]["text/plain"]  # no --for: all ready

        # status shows expiry with date and time zone
        status = await kernel.ok("%sql_connector status", consent=False)
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+", status.text), status.text
