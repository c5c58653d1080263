"""An IdP without RFC 8628 (no device_authorization_endpoint in its discovery): the
device-code consent is refused with the fix, and doctor says so."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests.test_consent_flow import api


@pytest.fixture
def idp_config() -> dict[str, Any]:
    return {"device_flow": False}


async def test_no_device_endpoint_is_said_with_the_fix(jp_fetch, idp):
    assert "device_authorization_endpoint" not in idp.discovery()
    checks = (await api(jp_fetch, "connections", "sales", "doctor"))["checks"]
    device = next(c for c in checks if c["check"] == "device code")
    assert "no device_authorization_endpoint" in device["detail"]
    assert "enable the device code flow" in device["fix"]

    with pytest.raises(HTTPClientError) as e:
        await api(
            jp_fetch, "connections", "sales", "authorize", method="POST", body={"method": "device"}
        )
    assert e.value.code == 400
    body = json.loads(e.value.response.body)
    assert body["error"] == "device_flow_unsupported"
    assert "device authorization endpoint" in body["fix"]
    # the browser consent still works with this IdP
    answer = await api(jp_fetch, "connections", "sales", "authorize", method="POST")
    assert answer["status"] == "consent_required"
