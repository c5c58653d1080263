"""Large results the way Snowflake sends them: a first chunk inline, the rest as chunk URLs.

Runs inside the fakesnow venv, imported by ``server.py``. What the real service does (and
what the official connectors read):

* The query response's ``data`` holds ``queryResultFormat: "arrow"``, the first chunk as
  ``rowsetBase64`` (an Arrow IPC stream), and for larger results ``chunks``: a list of
  ``{"url", "rowCount", "uncompressedSize", "compressedSize"}``, plus ``chunkHeaders`` (the
  SSE-C headers the client must send with every chunk GET) or ``qrmk``. The URLs are
  presigned cloud-storage URLs that expire (``ResultBatch`` docs in
  snowflake-connector-python: "the URLs stored in remote batches expire; the lifetime is
  dictated by the Snowflake back-end (typically 6 hours)"). The connector downloads the
  chunks in parallel (``CLIENT_PREFETCH_THREADS``), each through a ``ResultBatch``
  (``ArrowResultBatch`` in connector 3.x/4.x, sf_core's ``Chunk`` in 5.x).
  See docs.snowflake.com "Using the Python connector → Retrieving query results in
  batches" (``get_result_batches``) and the connector's ``result_batch.py``.
* Chunk objects are stored gzip-compressed and served with ``Content-Encoding: gzip``.

Here the object store is a route of the same server, ``GET /__results__/<key>/<n>``, with
S3-style presigned query parameters (``X-Amz-Date``, ``X-Amz-Expires``,
``X-Amz-Signature``, an HMAC over path, date and expiry with a server secret). A
request after expiry gets S3's ``403 AccessDenied`` "Request has expired"; a bad
signature ``403 SignatureDoesNotMatch``; missing or wrong SSE-C headers ``400
InvalidArgument``. ``stats()`` counts what was served, so tests can tell the driver
really took the chunk path.
"""

from __future__ import annotations

import base64
import calendar
import contextvars
import gzip
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pyarrow as pa

SSE_ALGORITHM = "x-amz-server-side-encryption-customer-algorithm"
SSE_KEY = "x-amz-server-side-encryption-customer-key"
SSE_KEY_MD5 = "x-amz-server-side-encryption-customer-key-md5"


@dataclass
class ChunkSettings:
    """Config keys ``result_inline_rows``, ``result_chunk_rows``, ``result_chunk_gzip``,
    ``result_url_ttl``, ``result_store_bytes``, ``result_chunk_delay`` (seconds before
    each chunk download is answered: a slow object store)."""

    inline_rows: int = 8192
    chunk_rows: int = 131072
    gzip: bool = True
    url_ttl: int = 21600
    store_bytes: int = 2 << 30
    chunk_delay: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChunkSettings:
        return cls(
            inline_rows=int(d.get("result_inline_rows", 8192)),
            chunk_rows=max(1, int(d.get("result_chunk_rows", 131072))),
            gzip=bool(d.get("result_chunk_gzip", True)),
            url_ttl=int(d.get("result_url_ttl", 21600)),
            store_bytes=int(d.get("result_store_bytes", 2 << 30)),
            chunk_delay=float(d.get("result_chunk_delay", 0.0)),
        )


@dataclass
class _Stored:
    blobs: list[bytes]
    sse_key: str
    created: float
    size: int = 0


@dataclass
class Pending:
    """Set by the ASGI wrapper around one query request; filled by :meth:`ResultStore.to_ipc`."""

    base_url: str
    chunks: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


PENDING: contextvars.ContextVar[Pending | None] = contextvars.ContextVar(
    "sf_results_pending", default=None
)


class ResultStore:
    """Chunk objects by key, evicted on expiry or when over ``store_bytes`` (oldest first)."""

    def __init__(self, settings: ChunkSettings) -> None:
        self.settings = settings
        self._secret = secrets.token_bytes(32)
        self._objects: OrderedDict[str, _Stored] = OrderedDict()
        self._lock = threading.Lock()
        self.results_chunked = 0
        self.chunks_created = 0
        self.chunk_downloads = 0
        self.chunk_bytes_served = 0
        self.chunk_rejected = 0

    def stats(self) -> dict[str, int]:
        return {
            "results_chunked": self.results_chunked,
            "chunks_created": self.chunks_created,
            "chunk_downloads": self.chunk_downloads,
            "chunk_bytes_served": self.chunk_bytes_served,
            "chunk_rejected": self.chunk_rejected,
        }

    # ---- writing (called by fakesnow's query_request instead of fakesnow.arrow.to_ipc)

    def to_ipc(self, table: pa.Table) -> pa.Buffer:
        """The first chunk as IPC bytes; with a pending request and a large result the rest
        goes to the store and its chunk list to the pending request."""
        pending = PENDING.get()
        s = self.settings
        if pending is None or table.num_rows <= s.inline_rows:
            return _ipc(table)
        first = table.slice(0, s.inline_rows)
        key = secrets.token_urlsafe(16)
        sse_key = base64.b64encode(secrets.token_bytes(32)).decode()
        stored = _Stored([], sse_key, time.time())
        for n, start in enumerate(range(s.inline_rows, table.num_rows, s.chunk_rows)):
            part = table.slice(start, s.chunk_rows)
            raw = _ipc(part)
            blob = gzip.compress(raw.to_pybytes(), compresslevel=1) if s.gzip else raw.to_pybytes()
            stored.blobs.append(blob)
            stored.size += len(blob)
            pending.chunks.append(
                {
                    "url": self._presign(pending.base_url, key, n, stored.created),
                    "rowCount": part.num_rows,
                    "uncompressedSize": raw.size,
                    "compressedSize": len(blob),
                }
            )
        pending.headers = {
            SSE_ALGORITHM: "AES256",
            SSE_KEY: sse_key,
            SSE_KEY_MD5: base64.b64encode(hashlib.md5(base64.b64decode(sse_key)).digest()).decode(),  # noqa: S324 - S3's SSE-C checksum
        }
        with self._lock:
            self._evict(stored.size)
            self._objects[key] = stored
            self.results_chunked += 1
            self.chunks_created += len(stored.blobs)
        return _ipc(first)

    def _evict(self, incoming: int) -> None:
        now = time.time()
        total = sum(o.size for o in self._objects.values()) + incoming
        for key in list(self._objects):
            o = self._objects[key]
            if now - o.created > self.settings.url_ttl or total > self.settings.store_bytes:
                total -= o.size
                del self._objects[key]

    def _signature(self, path: str, date: str, expires: str) -> str:
        msg = f"GET\n{path}\n{date}\n{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def _presign(self, base_url: str, key: str, n: int, created: float) -> str:
        path = f"/__results__/{key}/{n}"
        date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
        expires = str(self.settings.url_ttl)
        sig = self._signature(path, date, expires)
        return (
            f"{base_url}{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={date}"
            f"&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}"
        )

    # ---- serving

    def serve(
        self, path: str, query: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for ``GET /__results__/<key>/<n>?<presigned params>``."""
        q = {k: v[0] for k, v in parse_qs(query.decode()).items()}
        date, expires, sig = (
            q.get("X-Amz-Date", ""),
            q.get("X-Amz-Expires", ""),
            q.get("X-Amz-Signature", ""),
        )
        if not hmac.compare_digest(sig, self._signature(path, date, expires)):
            return self._reject(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        try:
            signed_at = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
            expired = time.time() > signed_at + int(expires)
        except ValueError:
            expired = True
        if expired:
            return self._reject(403, "AccessDenied", "Request has expired")
        parts = path.split("/")
        with self._lock:
            stored = self._objects.get(parts[2]) if len(parts) == 4 else None
        try:
            blob = stored.blobs[int(parts[3])] if stored else None
        except (ValueError, IndexError):
            blob = None
        if stored is None or blob is None:
            return self._reject(404, "NoSuchKey", "The specified key does not exist.")
        if headers.get(SSE_ALGORITHM) != "AES256" or headers.get(SSE_KEY) != stored.sse_key:
            return self._reject(
                400,
                "InvalidArgument",
                "The provided encryption parameters did not match the ones used originally.",
            )
        with self._lock:
            self.chunk_downloads += 1
            self.chunk_bytes_served += len(blob)
        out = {"content-type": "application/octet-stream"}
        if self.settings.gzip:
            out["content-encoding"] = "gzip"
        return 200, out, blob

    def _reject(self, status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.chunk_rejected += 1
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        )
        return status, {"content-type": "application/xml"}, body.encode()


def _ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


async def send_raw(send: Any, status: int, headers: dict[str, str], body: bytes) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
