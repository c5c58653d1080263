"""Connection settings for BigQuery through Workforce Identity Federation: defaults and
the errors that name the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_connauth.core.connections import parse_connection
from jupyter_connauth.core.errors import ConfigError

PROVIDER = "//iam.googleapis.com/locations/global/workforcePools/corp-pool/providers/entra"
BQ = {"connector": "bigquery", "project": "p"}


@pytest.mark.parametrize("flavour", ["oidc", "azure"])
def test_federated_bigquery_defaults(flavour: Any) -> None:
    spec = parse_connection("bq", {**BQ, "workforce_pool_provider": PROVIDER}, flavour)
    assert spec.federated and spec.auth == "token-exchange"
    # the scope asked of Google STS, not an IdP scope (no .default on Azure)
    assert spec.scopes == ("https://www.googleapis.com/auth/bigquery",)
    assert spec.consent_scopes == ("openid", "email", "offline_access")
    assert spec.extra["subject_token_type"] == "urn:ietf:params:oauth:token-type:id_token"
    assert spec.extra["sts_url"] == "https://sts.googleapis.com/v1/token"
    public = spec.public_dict()
    assert public["workforce_pool_provider"] == PROVIDER
    assert "workforce_pool_provider" not in spec.kernel_info()["params"]


def test_unfederated_bigquery_is_unchanged() -> None:
    spec = parse_connection("bq", BQ, "azure")
    assert not spec.federated and spec.auth == "oauth"


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"workforce_pool_provider": "projects/1/pools/x"}, "workforce_pool_provider", "full"),
        ({"workforce_pool_provider": PROVIDER, "auth": "oauth"}, ".auth", "token-exchange"),
        ({"user_project": "p"}, "workforce_pool_provider", "missing"),
        (
            {"workforce_pool_provider": PROVIDER, "sts_url": "http://sts.example.com/v1/token"},
            "sts_url",
            "https",
        ),
        (
            {"workforce_pool_provider": PROVIDER, "subject_token_type": "id_token"},
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:jwt",
        ),
        (
            {"workforce_pool_provider": PROVIDER, "subject_scopes": "email offline_access"},
            "subject_scopes",
            "openid",
        ),
    ],
)
def test_bad_federation_settings_name_the_field(
    extra: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_connection("bq", {**BQ, **extra}, "oidc")
    assert field in str(e.value)
    assert words in str(e.value)


def test_federation_is_for_bigquery_only() -> None:
    raw = {"connector": "databricks", "server_hostname": "h", "http_path": "/p"}
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_connection("d", {**raw, "workforce_pool_provider": PROVIDER}, "oidc")
