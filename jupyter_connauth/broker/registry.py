"""The connections the broker knows: read-only ones from config, editable ones from the API."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..core.connections import NAME_RE, ConnectionSpec, Source, parse_connection
from ..core.errors import AccessDenied, ConfigError, ConnectionNotFound
from ..core.flavours import Flavour
from .store import TokenStore

#: A provider's name → its flavour and the default pass-through subject scopes.
ProviderInfo = tuple[Flavour, tuple[str, ...] | None]

log = logging.getLogger(__name__)

#: Keys an API client may never send: secrets go through their own field.
_SECRET_FIELDS = ("private_key", "private_key_pem")


class ConnectionRegistry:
    def __init__(
        self,
        configured: Mapping[str, Any],
        providers: Mapping[str, ProviderInfo],
        store: TokenStore,
        *,
        allow_api: bool = True,
    ) -> None:
        self.providers = dict(providers)
        self.flavour = self.providers[""][0]
        self.store = store
        self.allow_api = allow_api
        self.errors: dict[str, ConfigError] = {}
        self._config: dict[str, ConnectionSpec] = {}
        for name, raw in configured.items():
            try:
                self._config[name] = self._parse(name, raw, "config")
            except ConfigError as e:
                self.errors[name] = e
                log.error("jupyter-connauth: %s", e)
        self._api: dict[str, ConnectionSpec] = {}
        self.reload()

    def reload(self) -> None:
        api: dict[str, ConnectionSpec] = {}
        for name, raw in self.store.connection_defs().items():
            if name in self._config or name in self.errors:
                continue
            try:
                api[name] = self._parse(name, raw, "api")
            except ConfigError as e:
                self.errors[name] = e
        self._api = api

    def _parse(self, name: str, raw: Mapping[str, Any], source: Source) -> ConnectionSpec:
        """:func:`parse_connection` with the flavour of the connection's provider."""
        provider = raw.get("provider") if isinstance(raw, Mapping) else None
        info = self.providers.get(provider or "")
        if info is None:
            known = ", ".join(repr(p) for p in self.providers if p) or "none configured"
            raise ConfigError(
                f"c.ConnAuth.connections[{name!r}].provider",
                f"unknown provider {provider!r}",
                f"use a name of c.ConnAuth.providers ({known}), or leave it out for the "
                "top-level IdP",
            )
        flavour, subject = info
        return parse_connection(name, raw, flavour, source=source, subject_default=subject)

    def all(self) -> dict[str, ConnectionSpec]:
        return {**self._api, **self._config}

    def names(self) -> list[str]:
        return sorted({*self._config, *self._api, *self.errors})

    def get(self, name: str) -> ConnectionSpec:
        spec = self._config.get(name) or self._api.get(name)
        if spec is not None:
            return spec
        if name in self.errors:
            raise self.errors[name]
        raise ConnectionNotFound(name, self.names())

    # -- API-defined connections -----------------------------------------------
    def _check_editable(self, name: str) -> None:
        if not self.allow_api:
            raise AccessDenied(
                "Connections cannot be edited here.",
                "an admin enabled c.ConnAuth.allow_api_connections = False; edit the config",
            )
        if name in self._config or (name in self.errors and name not in self._api):
            raise AccessDenied(
                f"Connection {name!r} comes from the server's configuration and is read-only.",
                "edit c.ConnAuth.connections in jupyter_server_config.py, or use another name",
            )

    def create(self, name: str, raw: Mapping[str, Any]) -> ConnectionSpec:
        if not NAME_RE.fullmatch(name):  # NAME_RE's "$" would let "name\n" through
            bad = ConfigError(
                "name",
                "a connection name must be 1-64 letters, digits, '_', '-' or '.'",
                "rename the connection, e.g. 'sales' or 'bq-finance'",
            )
            bad.status = 400  # the client's input, not the server's config
            raise bad
        self._check_editable(name)
        if name in self._api:
            raise AccessDenied(
                f"Connection {name!r} already exists.", "edit it, or choose another name"
            )
        return self._save(name, raw)

    def update(self, name: str, raw: Mapping[str, Any]) -> tuple[ConnectionSpec, bool]:
        """Returns the new spec and whether the consent fingerprint changed."""
        self._check_editable(name)
        old = self._api.get(name)
        if old is None:
            raise ConnectionNotFound(name, self.names())
        spec = self._save(name, raw)
        return spec, spec.fingerprint != old.fingerprint

    def _save(self, name: str, raw: Mapping[str, Any]) -> ConnectionSpec:
        clean = {k: v for k, v in raw.items() if k not in _SECRET_FIELDS and k != "name"}
        try:
            spec = self._parse(name, clean, "api")
        except ConfigError as e:
            e.status = 400  # the client's input, not the server's config
            raise
        self.store.put_connection_def(name, clean)
        self.errors.pop(name, None)
        self._api[name] = spec
        return spec

    def delete(self, name: str) -> None:
        self._check_editable(name)
        if not self.store.delete_connection_def(name):
            raise ConnectionNotFound(name, self.names())
        self.store.delete_secret(f"connection:{name}:private_key")
        self._api.pop(name, None)
        self.errors.pop(name, None)
