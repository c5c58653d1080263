"""Showing results and progress in the notebook."""

from __future__ import annotations

import html
import threading
import time
from typing import Any

from ..core.redact import redact


def rows_bundle(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Small tables for the line commands: aligned text and escaped HTML, untruncated."""
    if not rows:
        return {"text/plain": "(none)", "text/html": "<i>(none)</i>"}
    cols = list(rows[0])
    # the line commands' rows (test, doctor, status) may quote a driver's or IdP's words
    cells = [
        [redact(str(r.get(c, "") if r.get(c) is not None else "")) for c in cols] for r in rows
    ]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(f'<td style="text-align:left">{html.escape(v)}</td>' for v in row)
        + "</tr>"
        for row in cells
    )
    return {
        "text/plain": "\n".join(lines),
        "text/html": f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
    }


def format_time(epoch: float) -> str:
    """A moment with its date and time zone: ``2026-12-06 15:04:05 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


def show_table(data: Any, footer: str | None, metadata: dict[str, Any] | None = None) -> None:
    """A DataFrame (or rows of a line command) with a one-line footer under it;
    ``metadata``: the footer output's metadata (stored in the notebook with it)."""
    from IPython.display import display

    if isinstance(data, list):
        display(rows_bundle(data), raw=True)
    else:
        display(data)
    if footer:
        footer = redact(footer)
        bundle = {"text/plain": footer, "text/html": f"<small>{html.escape(footer)}</small>"}
        display(bundle, raw=True, metadata=metadata)


class Ticker:
    """Elapsed time and the driver's status while a query runs; cleared when done.

    Updated from a small thread through a display handle, so it also moves while the
    driver blocks the main thread.
    """

    def __init__(self, *, enabled: bool = True, after: float = 1.0, every: float = 0.5) -> None:
        self.enabled = enabled
        self.after = after
        self.every = every
        self._status = "running"
        self.query_ids: list[str] = []
        self.submitted = False
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._handle: Any = None
        self._thread: threading.Thread | None = None
        if enabled:
            self._thread = threading.Thread(target=self._run, name="connauth-ticker", daemon=True)
            self._thread.start()

    def status(self, text: str) -> None:
        self._status = text

    def __call__(self, text: str) -> None:
        """The connectors' progress callback: their first call comes as the statement
        is submitted (``submitted``: an interrupt then cancels it at the warehouse)."""
        self.submitted = True
        self.status(text)

    def query_id(self, query_id: str) -> None:
        """The warehouse's id of the statement (connectors.base.note_query_id)."""
        self.query_ids.append(query_id)

    def _line(self) -> dict[str, str]:
        text = f"{self._status}… {time.monotonic() - self._start:.0f} s"
        return {"text/plain": text, "text/html": f"<small>{text}</small>"}

    def _run(self) -> None:
        from IPython.display import display

        if self._stop.wait(self.after):
            return
        self._handle = display(self._line(), raw=True, display_id=True)
        while not self._stop.wait(self.every):
            self._handle.update(self._line(), raw=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._handle is not None:
            self._handle.update({"text/plain": ""}, raw=True)


def result_footer(
    runner: Any, name: str, rows: int, seconds: float, query_ids: list[str]
) -> tuple[str, dict[str, Any]]:
    """``alice@example.com · snowflake · 3 rows · 0.21 s`` and the output's metadata:
    who ran it, on which connection, the warehouse's statement id, the time (consent
    waits excluded) and the notebook; never a token."""
    from .tags import notebook_path

    lease = runner.last.get(name)
    identity = lease.credential.identity if lease is not None else None
    connector = lease.info.connector if lease is not None else None
    count = f"{rows:,} row" if rows == 1 else f"{rows:,} rows"
    parts = [identity, connector or name, count, f"{seconds:.2f} s"]
    footer = " · ".join(p for p in parts if p)
    meta = {
        "identity": identity,
        "connection": name,
        "connector": connector,
        "query_id": query_ids[-1] if query_ids else None,
        "rows": rows,
        "seconds": round(seconds, 3),
        "notebook": notebook_path(),
    }
    return footer, {"jupyter_connauth": meta}
