"""CloudFetch for the local Databricks warehouse: large results as presigned file links.

What Databricks does (and databricks-sql-connector reads): when the client sets
``canDownloadResult`` (the driver's ``use_cloud_fetch=True``, its default) and a result is
large, ``GetResultSetMetadata`` says ``resultFormat = URL_BASED_SET`` and each
``TRowSet`` carries ``resultLinks``: ``TSparkArrowResultLink(fileLink, expiryTime,
startRowOffset, rowCount, bytesNum, httpHeaders)``. Each link is a presigned cloud-storage
URL to one Arrow IPC stream file, LZ4-frame compressed when the client allows
(``canDecompressLZ4Result``). The driver downloads the files in parallel
(``cloudfetch/download_manager.py``, ``max_download_threads``, default 10) without the
workspace token, and refuses links past ``expiryTime``. See "Cloud Fetch in ODBC/JDBC/
Python" (docs.databricks.com/en/integrations/jdbc-odbc-bi.html#cloud-fetch) and the
``TSparkArrowResultLink`` type in the driver's ``TCLIService.thrift``.

Here the files live in memory and are served by the warehouse's own HTTP server at
``GET /__cloudfetch__/<key>?X-Amz-Date=..&X-Amz-Expires=..&X-Amz-Signature=..``
(an HMAC of path, date and expiry). After expiry: 403 ``AccessDenied`` "Request has
expired"; a bad signature: 403 ``SignatureDoesNotMatch``; an unknown key: 404. Counted in
the warehouse stats as ``cloudfetch_results``, ``cloudfetch_files``,
``cloudfetch_downloads``, ``cloudfetch_rejected``.

Config: ``cloudfetch`` (default true), ``cloudfetch_min_rows`` (results with more rows use
links; default 20000), ``cloudfetch_file_rows`` (rows per file; default 131072),
``cloudfetch_links_per_page`` (default 32), ``cloudfetch_url_ttl_s`` (default 900),
``cloudfetch_store_bytes`` (memory cap, oldest files dropped first; default 2 GiB).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs

import pyarrow as pa


class CloudFetchStore:
    def __init__(self, cfg: dict[str, Any], stats: Any) -> None:
        self.enabled = bool(cfg.get("cloudfetch", True))
        self.min_rows = int(cfg.get("cloudfetch_min_rows", 20000))
        self.file_rows = max(1, int(cfg.get("cloudfetch_file_rows", 131072)))
        self.links_per_page = max(1, int(cfg.get("cloudfetch_links_per_page", 32)))
        self.ttl = int(cfg.get("cloudfetch_url_ttl_s", 900))
        self.store_bytes = int(cfg.get("cloudfetch_store_bytes", 2 << 30))
        self.stats = stats
        for key in ("cloudfetch_results", "cloudfetch_files", "cloudfetch_downloads"):
            stats.bump(key, 0)
        stats.bump("cloudfetch_rejected", 0)
        self._secret = secrets.token_bytes(32)
        self._files: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def use_links(self, table: pa.Table | None, client_allows: bool) -> bool:
        return (
            self.enabled and client_allows and table is not None and table.num_rows > self.min_rows
        )

    def links(self, table: pa.Table, start: int, lz4: bool, base_url: str) -> tuple[list[Any], int]:
        """Links for files from row ``start`` on (up to ``links_per_page``); the next offset."""
        from databricks.sql.thrift_api.TCLIService import ttypes as T

        if start == 0:
            self.stats.bump("cloudfetch_results")
        links = []
        created = time.time()
        offset = start
        while offset < table.num_rows and len(links) < self.links_per_page:
            part = table.slice(offset, self.file_rows)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, part.schema) as writer:
                writer.write_table(part)
            raw = sink.getvalue().to_pybytes()
            if lz4:
                import lz4.frame

                blob = lz4.frame.compress(raw)
            else:
                blob = raw
            key = secrets.token_urlsafe(16)
            self._put(key, blob, created)
            links.append(
                T.TSparkArrowResultLink(
                    fileLink=self._presign(base_url, key, created),
                    expiryTime=int((created + self.ttl) * 1000),  # ms since the epoch
                    startRowOffset=offset,
                    rowCount=part.num_rows,
                    bytesNum=len(raw),
                    httpHeaders={},
                )
            )
            offset += part.num_rows
        self.stats.bump("cloudfetch_files", len(links))
        return links, offset

    def _put(self, key: str, blob: bytes, created: float) -> None:
        with self._lock:
            for old in list(self._files):
                data, when = self._files[old]
                if created - when <= self.ttl and self._size + len(blob) <= self.store_bytes:
                    break
                self._size -= len(data)
                del self._files[old]
            self._files[key] = (blob, created)
            self._size += len(blob)

    def _signature(self, path: str, date: str, expires: str) -> str:
        msg = f"GET\n{path}\n{date}\n{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def _presign(self, base_url: str, key: str, created: float) -> str:
        path = f"/__cloudfetch__/{key}"
        date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
        sig = self._signature(path, date, str(self.ttl))
        return (
            f"{base_url}{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={date}"
            f"&X-Amz-Expires={self.ttl}&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}"
        )

    def serve(self, path: str, query: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of a presigned link."""
        q = {k: v[0] for k, v in parse_qs(query).items()}
        date, expires = q.get("X-Amz-Date", ""), q.get("X-Amz-Expires", "")
        if not hmac.compare_digest(
            q.get("X-Amz-Signature", ""), self._signature(path, date, expires)
        ):
            return self._reject(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        try:
            expired = time.time() > calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ")) + int(
                expires
            )
        except ValueError:
            expired = True
        if expired:
            return self._reject(403, "AccessDenied", "Request has expired")
        with self._lock:
            entry = self._files.get(path.rsplit("/", 1)[-1])
        if entry is None:
            return self._reject(404, "NoSuchKey", "The specified key does not exist.")
        self.stats.bump("cloudfetch_downloads")
        return 200, "application/octet-stream", entry[0]

    def _reject(self, status: int, code: str, message: str) -> tuple[int, str, bytes]:
        self.stats.bump("cloudfetch_rejected")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        )
        return status, "application/xml", body.encode()
