"""A tiny HTTP proxy (stdlib only) in front of an S3 server, for measurements and fault injection.

Clients use the proxy's URL as their S3 endpoint (path-style addressing); every request is
forwarded to the upstream server and recorded: method, path, ``Range`` header, status and
response bytes. ``fail`` can answer a request itself (e.g. HTTP 503) instead of forwarding it,
to test retries; ``route`` can send some paths (e.g. one bucket) to another upstream server.
When the upstream cannot be reached the client's connection is dropped, as a dead server's
would be. Used by ``benchmarks/s3_reads.py`` (bytes requested for a site window) and by
the S3 failure tests.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import urlparse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: Optional[str]
    status: int
    bytes_out: int


class CountingProxy:
    """``with CountingProxy("http://127.0.0.1:PORT") as p: ... p.url ... p.requests``."""

    def __init__(self, upstream: str, fail: Callable[[str, str], Optional[int]] | None = None,
                 route: Callable[[str], Optional[str]] | None = None):
        self.upstream = upstream
        self.fail = fail
        self.route = route
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                status = proxy.fail(self.command, self.path) if proxy.fail else None
                if status is not None:
                    # what S3 answers when it throttles (503 SlowDown) or fails inside (500 InternalError)
                    code, text = (b"SlowDown", b"Please reduce your request rate.") if status == 503 else \
                        (b"InternalError", b"We encountered an internal error. Please try again.")
                    payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>" + code + b"</Code><Message>" + text
                               + b"</Message></Error>")
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    proxy._record(self.command, self.path, self.headers.get("Range"), status, len(payload))
                    return
                u = urlparse((proxy.route(self.path) if proxy.route else None) or proxy.upstream)
                conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError:  # upstream gone: drop the client's connection, as a dead server would
                    conn.close()
                    proxy._record(self.command, self.path, self.headers.get("Range"), 0, 0)
                    self.close_connection = True
                    return
                conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                proxy._record(self.command, self.path, self.headers.get("Range"), resp.status,
                              0 if self.command == "HEAD" else len(data))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _record(self, method: str, path: str, rng: Optional[str], status: int, n: int) -> None:
        with self._lock:
            self.requests.append(Request(method, path, rng, status, n))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def __enter__(self) -> "CountingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
