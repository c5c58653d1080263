"""Connection definitions: validation of the per-name dicts admins write in config.

``c.ConnAuth.connections = {"sales": {"connector": "snowflake", "account": "acme-xy1",
"warehouse": "WH", "database": "SALES", "role": "ANALYST"}}`` becomes a
:class:`ConnectionSpec`; every problem is reported as a :class:`ConfigError` naming the
exact field, never as a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from ..oauth.google_sts import (
    BIGQUERY_SCOPE,
    ID_TOKEN_TYPE,
    STS_URL,
    SUBJECT_TOKEN_TYPES,
    WORKFORCE_PROVIDER_RE,
)
from .errors import ConfigError
from .flavours import EXCHANGE_MODES, SUBJECT_SCOPES, Flavour, default_scopes
from .scopes import parse_scopes, scope_fingerprint

Source = Literal["config", "api"]

CONNECTORS: dict[str, dict[str, tuple[str, ...]]] = {
    # connector: {"required": (...), "optional": (...)}
    "bigquery": {"required": ("project",), "optional": ("location", "dataset")},
    "databricks": {"required": ("server_hostname", "http_path"), "optional": ("catalog", "schema")},
    "snowflake": {
        "required": ("account",),
        "optional": ("warehouse", "database", "schema", "role", "host"),
    },
}

AUTH_MODES = ("oauth", "oauth-jwt", "on-behalf-of", "token-exchange")

#: BigQuery through Workforce Identity Federation (the IdP token exchanged at Google STS).
FEDERATION_KEYS = ("workforce_pool_provider", "sts_url", "subject_token_type", "user_project")

#: Keys every connection may carry, whatever its connector.
COMMON_KEYS = frozenset(
    {
        "connector",
        "auth",
        "scopes",
        "resource",
        "description",
        "driver_options",
        # Snowflake OAuth (JWT)
        "jwt_audience",
        "jwt_user_claim",
        "jwt_public_key_fp",
        "private_key_path",
        "private_key_env",
        # pass-through
        "subject_scopes",
        # which of c.ConnAuth.providers issues the tokens (default: the top-level IdP)
        "provider",
    }
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ConnectionSpec:
    """One validated connection."""

    name: str
    connector: str
    auth: str
    scopes: tuple[str, ...]
    params: Mapping[str, Any]
    resource: str | None = None
    description: str = ""
    driver_options: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    source: Source = "config"
    #: The pass-through subject's consent when ``subject_scopes`` is unset (the
    #: provider's flavour: Azure asks for the app's own API).
    subject_default: tuple[str, ...] = SUBJECT_SCOPES

    @property
    def provider(self) -> str:
        """The name in c.ConnAuth.providers, or "" for the top-level IdP."""
        return str(self.extra.get("provider") or "")

    @property
    def exchanges(self) -> bool:
        """Pass-through: the stored token is a subject, exchanged for the warehouse's."""
        return self.auth in EXCHANGE_MODES

    @property
    def federated(self) -> bool:
        """BigQuery through Workforce Identity Federation (exchanged at Google STS)."""
        return bool(self.extra.get("workforce_pool_provider"))

    @property
    def consent_scopes(self) -> tuple[str, ...]:
        """What the user consents to: the warehouse scopes, or the subject's for exchanges."""
        if self.exchanges:
            return parse_scopes(self.extra.get("subject_scopes")) or self.subject_default
        return self.scopes

    @property
    def consent_resource(self) -> str | None:
        """The resource indicator of the consent request (exchanges name it later)."""
        return None if self.exchanges else self.resource

    @property
    def fingerprint(self) -> str:
        """Changes whenever the consent a token was granted under no longer applies."""
        extra = " ".join(self.consent_scopes) if self.exchanges else None
        provider = (self.provider,) if self.provider else ()
        return scope_fingerprint(self.scopes, self.resource, self.auth, extra, *provider)

    def kernel_info(self) -> dict[str, Any]:
        """What a kernel needs to open the driver connection (no secrets)."""
        return {
            "name": self.name,
            "connector": self.connector,
            "auth": self.auth,
            "params": dict(self.params),
            "driver_options": dict(self.driver_options),
        }

    def public_dict(self) -> dict[str, Any]:
        """Everything about the connection that any user may see (no secrets)."""
        out: dict[str, Any] = {
            "name": self.name,
            "connector": self.connector,
            "auth": self.auth,
            "scopes": list(self.scopes),
            "params": dict(self.params),
            "description": self.description,
            "source": self.source,
            "editable": self.source == "api",
        }
        if self.resource:
            out["resource"] = self.resource
        # Non-secret settings, so an edit form can send the whole definition back.
        for key in (
            "jwt_audience",
            "jwt_user_claim",
            "jwt_public_key_fp",
            "subject_scopes",
            "private_key_path",
            "private_key_env",
            *FEDERATION_KEYS,
            "provider",
        ):
            if key in self.extra:
                out[key] = self.extra[key]
        if self.driver_options:
            out["driver_options"] = dict(self.driver_options)
        if self.auth == "oauth-jwt":
            out["private_key_configured"] = bool(
                self.extra.get("private_key_path")
                or self.extra.get("private_key_env")
                or self.extra.get("private_key_stored")
            )
        return out


def _where(name: str, key: str | None = None) -> str:
    base = f"c.ConnAuth.connections[{name!r}]"
    return f"{base}.{key}" if key else base


def parse_connection(
    name: str,
    raw: Mapping[str, Any],
    flavour: Flavour,
    *,
    source: Source = "config",
    subject_default: tuple[str, ...] | None = None,
) -> ConnectionSpec:
    """Validate one connection dict; raises :class:`ConfigError` naming the field.
    ``flavour`` is that of the connection's provider."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError(
            _where(str(name)),
            "a connection name must be 1-64 letters, digits, '_', '-' or '.'",
            "rename the connection, e.g. 'sales' or 'bq-finance'",
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(_where(name), "must be a dict of connection settings")
    connector = raw.get("connector")
    if connector not in CONNECTORS:
        raise ConfigError(
            _where(name, "connector"),
            f"unknown connector {connector!r}",
            f"use one of: {', '.join(CONNECTORS)}",
        )
    federated = raw.get("workforce_pool_provider") not in (None, "")
    auth = raw.get("auth", "token-exchange" if federated else "oauth")
    if auth not in AUTH_MODES:
        raise ConfigError(
            _where(name, "auth"),
            f"unknown auth mode {auth!r}",
            f"use one of: {', '.join(AUTH_MODES)}",
        )
    if auth == "oauth-jwt" and connector != "snowflake":
        raise ConfigError(
            _where(name, "auth"),
            "OAuth (JWT) is only available for Snowflake",
            "use auth 'oauth' for this connector",
        )
    spec = CONNECTORS[connector]
    allowed = COMMON_KEYS | set(spec["required"]) | set(spec["optional"])
    if connector == "bigquery":
        allowed |= set(FEDERATION_KEYS)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            _where(name, unknown[0]),
            f"unknown setting for a {connector} connection",
            f"known settings: {', '.join(sorted(allowed))}",
        )
    params: dict[str, Any] = {}
    for key in spec["required"]:
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                _where(name, key),
                f"missing: a {connector} connection needs {', '.join(spec['required'])}",
                f"set {key!r} in the connection",
            )
        params[key] = value.strip()
    for key in spec["optional"]:
        if raw.get(key) not in (None, ""):
            if not isinstance(raw[key], str):
                raise ConfigError(_where(name, key), "must be a string")
            params[key] = raw[key]

    if "scopes" in raw and raw["scopes"] not in (None, "", []):
        if not isinstance(raw["scopes"], str | list | tuple):
            raise ConfigError(_where(name, "scopes"), "must be a space-separated string or a list")
        scopes = parse_scopes(raw["scopes"])
    elif federated:
        scopes = (BIGQUERY_SCOPE,)  # asked of Google STS, whatever the IdP
    else:
        template = default_scopes(connector, flavour, auth)
        if template is None:
            raise ConfigError(
                _where(name, "scopes"),
                f"there is no default scope for {connector} with an {flavour} IdP",
                "set 'scopes', e.g. "
                "'api://<your-snowflake-app-id>/session:scope-any offline_access'",
            )
        scopes = template
    driver_options = raw.get("driver_options") or {}
    if not isinstance(driver_options, Mapping):
        raise ConfigError(_where(name, "driver_options"), "must be a dict of driver arguments")
    resource = raw.get("resource") or None
    if resource is not None and not isinstance(resource, str):
        raise ConfigError(_where(name, "resource"), "must be a URL string (RFC 8707)")
    extra = {
        k: raw[k]
        for k in COMMON_KEYS
        - {"connector", "auth", "scopes", "resource", "description", "driver_options"}
        if k in raw
    }
    extra.update(_federation(name, raw, auth))
    if auth == "oauth-jwt" and not extra.get("jwt_audience"):
        raise ConfigError(
            _where(name, "jwt_audience"),
            "OAuth (JWT) needs the JWT Audience the Snowflake security integration expects",
            "set 'jwt_audience' to the EXTERNAL_OAUTH_AUDIENCE_LIST value",
        )
    return ConnectionSpec(
        name=name,
        connector=connector,
        auth=auth,
        scopes=scopes,
        params=params,
        resource=resource,
        description=str(raw.get("description") or ""),
        driver_options=dict(driver_options),
        extra=extra,
        source=source,
        subject_default=subject_default or SUBJECT_SCOPES,
    )


def _federation(name: str, raw: Mapping[str, Any], auth: str) -> dict[str, str]:
    """The Workforce Identity Federation settings of a BigQuery connection, validated."""
    present = {k: raw[k] for k in FEDERATION_KEYS if raw.get(k) not in (None, "")}
    if not present:
        return {}
    for key, value in present.items():
        if not isinstance(value, str):
            raise ConfigError(_where(name, key), "must be a string")
    provider = present.get("workforce_pool_provider")
    if provider is None:
        raise ConfigError(
            _where(name, "workforce_pool_provider"),
            f"missing: {', '.join(sorted(present))} only apply with Workforce Identity Federation",
            "set workforce_pool_provider to "
            "//iam.googleapis.com/locations/global/workforcePools/POOL/providers/PROVIDER",
        )
    if not WORKFORCE_PROVIDER_RE.match(provider):
        raise ConfigError(
            _where(name, "workforce_pool_provider"),
            "is not a workforce pool provider's full resource name",
            "use //iam.googleapis.com/locations/global/workforcePools/POOL/providers/PROVIDER "
            "(gcloud iam workforce-pools providers describe PROVIDER --workforce-pool=POOL "
            "--location=global shows its name)",
        )
    if auth != "token-exchange":
        raise ConfigError(
            _where(name, "auth"),
            "a connection through Workforce Identity Federation exchanges the IdP token at "
            "Google STS",
            "remove 'auth' or set it to 'token-exchange'",
        )
    kind = present.get("subject_token_type", ID_TOKEN_TYPE)
    if kind not in SUBJECT_TOKEN_TYPES:
        raise ConfigError(
            _where(name, "subject_token_type"),
            f"unknown subject token type {kind!r}",
            f"use one of: {', '.join(SUBJECT_TOKEN_TYPES)}",
        )
    subject_scopes = parse_scopes(raw.get("subject_scopes")) or SUBJECT_SCOPES
    if kind == ID_TOKEN_TYPE and "openid" not in subject_scopes:
        raise ConfigError(
            _where(name, "subject_scopes"),
            "an ID token subject needs the openid scope",
            "add openid to subject_scopes",
        )
    url = present.get("sts_url", STS_URL)
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise ConfigError(
            _where(name, "sts_url"),
            "must be an https URL",
            f"remove it to use {STS_URL}",
        )
    return {**present, "subject_token_type": kind, "sts_url": url}
