"""Who a request comes from, as JupyterHub knows them.

The hub authenticates the request (the service's OAuth cookie, or a token such as the
user's server's ``JUPYTERHUB_API_TOKEN``); this module then reads the user's full model
with the service's own token: the admin flag, groups and, with ``enable_auth_state``,
the authenticator's ``auth_state``: the verified email and the login access token used
as the subject for pass-through. Nothing here comes from the user's server.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any
from urllib.parse import quote

import httpx2

from ..broker.principal import Principal
from ..core.errors import ConnAuthError
from ..core.redact import remember

log = logging.getLogger(__name__)


#: The hub's user as the broker sees them (a :class:`Principal` read from the hub's model).
HubIdentity = Principal


def jwt_expiry(token: str) -> float | None:
    """``exp`` of a JWT access token (unverified: only to decide whether it is stale)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def identity_from_model(
    model: dict[str, Any],
    *,
    email_claim: str = "email",
    email_map: dict[str, str] | None = None,
    email_template: str = "",
) -> HubIdentity:
    """A :class:`HubIdentity` from a hub user model (with ``auth_state`` when readable)."""
    name = str(model["name"])
    auth_state = model.get("auth_state") or {}
    email: str | None = None
    if email_map and name in email_map:
        email = email_map[name]
    else:
        for key in ("oauth_user", "user", "userinfo"):
            info = auth_state.get(key)
            if isinstance(info, dict) and isinstance(info.get(email_claim), str):
                if info.get("email_verified") is not False:
                    email = info[email_claim]
                break
        if email is None and email_template:
            email = email_template.format(username=name)
    token = auth_state.get("access_token")
    login_token = token if isinstance(token, str) and token else None
    remember(login_token)  # the exchanges' subject: masked in any text (core/redact.py)
    expires_at = jwt_expiry(login_token) if login_token else None
    response = auth_state.get("token_response")
    if expires_at is None and login_token and isinstance(response, dict):
        expires_at = _expiry_from_response(response)
    infos = (auth_state.get(k) for k in ("oauth_user", "user", "userinfo"))
    claims = next((dict(i) for i in infos if isinstance(i, dict)), {})
    return HubIdentity(
        name=name,
        claims=claims,
        admin=bool(model.get("admin")),
        groups=[str(g) for g in model.get("groups") or []],
        email=email,
        login_token=login_token,
        login_expires_at=expires_at,
    )


def _expiry_from_response(response: dict[str, Any]) -> float | None:
    at = response.get("expires_at")
    if isinstance(at, int | float):
        return float(at)
    return None


class HubUsers:
    """Reads user models from the hub API with the service's token, briefly cached."""

    def __init__(
        self,
        api_url: str,
        api_token: str,
        *,
        cache_ttl: float = 30.0,
        timeout: float = 10.0,
        **identity_options: Any,
    ) -> None:
        self.api_url = api_url.rstrip("/") + "/"
        self.cache_ttl = cache_ttl
        self.identity_options = identity_options
        self._http = httpx2.AsyncClient(
            headers={"Authorization": f"token {api_token}"}, timeout=timeout, trust_env=False
        )
        self._cache: dict[str, tuple[float, HubIdentity]] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)

    async def identity(self, name: str, *, leeway: float = 60.0) -> HubIdentity:
        cached = self._cache.get(name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.cache_ttl:
            ident = cached[1]
            if not ident.login_token or ident.login_token_valid(leeway):
                return ident
        model = await self.model(name)
        ident = identity_from_model(model, **self.identity_options)
        self._cache[name] = (now, ident)
        return ident

    async def model(self, name: str) -> dict[str, Any]:
        url = f"{self.api_url}users/{quote(name, safe='')}"
        try:
            resp = await self._http.get(url)
        except httpx2.HTTPError as e:
            raise ConnAuthError(
                f"The JupyterHub API is unreachable ({type(e).__name__}).",
                "is the hub running? The service reaches it at $JUPYTERHUB_API_URL",
                code="hub_unreachable",
            ) from None
        if resp.status_code == 404:
            raise ConnAuthError(f"JupyterHub has no user {name!r}.", None, code="unknown_user")
        if resp.status_code == 403:
            raise ConnAuthError(
                "The connauth service may not read JupyterHub's users.",
                "give the service a role with the scopes read:users and admin:auth_state "
                "(see docs/jupyterhub.md)",
                code="hub_forbidden",
            )
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        if "auth_state" not in data:
            log.debug("jupyter-connauth: no auth_state readable for %s", name)
        return data

    async def usernames(self) -> list[str]:
        """Every hub user's name (for the admin's overview)."""
        names: list[str] = []
        offset = 0
        while True:
            resp = await self._http.get(
                f"{self.api_url}users",
                params={"offset": offset, "limit": 200},
                headers={"Accept": "application/jupyterhub-pagination+json"},
            )
            resp.raise_for_status()
            data = resp.json()
            items = data["items"] if isinstance(data, dict) else data
            names.extend(str(u["name"]) for u in items)
            nxt = data.get("_pagination", {}).get("next") if isinstance(data, dict) else None
            if not nxt:
                return names
            offset = int(nxt["offset"])
