"""A real kernel started by the test's Jupyter server (``POST api/kernels``), driven
over its channels like a notebook frontend, with the user's part of the consent done
headlessly whenever a balloon shows an authorize link."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx2

from tests.idp_fixture import headless_login

AUTH_URL = re.compile(r"(http://127\.0\.0\.1:\d+/auth\?[^\s\"'<]+)")


@dataclass
class Cell:
    """What one execution sent back, as a notebook would store it."""

    status: str = ""
    outputs: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""  # stream, text/plain of displays and results, tracebacks
    error: dict[str, Any] | None = None
    metadata: list[dict[str, Any]] = field(default_factory=list)  # of display outputs


class KernelSession:
    def __init__(self, jp_fetch: Any, jp_serverapp: Any, browser_headers: dict[str, str]):
        self.jp_fetch = jp_fetch
        self.app = jp_serverapp
        self.headers = browser_headers
        self.kernel_id = ""
        self.kc: Any = None
        self.login = "alice"  # who signs in when a balloon asks
        self.sign_in_delay = 0.0  # seconds the user takes before signing in
        self.consents = 0
        self.path: str | None = None
        self.live_text = ""  # the running cell's text so far

    async def start(self) -> KernelSession:
        """A kernel of its own, or with ``path`` a notebook's session's kernel (then
        jupyter_server sets JPY_SESSION_NAME to the path in the kernel's environment)."""
        if self.path:
            name = self.path.rsplit("/", 1)[-1]  # as JupyterLab sends it
            body: dict[str, Any] = {"path": self.path, "type": "notebook", "name": name}
            body["kernel"] = {"name": "python3"}
            resp = await self.jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
            self.kernel_id = json.loads(resp.body)["kernel"]["id"]
        else:
            body = {"name": "python3"}
            resp = await self.jp_fetch("api", "kernels", method="POST", body=json.dumps(body))
            self.kernel_id = json.loads(resp.body)["id"]
        km = self.app.kernel_manager.get_kernel(self.kernel_id)
        self.kc = km.client()
        self.kc.start_channels()
        await self.kc.wait_for_ready(timeout=60)
        return self

    async def __aenter__(self) -> KernelSession:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        if self.kernel_id:
            await self.jp_fetch("api", "kernels", self.kernel_id, method="DELETE")

    async def _sign_in(self, url: str) -> None:
        await asyncio.sleep(self.sign_in_delay)
        callback = await asyncio.to_thread(headless_login, url, self.login)
        async with httpx2.AsyncClient(headers=self.headers, timeout=30) as http:
            page = await http.get(callback)
        assert page.status_code == 200, page.text
        self.consents += 1

    async def run(self, code: str, *, seconds: float = 120, consent: bool = True) -> Cell:
        cell = Cell()
        self.live_text = ""
        tasks: list[asyncio.Task[None]] = []
        seen: set[str] = set()

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind in ("stream", "display_data", "execute_result", "update_display_data"):
                out = {"output_type": kind, **content}
                cell.outputs.append(out)
                data = content.get("data") or {}
                cell.text += content.get("text", "") + str(data.get("text/plain", "")) + "\n"
                self.live_text = cell.text
                for url in AUTH_URL.findall(
                    str(data.get("text/plain", "")) + content.get("text", "")
                ):
                    if consent and url not in seen:
                        seen.add(url)
                        tasks.append(asyncio.ensure_future(self._sign_in(url)))
            if kind in ("display_data", "execute_result", "update_display_data"):
                cell.metadata.append(content.get("metadata") or {})
            elif kind == "error":
                cell.error = content
                cell.outputs.append({"output_type": "error", **content})
                cell.text += "\n".join(content["traceback"]) + "\n"

        reply = await self.kc.execute_interactive(code, output_hook=hook, timeout=seconds)
        for t in tasks:
            await t
        cell.status = reply["content"]["status"]
        return cell

    async def ok(self, code: str, **kw: Any) -> Cell:
        cell = await self.run(code, **kw)
        assert cell.status == "ok", cell.text
        return cell

    async def interrupt_when(self, running: Any, seen: str, after: float = 0.0) -> None:
        """Interrupt the kernel (the notebook's stop button: the server's interrupt API)
        once ``seen`` appears in the running cell's output."""
        for _ in range(600):
            if seen in self.live_text or running.done():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(after)
        await self.jp_fetch("api", "kernels", self.kernel_id, "interrupt", method="POST", body="")
