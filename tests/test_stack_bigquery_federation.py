"""BigQuery through Workforce Identity Federation, end to end: consent at the real IdP →
the broker exchanges the user's ID token at a local Google STS → google-cloud-bigquery
against a local BigQuery that accepts only STS-minted tokens, as the user (row access
policy applied). And an STS refusal reaches the user with its fix."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests.idp_fixture import TestIdP
from tests.ipython_shell import run_signed_in
from tests.servers.bigquery.fixture import BigQueryServer
from tests.servers.sts.fixture import STSServer, workforce_provider
from tests.test_consent_flow import api

pytestmark = pytest.mark.timeout(180)

PROJECT = "test-project"
POOL = "connauth-pool"
PROVIDER = workforce_provider(POOL, "test-idp")


def _provider(idp: TestIdP, **changes: Any) -> dict[str, Any]:
    return {
        "issuer": idp.issuer,
        "client_id": idp.client_id,
        "attribute_mapping": {
            "google.subject": "assertion.sub",
            "attribute.email": "assertion.email",
        },
        "attribute_condition": "assertion.email_verified == true",
        **changes,
    }


@pytest.fixture
def idp_config() -> dict[str, Any]:
    # ID tokens (the STS subject) live 10 s: the broker must refresh the grant before
    return {"id_token_ttl": 10}


@pytest.fixture
def sts(idp: TestIdP) -> Iterator[STSServer]:
    # Google tokens live 1 h; 10 s here, so the re-exchange before expiry is seen
    with STSServer({"providers": {PROVIDER: _provider(idp)}, "token_ttl": 10}) as server:
        yield server


@pytest.fixture
def bigquery(sts: STSServer) -> Iterator[BigQueryServer]:
    principal = f"principal://iam.googleapis.com/locations/global/workforcePools/{POOL}/subject"
    config = {
        "project": PROJECT,
        "sts_tokeninfo_url": f"{sts.endpoint}/__test__/tokeninfo",
        # IAM bindings for two workforce principals; carol has none
        "users": {f"{principal}/alice": ["demo"], f"{principal}/bob": ["demo"]},
    }
    with BigQueryServer(config) as srv:
        yield srv


@pytest.fixture
def connections(bigquery: BigQueryServer, sts: STSServer) -> dict[str, Any]:
    return {
        "bq": {
            "connector": "bigquery",
            "project": PROJECT,
            "workforce_pool_provider": PROVIDER,
            "sts_url": sts.token_url,
            "user_project": PROJECT,
            "driver_options": {
                "client_options": {"api_endpoint": bigquery.endpoint},
                "use_storage_api": False,
                "retry_deadline": 20,
            },
        }
    }


async def test_federated_query_as_each_user(
    shell, jp_fetch, broker, jp_serverapp, consent_as_other_user, sts, bigquery, idp
):
    cell = "%%sql_connector bq -o df\nSELECT owner, amount FROM demo.sales"
    await run_signed_in(shell, cell)
    assert set(shell.ip.user_ns["df"]["owner"]) == {"alice@example.com"}

    # the broker asked STS as Google documents it, with the ID token as the subject
    (entry,) = [e for e in sts.stats()["log"] if e["error"] is None][:1]
    assert entry["audience"] == PROVIDER
    assert entry["subject_token_type"] == "urn:ietf:params:oauth:token-type:id_token"
    assert entry["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert entry["scope"] == "https://www.googleapis.com/auth/bigquery"
    assert json.loads(entry["options"]) == {"userProject": PROJECT}
    assert entry["authorization_header"] is False
    # what the kernel got is a Google token, not the IdP's
    answer = await api(jp_fetch, "connections", "bq", "token", method="POST")
    assert answer["access_token"].startswith("ya29.")
    exchanges = sts.stats()["exchanges"]
    await api(jp_fetch, "connections", "bq", "token", method="POST")
    assert sts.stats()["exchanges"] == exchanges, "the Google token is reused until it expires"
    refreshes = idp.token_requests("refresh_token")
    await asyncio.sleep(5.2)  # past min(leeway, half the lifetime) before expiry
    again = await api(jp_fetch, "connections", "bq", "token", method="POST")
    assert sts.stats()["exchanges"] == exchanges + 1, "exchanged again before it expires"
    # the subject was renewed before its ID token expired, and that is what STS got
    assert idp.token_requests("refresh_token") > refreshes
    assert sts.stats()["errors"] == {}
    assert again["access_token"] != answer["access_token"]
    assert again["expires_at"] > answer["expires_at"]

    bob = await broker.token("bob", "bq")
    assert "Authorized as" in await consent_as_other_user(bob.authorize_url, "bob")
    warehouse = jp_serverapp.web_app.settings["connauth_warehouse"]
    table = await warehouse.call("bob", "bq", "query_arrow", "SELECT owner FROM demo.sales")
    assert set(table.column("owner").to_pylist()) == {"bob@example.com"}
    assert bigquery.stats()["unauthenticated"] == 0


async def _token_error(jp_fetch: Any) -> dict[str, Any]:
    """The token API's error answer for the connection."""
    with pytest.raises(HTTPClientError) as e:
        await api(jp_fetch, "connections", "bq", "token", method="POST")
    assert e.value.response is not None
    body: dict[str, Any] = json.loads(e.value.response.body)
    return body


async def test_sts_refusal_names_the_fix(jp_fetch, consent, sts, idp):
    sts.set_provider(PROVIDER, _provider(idp, attribute_condition="'admins' in assertion.groups"))
    answer = await api(jp_fetch, "connections", "bq", "token", method="POST")
    await consent(answer["authorize_url"], "alice")
    body = await _token_error(jp_fetch)
    assert body["error"] == "sts_unauthorized_client"
    assert "rejected by the attribute condition" in body["message"]
    assert "--attribute-condition" in body["fix"]
    assert f"--workforce-pool={POOL}" in body["fix"]

    sts.set_provider(PROVIDER, _provider(idp, client_id="some-other-app"))
    body = await _token_error(jp_fetch)
    assert body["error"] == "sts_invalid_grant"
    assert "--client-id" in body["fix"]


async def test_idp_token_is_refused_by_federated_bigquery(bigquery, idp, redirect_uri):
    from google.auth.exceptions import RefreshError

    from tests.test_idp import Flow

    flow = Flow(idp, "openid email")
    flow.oauth.redirect_uri = redirect_uri
    try:
        token = await asyncio.to_thread(flow.login)
    finally:
        flow.close()
    client = bigquery.client(token["id_token"])
    with pytest.raises(RefreshError):  # google-auth's answer to a 401 it cannot refresh
        await asyncio.to_thread(lambda: list(client.query("SELECT 1").result()))
    assert bigquery.stats()["unauthenticated"] >= 1


async def test_principal_without_iam_binding_is_told_the_member(
    broker, jp_serverapp, consent_as_other_user
):
    from jupyter_connauth.core.errors import AccessDenied

    carol = await broker.token("carol", "bq")
    assert "Authorized as" in await consent_as_other_user(carol.authorize_url, "carol")
    warehouse = jp_serverapp.web_app.settings["connauth_warehouse"]
    with pytest.raises(AccessDenied) as e:
        await warehouse.call("carol", "bq", "query_arrow", "SELECT owner FROM demo.sales")
    assert "bigquery.jobs.create" in e.value.message
    assert "principal://iam.googleapis.com/locations/global/workforcePools/POOL" in (
        e.value.fix or ""
    )


async def test_doctor_names_the_provider_settings_and_the_iam_member(jp_fetch, idp):
    doctor = await api(jp_fetch, "connections", "bq", "doctor")
    checks = {c["check"]: c for c in doctor["checks"]}
    provider = checks["workforce pool provider"]
    assert PROVIDER in provider["detail"]
    assert f"--issuer-uri={idp.issuer}" in provider["fix"]
    assert f"--client-id={idp.client_id}" in provider["fix"]
    iam = checks["IAM for the workforce"]
    assert f"workforcePools/{POOL}/*" in iam["fix"]
