"""No Jupyter server (plain IPython, VS Code, papermill): the broker runs in the kernel.

It reads the same ``c.ConnAuth`` config (jupyter_server_config files and environment
variables), uses the same encrypted store as the server extension, and receives the
IdP's redirect on a loopback callback, ``http://127.0.0.1:<port>/oauth/connector/callback``
(RFC 8252). Tornado serves that one route on a background thread; jupyter_server is
never imported.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import socket
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from traitlets import Enum, Int
from traitlets.config import Config

from ..broker.broker import Broker
from ..broker.config import ConnAuth
from ..broker.environ import withhold_from_kernels
from ..broker.flows import FlowStart
from ..broker.grants import TokenGrant
from ..broker.rejection import Rejection
from ..broker.store import open_store
from ..core.crypto import CryptKeeper
from ..core.errors import ConnAuthError
from ..web.pages import CALLBACK_HEADERS, render_callback
from .client import AccessToken, ConsentNeeded, DeviceCode, device_code, token_or_consent

log = logging.getLogger(__name__)
T = TypeVar("T")


class LocalConnAuth(ConnAuth):
    loopback_port = Int(
        0,
        help="""Port of the loopback callback when no Jupyter server hosts the broker
        (0: any free port; set one when the IdP app needs an exact redirect URI).""",
    ).tag(config=True)
    consent_method = Enum(
        ["auto", "loopback", "device"],
        "auto",
        help="""How a kernel without a Jupyter server asks for consent: "loopback" (a
        sign-in link whose redirect comes back to 127.0.0.1 on this machine), "device"
        (RFC 8628: a code to enter at the IdP on any device, for kernels no browser can
        reach) or "auto": the device code where no browser can be opened here (an SSH
        session, a papermill run, Linux without a display), else the loopback.""",
    ).tag(config=True)


def no_browser_here(environ: dict[str, str] | None = None, platform: str | None = None) -> str:
    """Why no browser on this machine can reach a loopback callback ('' if one can):
    an SSH session, a papermill run, or Linux without a display."""
    import sys

    env = os.environ if environ is None else environ
    if env.get("SSH_CONNECTION") or env.get("SSH_TTY"):
        return "an SSH session"
    try:  # papermill starts the kernel itself: it is the parent process
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        parent = b""
    if b"papermill" in parent:
        return "a papermill run"
    if (platform or sys.platform).startswith("linux") and not (
        env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")
    ):
        return "no display"
    return ""


def load_config() -> Config:
    """``c.ConnAuth`` from the jupyter_server_config files, as the server would read it."""
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

    config = Config()
    for directory in reversed(jupyter_config_path()):  # lowest priority first
        for loader_cls, name in (
            (JSONFileConfigLoader, "jupyter_server_config.json"),
            (PyFileConfigLoader, "jupyter_server_config.py"),
        ):
            if (Path(directory) / name).is_file():
                config.merge(loader_cls(name, path=directory).load_config())
    local = Config()
    for section in ("ConnAuth", "LocalConnAuth"):
        if section in config:
            local.LocalConnAuth.merge(config[section])
    return local


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalBrokerClient:
    """The :class:`BrokerClient` interface, answered by a broker in this process."""

    def __init__(self, config: Config | None = None, user: str | None = None) -> None:
        self.settings = LocalConnAuth(config=config if config is not None else load_config())
        self.user = user or os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
        self.port = self.settings.loopback_port or _free_port()
        self.redirect_uri = f"http://127.0.0.1:{self.port}/oauth/connector/callback"
        method = self.settings.consent_method
        self.device_consent = method == "device" or (method == "auto" and bool(no_browser_here()))
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="connauth-broker", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            from tornado.web import Application, RequestHandler

            crypt = CryptKeeper.from_env_or_file(Path(self.settings.key_file))
            store = open_store(self.settings.store_path, crypt)
            self.broker = Broker(self.settings, store, redirect_uri=self.redirect_uri)
            # out of os.environ for cell code and subprocesses (this process's
            # /proc/self/environ keeps its initial block: see broker/environ.py)
            withhold_from_kernels(self.settings)
            broker, owner = self.broker, self.user

            class Callback(RequestHandler):
                async def get(self) -> None:
                    status, page = await render_callback(
                        broker, self.request.query_arguments, owner
                    )
                    self.set_status(status)
                    for header, value in CALLBACK_HEADERS.items():
                        self.set_header(header, value)
                    self.finish(page)

                def log_exception(self, *args: Any) -> None:  # no query strings in logs
                    log.warning("jupyter-connauth: loopback callback failed")

            app = Application(
                [(r"/oauth/connector/callback", Callback)], log_function=lambda _h: None
            )
            self.server = app.listen(self.port, address="127.0.0.1")
        except BaseException as e:  # reported to the constructor's caller
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    #: True once :meth:`close` ran (its loop is stopped: a call would wait forever).
    closed = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.closed or not self.loop.is_running():
            coro.close()
            raise ConnAuthError(
                "The in-kernel broker is closed.", "run %reload_ext jupyter_connauth"
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def _call(self, fn: Any, *args: Any) -> Any:
        async def call() -> Any:
            return fn(*args)

        return self._run(call())

    def close(self) -> None:
        async def stop() -> None:
            self.server.stop()
            await self.broker.aclose()

        if self.closed:
            return
        try:
            self._run(stop())
        finally:
            self.closed = True
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    # -- the BrokerClient interface --------------------------------------------------
    def info(self) -> dict[str, Any]:
        b = self.broker
        return {
            "user": self.user,
            "flavour": b.flavour,
            "redirect_uri": b.redirect_uri,
            "discovery_url": b.config.discovery_url,
            "config_error": b.config_error.to_json() if b.config_error else None,
            "local": True,
        }

    def connections(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(self.broker.statuses, self.user)
        return result

    def status(self, name: str) -> dict[str, Any]:
        self.broker.connection(name)
        result: dict[str, Any] = self._call(self.broker.status, self.user, name)
        return result

    @staticmethod
    def _answer(result: TokenGrant | FlowStart) -> AccessToken | ConsentNeeded:
        return token_or_consent(result.to_json())

    def token(self, name: str) -> AccessToken | ConsentNeeded:
        answer = self._answer(self._run(self.broker.token(self.user, name)))
        if isinstance(answer, ConsentNeeded) and self.device_consent:
            # the browser flow the broker started just expires, unused
            return self._device(name, answer.reason, switch_account=False)
        return answer

    def rejected(self, name: str, report: dict[str, Any]) -> AccessToken | ConsentNeeded:
        seen = Rejection.from_json(report)
        return self._answer(self._run(self.broker.rejected(self.user, name, seen)))

    def authorize(self, name: str, *, switch_account: bool = False) -> ConsentNeeded:
        if self.device_consent:
            return self._device(name, "user_request", switch_account=switch_account)
        # the broker's switch_account (issue 12) is passed only when asked for, so a
        # plain authorize is the same call as before
        flag: dict[str, Any] = {"switch_account": True} if switch_account else {}
        started = self._run(self.broker.authorize(self.user, name, **flag))
        assert isinstance(started, FlowStart)
        answer = self._answer(started)
        assert isinstance(answer, ConsentNeeded)
        return answer

    def authorize_device(self, name: str, *, switch_account: bool = False) -> DeviceCode:
        return self._device(name, "user_request", switch_account=switch_account)

    def _device(self, name: str, reason: str, *, switch_account: bool) -> DeviceCode:
        started = self._run(
            self.broker.authorize(
                self.user, name, reason, switch_account=switch_account, method="device"
            )
        )
        return device_code(started.to_json())

    def revoke(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._run(self.broker.revoke(self.user, name))
        return result

    def flow(self, flow_id: str) -> dict[str, Any]:
        flow = self._call(self.broker.flow_status, self.user, flow_id)
        result: dict[str, Any] = flow.public_dict()
        return result

    def cancel_flow(self, flow_id: str) -> dict[str, Any]:
        flow = self._call(self.broker.cancel_flow, self.user, flow_id)
        result: dict[str, Any] = flow.public_dict()
        return result

    def doctor(self, name: str) -> list[dict[str, Any]]:
        from ..broker.doctor import diagnose

        result: list[dict[str, Any]] = self._run(diagnose(self.broker, self.user, name))
        return result
