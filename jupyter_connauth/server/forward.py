"""Hub mode of the server extension: forward the broker API to the JupyterHub service.

On JupyterHub, the broker is the ``connauth`` hub service; a user's server holds no
store, no client secret and no private key. Its kernels and the JupyterLab sidebar
keep calling ``{base_url}connauth/api/...`` (authenticated as before: the kernel
secret, or Jupyter's own auth); this handler passes each call on to
``<service>/api/...`` with the server's ``JUPYTERHUB_API_TOKEN``, from which the
service learns the user. Hub mode is on when the service URL is configured
(``c.ConnAuthApp.hub_service_url`` or ``$JUPYTER_CONNAUTH_HUB_SERVICE_URL``) and the
server runs under JupyterHub (``$JUPYTERHUB_API_TOKEN``).
"""

from __future__ import annotations

import logging
import os
from typing import cast

import httpx2
from jupyter_server.base.handlers import JupyterHandler
from tornado import web

from ..core.errors import ConfigError, ConnAuthError
from ..web.handlers import BrokerHandler, authenticated
from .handlers import API, ServerAPIBase

log = logging.getLogger(__name__)

SERVICE_URL_ENV = "JUPYTER_CONNAUTH_HUB_SERVICE_URL"
_PASS_HEADERS = ("Content-Type",)


class HubForwarder:
    def __init__(self, service_url: str, api_token: str, *, timeout: float = 60.0) -> None:
        self.service_url = service_url.rstrip("/") + "/"
        self._http = httpx2.AsyncClient(
            base_url=self.service_url + "api/",
            headers={"Authorization": f"token {api_token}"},
            timeout=timeout,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self, method: str, path: str, query: str, body: bytes, content_type: str | None
    ) -> httpx2.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            return await self._http.request(
                method,
                path + (f"?{query}" if query else ""),
                content=body or None,
                headers=headers,
            )
        except httpx2.HTTPError as e:
            raise ConnAuthError(
                f"The JupyterHub connauth service at {self.service_url} is unreachable "
                f"({type(e).__name__}).",
                "ask the hub admin whether the connauth service is running "
                "(JupyterHub's Services menu)",
                code="hub_service_unreachable",
            ) from None


def hub_forwarder(service_url: str) -> HubForwarder | None:
    """A forwarder when hub mode is on, else None."""
    if not service_url:
        return None
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not token:
        raise ConfigError(
            "c.ConnAuthApp.hub_service_url",
            "set, but this server does not run under JupyterHub (no JUPYTERHUB_API_TOKEN)",
            f"unset it (and {SERVICE_URL_ENV}) outside JupyterHub",
        )
    return HubForwarder(service_url, token)


class ForwardHandler(BrokerHandler, ServerAPIBase):
    @property
    def forwarder(self) -> HubForwarder:
        return cast(HubForwarder, self.settings["connauth_forwarder"])

    async def _forward(self, path: str) -> None:
        if any(part in ("", ".", "..") for part in path.split("/")):
            raise web.HTTPError(404)
        req = self.request
        resp = await self.forwarder.request(
            req.method or "GET", path, req.query, req.body, req.headers.get("Content-Type")
        )
        self.set_status(resp.status_code)
        for header in _PASS_HEADERS:
            if header in resp.headers:
                self.set_header(header, resp.headers[header])
        self.set_header("Cache-Control", "no-store")
        if resp.status_code == 204:
            self.finish()
        else:
            self.finish(resp.content)

    @authenticated
    async def get(self, path: str) -> None:
        await self._forward(path)

    @authenticated
    async def post(self, path: str) -> None:
        await self._forward(path)

    @authenticated
    async def put(self, path: str) -> None:
        await self._forward(path)

    @authenticated
    async def delete(self, path: str) -> None:
        await self._forward(path)


FORWARD_HANDLERS: list[tuple[str, type[JupyterHandler]]] = [
    (rf"/{API}/(?P<path>[A-Za-z0-9_.\-/]{{1,300}})", ForwardHandler),
]
