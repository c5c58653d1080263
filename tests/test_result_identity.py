"""Identity on every result: the footer says who ran it (consent waits excluded), the
output's metadata records identity, connection, the warehouse's statement id and the
time (never a token), and the warehouse sees query tags carrying the Jupyter user and
the notebook's path. A real kernel of a notebook session (jupyter_server sets
JPY_SESSION_NAME), the official Databricks driver, the local warehouse recording the
QUERY_TAGS of each statement."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.kernel_session import KernelSession
from tests.servers.databricks.fixture import DatabricksServer
from tests.test_sessions_kernel import idp_config, lake, warehouse  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(240)

NOTEBOOK = "reports/Sales, Q3.ipynb"
QUERY = "SELECT region, amount, owner FROM main.demo.sales ORDER BY amount"
FOOTER = re.compile(r"alice@example\.com · databricks · 2 rows · (\d+\.\d\d) s")


@pytest.fixture
def connections(warehouse: DatabricksServer) -> dict[str, Any]:  # noqa: F811
    return {"lake": lake(warehouse)}


async def test_footer_metadata_and_query_tags(
    jp_fetch,
    jp_serverapp,
    jp_auth_header,
    jp_root_dir,
    warehouse,  # noqa: F811
    broker,
):
    (jp_root_dir / "reports").mkdir()
    kernel = KernelSession(jp_fetch, jp_serverapp, jp_auth_header)
    kernel.path = NOTEBOOK
    kernel.sign_in_delay = 4.0  # the user takes 4 s to sign in: not the query's time
    async with kernel:
        await kernel.ok("%load_ext jupyter_connauth")
        cell = await kernel.ok(f"%%sql_connector lake -o df\n{QUERY}")
        assert kernel.consents == 1
        m = FOOTER.search(cell.text)
        assert m, cell.text
        assert float(m.group(1)) < 3.5, "the footer's time includes the wait for consent"
        (meta,) = [md["jupyter_connauth"] for md in cell.metadata if "jupyter_connauth" in md]
        assert meta["identity"] == "alice@example.com" and meta["connection"] == "lake"
        assert meta["connector"] == "databricks" and meta["rows"] == 2
        # JPY_SESSION_NAME: the notebook's file on the server
        notebook = str(jp_root_dir / NOTEBOOK)
        assert meta["notebook"] == notebook and meta["seconds"] == pytest.approx(
            float(m.group(1)), abs=0.01
        )
        assert re.fullmatch(r"[0-9a-f-]{36}", meta["query_id"]), meta  # the statement's id

        # the warehouse's audit: every statement tagged with the user and the notebook
        tags = warehouse.stats()["query_tags"]
        assert tags and tags[-1] is not None
        assert "jupyter_user:alice" in tags[-1]
        escaped = notebook.replace(",", r"\,")  # the driver escapes ',' and ':'
        assert f"notebook:{escaped}" in tags[-1], tags[-1]

        # off: untagged from the next session on
        await kernel.ok("%config ConnAuthMagics.query_tags = False")
        await kernel.ok(f"%%sql_connector lake\n{QUERY}")
        assert warehouse.stats()["query_tags"][-1] is None

        # no token in anything the notebook stores
        record = broker.store.get_token("alice", "lake").record
        stored = repr(cell.outputs) + repr(cell.metadata)
        assert record.access_token not in stored and record.refresh_token not in stored
