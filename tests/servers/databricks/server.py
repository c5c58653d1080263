"""A local Databricks SQL warehouse for tests: Thrift (TCLIService) over HTTP(S),
executed in DuckDB, with bearer tokens checked like Databricks token federation.

    python tests/servers/databricks/server.py --config cfg.json

prints ``READY <port>`` on stdout once it accepts connections. See README.md for the
config keys. Test-only: no real security boundary beyond what the tests exercise.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dbx_auth
import dbx_engine
import dbx_thrift
from databricks.sql.thrift_api.TCLIService import TCLIService
from thrift.protocol.TBinaryProtocol import TBinaryProtocolAcceleratedFactory
from thrift.transport.TTransport import TMemoryBuffer

log = logging.getLogger("dbx-test-warehouse")

FEATURE_FLAGS_PREFIX = "/api/2.0/connector-service/feature-flags/"


class Warehouse:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.http_path = "/" + str(cfg.get("http_path", "/sql/1.0/warehouses/abc")).lstrip("/")
        self.stats = dbx_engine.Stats()
        self.verifier = dbx_auth.TokenVerifier(cfg)
        self.engine = dbx_engine.Engine(cfg, self.stats)
        self.handler = dbx_thrift.Handler(self.engine, cfg)
        self.processor = TCLIService.Processor(self.handler)
        self.pfactory = TBinaryProtocolAcceleratedFactory()


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "connauth-test-databricks/1"
    # Headers and body go out in two sends: with Nagle on, the body waited for the
    # client's delayed ACK of the headers (~40 ms) on a reused connection.
    disable_nagle_algorithm = True
    wh: Warehouse  # set on the subclass made by serve()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(
        self,
        code: int,
        body: bytes,
        ctype: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), headers=headers)

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _auth(self) -> dbx_auth.Identity | None:
        try:
            return self.wh.verifier.authenticate(self.headers.get("Authorization"))
        except dbx_auth.AuthError as e:
            self.wh.stats.bump(f"auth_{e.status}")
            log.info("auth failure %s: %s (%s)", e.status, e.reason, e.detail)
            body = {
                "error_code": "PERMISSION_DENIED" if e.status == 403 else "UNAUTHENTICATED",
                "message": e.reason,
                "details": e.detail,
            }
            self._json(e.status, body, headers={"X-Databricks-Reason-Phrase": e.reason})
            return None

    def _token_exchange(self, body: bytes) -> None:
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        try:
            resp = self.wh.verifier.exchange(form)
        except dbx_auth.AuthError as e:
            self.wh.stats.bump("token_exchange_failures")
            log.info("token exchange failed: %s (%s)", e.reason, e.detail)
            self._json(e.status, {"error": e.reason, "error_description": e.detail})
            return
        self.wh.stats.bump("token_exchanges")
        self._json(200, resp, headers={"Cache-Control": "no-store"})

    def do_GET(self) -> None:
        self.wh.stats.bump("http_requests")
        path = self.path.split("?", 1)[0]
        if path == "/__test__/stats":
            self._json(200, self.wh.stats.snapshot(self.wh.engine))
        elif path == "/__test__/health":
            self._json(200, {"ok": True})
        elif path.startswith("/__cloudfetch__/"):  # presigned links: no bearer token
            status, ctype, blob = self.wh.handler.cloudfetch.serve(
                path, self.path.partition("?")[2]
            )
            self._send(status, blob, ctype=ctype)
        elif path.startswith(FEATURE_FLAGS_PREFIX):
            self._read_body()
            if self._auth() is not None:
                self._json(200, {"flags": [], "ttl_seconds": 900})
        else:
            self._json(
                404,
                {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for 'GET {path}'"},
            )

    def do_POST(self) -> None:
        self.wh.stats.bump("http_requests")
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        if path == "/oidc/v1/token":
            self._token_exchange(body)
            return
        if path == "/__test__/not_before":  # {"iat": t}: reject IdP tokens issued before t
            self.wh.verifier.not_before = float(json.loads(body or b"{}").get("iat", 0))
            self._json(200, {"not_before": self.wh.verifier.not_before})
            return
        if path in ("/telemetry-ext", "/telemetry-unauth"):
            self._json(200, {"errors": [], "numSuccess": 0, "numProtoSuccess": 0})
            return
        if path.rstrip("/") != self.wh.http_path.rstrip("/"):
            self._json(
                404,
                {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for 'POST {path}'"},
                headers={"X-Databricks-Reason-Phrase": f"No API found for 'POST {path}'"},
            )
            return
        ident = self._auth()
        if ident is None:
            return
        dbx_thrift.current.identity = ident
        scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
        dbx_thrift.current.base_url = f"{scheme}://{self.headers.get('Host', '127.0.0.1')}"
        try:
            itrans = TMemoryBuffer(body)
            otrans = TMemoryBuffer()
            self.wh.processor.process(
                self.wh.pfactory.getProtocol(itrans), self.wh.pfactory.getProtocol(otrans)
            )
            out = otrans.getvalue()
        except Exception as e:  # malformed Thrift
            log.exception("thrift processing failed")
            self._json(
                400,
                {"error_code": "BAD_REQUEST", "message": str(e)},
                headers={"x-thriftserver-error-message": str(e)[:200]},
            )
            return
        finally:
            dbx_thrift.current.identity = None
        self._send(200, out, ctype="application/x-thrift")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # With a certificate, TLS and plain HTTP share the port: a TLS ClientHello
        # starts with 0x16. The handshake runs in the worker thread.
        if self.ssl_context is not None and self._is_tls(request):
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.info("TLS handshake failed from %s: %s", client_address, e)
                return
        super().finish_request(request, client_address)

    @staticmethod
    def _is_tls(sock: Any) -> bool:
        sock.settimeout(30)
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return False
        finally:
            sock.settimeout(None)
        return first == b"\x16"

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)


def serve(cfg: dict[str, Any]) -> tuple[_Server, Warehouse]:
    wh = Warehouse(cfg)
    handler_cls = type("Handler", (RequestHandler,), {"wh": wh})
    server = _Server((cfg.get("host", "127.0.0.1"), int(cfg.get("port", 0))), handler_cls)
    cert, key = cfg.get("tls_cert_file"), cfg.get("tls_key_file")
    if cfg.get("tls") and not (cert and key):
        from dbx_tls import make_self_signed

        tls_dir = tempfile.mkdtemp(prefix="dbx-tls-")
        atexit.register(shutil.rmtree, tls_dir, True)
        cert, key = make_self_signed(tls_dir)
        print(f"TLS_CA {cert}", flush=True)
    if cert and key:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.ssl_context = ctx
    return server, wh


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="JSON config file")
    ap.add_argument("--port", type=int, help="override the config's port")
    args = ap.parse_args(argv)
    with open(args.config) as f:
        cfg = json.load(f)
    if args.port is not None:
        cfg["port"] = args.port
    logging.basicConfig(
        level=os.environ.get("DBX_TEST_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    t0 = time.perf_counter()
    server, _ = serve(cfg)
    port = server.server_address[1]
    log.info("started in %.3f s", time.perf_counter() - t0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"READY {port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
