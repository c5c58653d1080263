"""Configuration: flavours, default scopes, validation, and broken config at run time."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_connauth.core.connections import parse_connection
from jupyter_connauth.core.errors import ConfigError
from jupyter_connauth.core.flavours import default_scopes, detect_flavour
from tests.test_consent_flow import api


@pytest.mark.parametrize(
    ("url", "flavour"),
    [
        ("https://login.microsoftonline.com/tid/v2.0/.well-known/openid-configuration", "azure"),
        ("https://LOGIN.microsoftonline.com/common/v2.0/.well-known/openid-configuration", "azure"),
        ("https://accounts.google.com/.well-known/openid-configuration", "google"),
        ("https://login.microsoftonline.com.evil.example/.well-known/openid-configuration", "oidc"),
        ("https://example.okta.com/oauth2/default/.well-known/openid-configuration", "okta"),
        ("https://okta.com.evil.example/.well-known/openid-configuration", "oidc"),
        ("https://sso.example.com/realms/acme/.well-known/openid-configuration", "keycloak"),
        ("https://accounts.google.com.evil.example/.well-known/openid-configuration", "oidc"),
        ("https://login.microsoftonline.us/tid/v2.0/.well-known/openid-configuration", "azure"),
    ],
)
def test_flavour_detection(url: str, flavour: str) -> None:
    assert detect_flavour(url) == flavour


def test_default_scope_table() -> None:
    assert default_scopes("bigquery", "oidc") == ("https://www.googleapis.com/auth/bigquery",)
    assert default_scopes("bigquery", "azure") == (
        "https://bigquery.googleapis.com/.default",
        "offline_access",
    )
    assert default_scopes("databricks", "azure") == (
        "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/user_impersonation",
        "offline_access",
    )
    assert default_scopes("databricks", "oidc") == ("offline_access",)
    spec = parse_connection("bq", {"connector": "bigquery", "project": "p"}, "azure")
    assert spec.scopes == ("https://bigquery.googleapis.com/.default", "offline_access")


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"connector": "oracle"}, "['x'].connector", "unknown connector"),
        ({"connector": "bigquery"}, "['x'].project", "needs project"),
        ({"connector": "databricks", "server_hostname": "h"}, "['x'].http_path", "missing"),
        (
            {"connector": "snowflake", "account": "a", "acount": "b"},
            "['x'].acount",
            "unknown setting",
        ),
        ({"connector": "bigquery", "project": "p", "auth": "oauth-jwt"}, "['x'].auth", "only"),
        (
            {"connector": "snowflake", "account": "a", "auth": "oauth-jwt"},
            "jwt_audience",
            "Audience",
        ),
        ({"connector": "bigquery", "project": "p", "scopes": 3}, "['x'].scopes", "string"),
    ],
)
def test_bad_connection_names_the_field(raw: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_connection("x", raw, "oidc")
    assert field in str(e.value)
    assert words in str(e.value)


def test_snowflake_on_azure_needs_explicit_scopes() -> None:
    with pytest.raises(ConfigError, match="no default scope"):
        parse_connection("sf", {"connector": "snowflake", "account": "a"}, "azure")


class TestBrokenConnection:
    @pytest.fixture
    def connections(self) -> dict[str, Any]:
        return {
            "good": {"connector": "databricks", "server_hostname": "h", "http_path": "/p"},
            "broken": {"connector": "databricks", "server_hostname": "h"},
        }

    async def test_server_starts_and_reports_it(self, jp_fetch):
        conns = {c["name"]: c for c in (await api(jp_fetch, "connections"))["connections"]}
        assert conns["good"]["status"] == "consent_required"
        assert conns["broken"]["status"] == "error"
        assert "http_path" in conns["broken"]["message"]
        with pytest.raises(HTTPClientError) as e:
            await api(jp_fetch, "connections", "broken", "token", method="POST")
        body = json.loads(e.value.response.body)
        assert body["error"] == "config_error" and "http_path" in body["message"]
        assert "Traceback" not in e.value.response.body.decode()


class TestUnreachableIdP:
    @pytest.fixture
    def connauth_config(self) -> dict[str, Any]:
        return {"discovery_url": "http://127.0.0.1:9/.well-known/openid-configuration"}

    async def test_first_use_says_what_to_fix(self, jp_fetch):
        with pytest.raises(HTTPClientError) as e:
            await api(jp_fetch, "connections", "sales", "token", method="POST")
        assert e.value.code == 502
        body = json.loads(e.value.response.body)
        assert body["error"] == "idp_unavailable"
        assert "c.ConnAuth.discovery_url" in body["fix"]


class TestMissingIdPConfig:
    @pytest.fixture
    def connauth_config(self) -> dict[str, Any]:
        return {"discovery_url": ""}

    async def test_first_use_names_the_setting(self, jp_fetch):
        info = await api(jp_fetch, "info")
        assert "discovery_url" in info["config_error"]["message"]
        with pytest.raises(HTTPClientError) as e:
            await api(jp_fetch, "connections", "sales", "token", method="POST")
        body = json.loads(e.value.response.body)
        assert body["error"] == "config_error"
        assert "c.ConnAuth.discovery_url" in body["message"]
