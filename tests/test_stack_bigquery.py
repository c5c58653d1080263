"""The whole path for BigQuery: magics → broker → real IdP → google-cloud-bigquery → a
local BigQuery (bqemulator) that checks bearer tokens and applies a row access policy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.idp_fixture import TestIdP
from tests.ipython_shell import run_signed_in
from tests.servers.bigquery.fixture import BigQueryServer
from tests.test_consent_flow import api

pytestmark = pytest.mark.timeout(180)

BQ = "https://bigquery.local"
BQ_SCOPE = "https://www.googleapis.com/auth/bigquery"
PROJECT = "test-project"


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {"resources": {BQ: {"audience": BQ, "scopes": [BQ_SCOPE]}}}


@pytest.fixture
def bigquery_extra() -> dict[str, Any]:
    """More local-BigQuery config for a test module (e.g. table_bytes)."""
    return {}


@pytest.fixture
def bigquery(idp: TestIdP, bigquery_extra: dict[str, Any]) -> Iterator[BigQueryServer]:
    srv = BigQueryServer(
        {
            "project": PROJECT,
            "jwks_url": idp.discovery()["jwks_uri"],
            "issuer": idp.issuer,
            "audience": BQ,
            "users": {"alice@example.com": ["demo"], "bob@example.com": ["demo"]},
            **bigquery_extra,
        }
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def bq_connection(bigquery: BigQueryServer, storage: str | None = None) -> dict[str, Any]:
    """The connection ``bq`` to the local BigQuery; ``storage``: the Storage Read API's
    endpoint (None: REST pages only)."""
    reads = {"storage_api_endpoint": storage} if storage else {"use_storage_api": False}
    return {
        "connector": "bigquery",
        "project": PROJECT,
        "scopes": f"{BQ_SCOPE} offline_access",
        "resource": BQ,
        "driver_options": {
            "client_options": {"api_endpoint": bigquery.endpoint},
            **reads,
            "retry_deadline": 20,
        },
    }


@pytest.fixture
def connections(bigquery: BigQueryServer) -> dict[str, Any]:
    return {"bq": bq_connection(bigquery)}


async def test_cell_waits_for_consent_then_shows_rows(shell, bigquery):
    shell.ip.user_ns["f"] = {"min": 0}
    cell = "%%sql_connector bq -o df --params {f}\nSELECT * FROM demo.sales WHERE amount > @min"
    await run_signed_in(shell, cell)
    df = shell.ip.user_ns["df"]
    assert len(df) > 0 and set(df["owner"]) == {"alice@example.com"}
    r = await shell.run("%sql_connector whoami bq")
    assert r.error_in_exec is None and "alice@example.com" in shell.text()


async def test_two_users_through_the_broker(
    jp_fetch, consent, broker, jp_serverapp, consent_as_other_user
):
    warehouse = jp_serverapp.web_app.settings["connauth_warehouse"]
    answer = await api(jp_fetch, "connections", "bq", "token", method="POST")
    await consent(answer["authorize_url"], "alice")
    bob = await broker.token("bob", "bq")
    page = await consent_as_other_user(bob.authorize_url, "bob")
    assert "Authorized as" in page
    for user in ("alice", "bob"):
        table = await warehouse.call(user, "bq", "query_arrow", "SELECT owner FROM demo.sales")
        assert set(table.column("owner").to_pylist()) == {f"{user}@example.com"}
    tree = await api(jp_fetch, "connections", "bq", "browse", params={"path": PROJECT})
    assert "demo" in tree["items"]
