"""Run a notebook in a kernel of a remote Jupyter server (a hub user's own server).

The kernel is started through the server's REST API and driven over its websocket
(``api/kernels/ID/channels``, Jupyter messaging protocol 5.3 in JSON frames), the way
JupyterLab drives it: the kernel runs in the user's server, with that server's
environment, not in this process's.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

import httpx2
import nbformat
import websocket

OUTPUTS = ("stream", "display_data", "execute_result", "error")


def execute_notebook(server_url: str, token: str, nb: Any, timeout: float = 180) -> None:
    """Execute ``nb``'s code cells in order in a new kernel of ``server_url``; outputs in place."""
    headers = {"Authorization": f"token {token}"}
    with httpx2.Client(base_url=server_url, headers=headers, timeout=60, trust_env=False) as api:
        r = api.post("api/kernels", json={"name": "python3"})
        r.raise_for_status()
        kernel = r.json()["id"]
        ws_url = server_url.replace("http", "ws", 1) + f"api/kernels/{kernel}/channels"
        ws = websocket.create_connection(
            ws_url, header=[f"Authorization: token {token}"], timeout=timeout
        )
        try:
            session = uuid.uuid4().hex
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs = run_cell(ws, session, cell.source)
                    if any(o.output_type == "error" for o in cell.outputs):
                        break
        finally:
            ws.close()
            api.delete(f"api/kernels/{kernel}")


def run_cell(ws: websocket.WebSocket, session: str, code: str) -> list[Any]:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps(request(session, msg_id, code)))
    outputs: list[Any] = []
    idle = replied = False
    while not (idle and replied):
        frame = ws.recv()
        if isinstance(frame, bytes):  # messages with binary buffers (widgets' comms)
            continue
        msg = json.loads(frame)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if msg["channel"] == "shell" and kind == "execute_reply":
            replied = True
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
        elif kind == "clear_output":
            outputs.clear()
        elif kind in OUTPUTS:
            outputs.append(nbformat.v4.output_from_msg(msg))
    return outputs


def request(session: str, msg_id: str, code: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": session,
            "username": "demo-check",
            "version": "5.3",
            "date": datetime.datetime.now(datetime.UTC).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }
