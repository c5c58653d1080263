"""The local Google STS answers like sts.googleapis.com (see README.md): a valid
exchange, and each refusal with Google's error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.idp_fixture import TestIdP, running_idp
from tests.servers.sts.fixture import STSServer, workforce_provider

PROVIDER = workforce_provider("pool-one", "idp-one")
BASE = {
    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
    "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
    "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
    "audience": PROVIDER,
    "scope": "https://www.googleapis.com/auth/cloud-platform",
}


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[TestIdP, STSServer, dict[str, str]]]:
    from tests.test_idp import Flow

    with running_idp() as idp:
        flow = Flow(idp, "openid email")
        tokens = flow.login()
        flow.close()
        provider = {"issuer": idp.issuer, "client_id": idp.client_id}
        with STSServer({"providers": {PROVIDER: provider}}) as sts:
            yield idp, sts, tokens


def _post(sts: STSServer, **data: Any) -> httpx2.Response:
    return httpx2.post(sts.token_url, data=data, trust_env=False, timeout=10)


def test_exchange_and_tokeninfo(env: Any) -> None:
    _idp, sts, tokens = env
    r = _post(sts, subject_token=tokens["id_token"], options='{"userProject": "p1"}', **BASE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["issued_token_type"] == BASE["requested_token_type"]
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    info = httpx2.get(
        f"{sts.endpoint}/__test__/tokeninfo",
        params={"access_token": body["access_token"]},
        trust_env=False,
    ).json()
    assert info["principal"].endswith("/workforcePools/pool-one/subject/alice")
    assert info["user_project"] == "p1"
    # JSON bodies with the proto field names work as well
    json_body = {
        "grantType": BASE["grant_type"],
        "requestedTokenType": BASE["requested_token_type"],
        "subjectTokenType": BASE["subject_token_type"],
        "audience": PROVIDER,
        "scope": BASE["scope"],
        "subjectToken": tokens["id_token"],
    }
    assert httpx2.post(sts.token_url, json=json_body, trust_env=False).status_code == 200


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"audience": "projects/1/providers/x"}, "invalid_request", 'Invalid value for "audience"'),
        (
            {"audience": workforce_provider("pool-one", "nope")},
            "invalid_target",
            "disabled or deleted",
        ),
        ({"scope": "openid"}, "invalid_scope", "openid"),
        ({"grant_type": "refresh_token"}, "unsupported_grant_type", "grant"),
        ({"requested_token_type": "x"}, "invalid_request", "requested_token_type"),
        ({"subject_token": "not-a-jwt"}, "invalid_grant", "parse"),
        ({"use_access_token": True}, "invalid_grant", "audience"),
    ],
)
def test_refusals(env: Any, change: dict[str, Any], error: str, words: str) -> None:
    _idp, sts, tokens = env
    data = {**BASE, "subject_token": tokens["id_token"], **change}
    if data.pop("use_access_token", False):  # its aud is the API, not the client id
        data["subject_token"] = tokens["access_token"]
    r = _post(sts, **data)
    assert r.status_code == 400
    assert r.json()["error"] == error
    assert words in r.json()["error_description"]


def test_provider_settings_are_enforced(env: Any) -> None:
    idp, sts, tokens = env
    other = workforce_provider("pool-two", "idp-two")
    cases = [
        ({"attribute_condition": "assertion.email == 'bob@example.com'"}, "unauthorized_client"),
        ({"attribute_mapping": {"google.subject": "assertion.upn"}}, "invalid_request"),
        ({"issuer": "https://login.example.com"}, "invalid_grant"),
        ({"disabled": True}, "invalid_target"),
    ]
    for settings, error in cases:
        sts.set_provider(other, {"issuer": idp.issuer, "client_id": idp.client_id, **settings})
        r = _post(sts, **{**BASE, "audience": other, "subject_token": tokens["id_token"]})
        assert (r.status_code, r.json()["error"]) == (400, error), settings
