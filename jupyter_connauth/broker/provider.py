"""One identity provider as configured: its settings, checked, and its client.

The top-level ``c.ConnAuth`` settings are the default provider; each entry of
``c.ConnAuth.providers`` is another (:func:`provider_settings`). Every problem is a
:class:`ConfigError` naming the setting, kept to be shown at use, never raised at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from ..core.errors import ConfigError
from ..oauth.client import IdPClient
from ..oauth.flavours import AUTH_METHODS, IdPFlavour, flavour_of, named
from ..oauth.flavours.azure import Azure
from ..oauth.rfc7523 import PrivateKeyJWT, load_private_key

DEFAULT_PROVIDER = ""
#: Keys of a c.ConnAuth.providers entry.
PROVIDER_KEYS = (
    "discovery_url",
    "client_id",
    "client_secret",
    "flavour",
    "token_endpoint_auth_method",
    "client_private_key_path",
    "client_private_key_id",
    "authorize_params",
    "app_api_scope",
    "allowed_tenants",
)


@dataclass
class ProviderSettings:
    name: str
    where: str  # "c.ConnAuth" or "c.ConnAuth.providers['x']", for messages
    discovery_url: str
    client_id: str
    client_secret: str = field(default="", repr=False)
    flavour: str = ""
    token_endpoint_auth_method: str = ""
    client_private_key_path: str = ""
    client_private_key_id: str = ""
    authorize_params: dict[str, str] = field(default_factory=dict)
    app_api_scope: str = ""
    allowed_tenants: tuple[str, ...] = ()


def default_settings(config: Any) -> ProviderSettings:
    """The top-level ``c.ConnAuth`` settings: the default provider."""
    return ProviderSettings(
        name=DEFAULT_PROVIDER,
        where="c.ConnAuth",
        **{k: _value(getattr(config, k)) for k in PROVIDER_KEYS},
    )


def provider_settings(name: str, raw: Any, config: Any) -> ProviderSettings:
    """One ``c.ConnAuth.providers`` entry; what it leaves out comes from the default
    provider only for settings that are not the IdP's own (ca, tenants)."""
    where = f"c.ConnAuth.providers[{name!r}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a dict of provider settings")
    unknown = sorted(set(raw) - set(PROVIDER_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}",
            "unknown provider setting",
            f"known settings: {', '.join(PROVIDER_KEYS)}",
        )
    values = {k: _value(raw.get(k, "" if k != "authorize_params" else {})) for k in PROVIDER_KEYS}
    if not raw.get("allowed_tenants"):
        values["allowed_tenants"] = tuple(config.allowed_tenants)
    return ProviderSettings(name=name, where=where, **values)


def _value(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): str(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return tuple(str(x) for x in v)
    return "" if v is None else v


@dataclass
class Provider:
    settings: ProviderSettings
    flavour: IdPFlavour
    idp: IdPClient
    error: ConfigError | None

    @property
    def name(self) -> str:
        return self.settings.name

    def subject_scopes(self) -> tuple[str, ...] | None:
        """The default consent of a pass-through subject, where the flavour has one."""
        s = self.settings
        if isinstance(self.flavour, Azure) and s.client_id:
            if s.app_api_scope:
                return ("openid", "email", "offline_access", s.app_api_scope)
            return self.flavour.subject_scopes(s.client_id)
        return None


def build_provider(
    s: ProviderSettings,
    *,
    timeout: float,
    ca_bundle: str,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> Provider:
    error: ConfigError | None = None
    try:
        flavour = flavour_of(s.flavour, s.discovery_url, f"{s.where}.flavour")
    except ConfigError as e:
        flavour, error = named("oidc"), e
    key: PrivateKeyJWT | None = None
    try:
        _check(s)
        key = _private_key(s)
    except ConfigError as e:
        error = error or e
    kwargs: dict[str, Any] = {
        "timeout": timeout,
        "transport": transport,
        "auth_method": s.token_endpoint_auth_method if error is None else "",
        "private_key": key,
        "flavour": flavour,
        "allowed_tenants": s.allowed_tenants,
    }
    try:
        idp = IdPClient(
            s.discovery_url, s.client_id, s.client_secret, ca_bundle=ca_bundle, **kwargs
        )
    except ConfigError as e:  # an unreadable ca_bundle: reported at use
        error = error or e
        idp = IdPClient(s.discovery_url, s.client_id, s.client_secret, **kwargs)
    return Provider(s, flavour, idp, error)


def _check(s: ProviderSettings) -> None:
    env = "" if s.name else " (or JUPYTER_CONNAUTH_DISCOVERY_URL)"
    if not s.discovery_url:
        raise ConfigError(
            f"{s.where}.discovery_url",
            "not set",
            f"set it{env} to your IdP's /.well-known/openid-configuration URL",
        )
    if not s.client_id:
        env = "" if s.name else " (or JUPYTER_CONNAUTH_CLIENT_ID)"
        raise ConfigError(
            f"{s.where}.client_id", "not set", f"set it{env} to the IdP app's client id"
        )
    method = s.token_endpoint_auth_method
    if method and method not in AUTH_METHODS:
        raise ConfigError(
            f"{s.where}.token_endpoint_auth_method",
            f"unknown method {method!r}",
            f"use one of: {', '.join(AUTH_METHODS)}",
        )
    if method in ("client_secret_basic", "client_secret_post") and not s.client_secret:
        raise ConfigError(
            f"{s.where}.client_secret", f"not set, and {method} needs it", "set the secret"
        )
    if method == "private_key_jwt" and not s.client_private_key_path:
        raise ConfigError(
            f"{s.where}.client_private_key_path",
            "not set, and private_key_jwt needs the app's private key",
            "set it to the PEM file whose public key is registered at the IdP app",
        )


def _private_key(s: ProviderSettings) -> PrivateKeyJWT | None:
    if not s.client_private_key_path or s.token_endpoint_auth_method not in (
        "",
        "private_key_jwt",
    ):
        return None
    where = f"{s.where}.client_private_key_path"
    try:
        pem = Path(s.client_private_key_path).read_bytes()
    except OSError as e:
        raise ConfigError(
            where, f"cannot be read ({type(e).__name__})", "check the path and permissions"
        ) from None
    try:
        key = load_private_key(pem)
    except ValueError:
        raise ConfigError(
            where, "is not an RSA or EC private key in PEM", "export the key as PEM"
        ) from None
    return PrivateKeyJWT(key, kid=s.client_private_key_id or None)
