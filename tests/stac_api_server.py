"""A small, real STAC API for tests: stdlib ``ThreadingHTTPServer`` on 127.0.0.1 in a thread.

Implements enough of STAC API - Core + Item Search (+ Collections, + the Query extension) for
pystac-client: ``/`` (landing page with ``conformsTo`` and links self, root, conformance, data,
search GET and POST), ``/conformance``, ``/collections``, ``/collections/{id}``,
``/collections/{id}/items/{item}``, and ``/search`` (GET and POST) with ``bbox``,
``intersects``, ``datetime`` (instants and open or closed ranges), ``collections``, ``ids``,
``limit`` and paging through a ``next`` link (a ``token`` offset), and ``query`` on any item
property (``eq``, ``neq``, ``lt``, ``lte``, ``gt``, ``gte``; an item lacking the property does
not match). Items are served as given (their asset hrefs should be absolute). Every request is
recorded in ``requests``; :meth:`StacApiServer.fail_with` makes the next requests fail with an
HTTP status (to test retries and error reports).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from shapely.geometry import box, shape

CONFORMS_TO = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]
_OPS = {
    "eq": lambda a, b: a == b, "neq": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
}


def _parse_time(s: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


class BadRequest(ValueError):
    pass


class StacApiServer:
    """``with StacApiServer(items) as api: api.url`` -> ``http://127.0.0.1:PORT``."""

    def __init__(self, items: list[dict[str, Any]], collections: dict[str, dict[str, Any]] | None = None,
                 default_limit: int = 10, max_limit: int = 1000, methods: tuple[str, ...] = ("GET", "POST"),
                 conforms_to: list[str] | None = None) -> None:
        self.items = list(items)
        ids = sorted({i.get("collection") for i in items if isinstance(i, dict) and i.get("collection")})
        self.collections = collections if collections is not None else {c: {"id": c} for c in ids}
        self.default_limit, self.max_limit = default_limit, max_limit
        self.methods = methods
        self.conforms_to = list(CONFORMS_TO if conforms_to is None else conforms_to)
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self._fail: list[tuple[int, str | None, int | None]] = []  # (status, path, minimum token) per request
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -------------------------------------------------------- control

    def start(self) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                u = urlparse(self.path)
                params = {k: v[-1] for k, v in parse_qs(u.query).items()}
                server._handle(self, "GET", u.path, params)

            def do_POST(self) -> None:
                u = urlparse(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                except ValueError:
                    body = None
                server._handle(self, "POST", u.path, body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "StacApiServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def fail_with(self, status: int, times: int = 1, path: str | None = "/search", from_token: int | None = None) -> None:
        """The next ``times`` requests to ``path`` (None: any path) whose paging token is at least
        ``from_token`` (None: any) get HTTP ``status``."""
        with self._lock:
            self._fail += [(status, path, from_token)] * times

    def search_requests(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [r for r in self.requests if r[1] == "/search"]

    # -------------------------------------------------------- handling

    def _send(self, h: BaseHTTPRequestHandler, status: int, obj: Any, ctype: str = "application/json") -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _take_failure(self, path: str, params: dict[str, Any]) -> int | None:
        token = int((params or {}).get("token") or 0) if isinstance(params, dict) else 0
        with self._lock:
            for i, (status, p, tok) in enumerate(self._fail):
                if (p is None or p == path) and (tok is None or token >= tok):
                    del self._fail[i]
                    return status
        return None

    def _handle(self, h: BaseHTTPRequestHandler, method: str, path: str, params: Any) -> None:
        path = path.rstrip("/") or "/"
        with self._lock:
            self.requests.append((method, path, params if isinstance(params, dict) else {"_invalid": params}))
        status = self._take_failure(path, params)
        if status is not None:
            return self._send(h, status, {"code": "InjectedFailure", "description": f"injected HTTP {status}"})
        try:
            if path == "/" and method == "GET":
                return self._send(h, 200, self._landing())
            if path == "/conformance" and method == "GET":
                return self._send(h, 200, {"conformsTo": self.conforms_to})
            if path == "/collections" and method == "GET":
                return self._send(h, 200, {"collections": [self._collection(c) for c in self.collections], "links": []})
            parts = path.strip("/").split("/")
            if parts[0] == "collections" and len(parts) == 2 and parts[1] in self.collections:
                return self._send(h, 200, self._collection(parts[1]))
            if parts[0] == "collections" and len(parts) == 4 and parts[2] == "items":
                for it in self.items:
                    if isinstance(it, dict) and it.get("collection") == parts[1] and it.get("id") == parts[3]:
                        return self._send(h, 200, it, "application/geo+json")
            if path == "/search" and method in self.methods:
                if not isinstance(params, dict):
                    raise BadRequest("request body is not a JSON object")
                return self._send(h, 200, self._search(method, params), "application/geo+json")
            if path == "/search":
                return self._send(h, 405, {"code": "MethodNotAllowed", "description": method})
            return self._send(h, 404, {"code": "NotFound", "description": path})
        except BadRequest as exc:
            return self._send(h, 400, {"code": "BadRequest", "description": str(exc)})

    def _landing(self) -> dict[str, Any]:
        u = self.url
        links = [
            {"rel": "self", "href": f"{u}/", "type": "application/json"},
            {"rel": "root", "href": f"{u}/", "type": "application/json"},
            {"rel": "conformance", "href": f"{u}/conformance", "type": "application/json"},
            {"rel": "data", "href": f"{u}/collections", "type": "application/json"},
        ]
        links += [{"rel": "search", "href": f"{u}/search", "type": "application/geo+json", "method": m} for m in self.methods]
        return {"type": "Catalog", "stac_version": "1.0.0", "id": "test-stac-api", "description": "sitewatch test STAC API",
                "conformsTo": self.conforms_to, "links": links}

    def _collection(self, cid: str) -> dict[str, Any]:
        base = {"type": "Collection", "stac_version": "1.0.0", "id": cid, "description": cid, "license": "proprietary",
                "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}}
        base.update(self.collections.get(cid) or {})
        base["links"] = [{"rel": "self", "href": f"{self.url}/collections/{cid}"}, {"rel": "root", "href": f"{self.url}/"}]
        return base

    # -------------------------------------------------------- search

    def _search(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        def as_list(v: Any) -> list[Any]:
            if v is None:
                return []
            return v.split(",") if isinstance(v, str) else list(v)

        def as_json(v: Any) -> Any:
            if isinstance(v, str):
                try:
                    return json.loads(v)
                except ValueError:
                    raise BadRequest(f"not JSON: {v!r}") from None
            return v

        colls = set(as_list(p.get("collections")))
        ids = set(as_list(p.get("ids")))
        bbox = [float(x) for x in as_list(p.get("bbox"))]
        if bbox and len(bbox) != 4:
            raise BadRequest(f"bbox got {bbox!r}; expected 4 numbers")
        intersects = as_json(p.get("intersects"))
        if bbox and intersects:
            raise BadRequest("bbox and intersects are mutually exclusive")
        area = box(*bbox) if bbox else (shape(intersects) if intersects else None)
        t0 = t1 = None
        if p.get("datetime"):
            s = str(p["datetime"])
            if "/" in s:
                a, b = s.split("/", 1)
                t0 = None if a in ("", "..") else _parse_time(a)
                t1 = None if b in ("", "..") else _parse_time(b)
            else:
                t0 = t1 = _parse_time(s)
        query = as_json(p.get("query")) or {}
        for prop, ops in query.items():
            bad = set(ops) - set(_OPS)
            if bad:
                raise BadRequest(f"query on {prop!r}: unknown operator(s) {sorted(bad)}")
        limit = min(int(p.get("limit") or self.default_limit), self.max_limit)
        token = int(p.get("token") or 0)

        def matches(it: Any) -> bool:
            if not isinstance(it, dict):
                return True  # served as is: lets tests serve broken items
            props = it.get("properties") or {}
            if colls and it.get("collection") not in colls:
                return False
            if ids and it.get("id") not in ids:
                return False
            if area is not None and it.get("geometry") and not shape(it["geometry"]).intersects(area):
                return False
            if t0 or t1:
                if not props.get("datetime"):
                    return False
                t = _parse_time(props["datetime"])
                if (t0 and t < t0) or (t1 and t > t1):
                    return False
            for prop, ops in query.items():
                if prop not in props or props[prop] is None:
                    return False
                if not all(_OPS[op](props[prop], v) for op, v in ops.items()):
                    return False
            return True

        hits = [it for it in self.items if matches(it)]
        page = hits[token:token + limit]
        links = [{"rel": "root", "href": f"{self.url}/"}]
        if token + limit < len(hits):
            if method == "GET":
                q = {k: v for k, v in p.items() if k != "token"}
                q["token"] = token + limit
                links.append({"rel": "next", "href": f"{self.url}/search?{urlencode(q)}", "type": "application/geo+json"})
            else:
                links.append({"rel": "next", "href": f"{self.url}/search", "method": "POST",
                              "body": {**p, "token": token + limit}, "merge": False, "type": "application/geo+json"})
        return {"type": "FeatureCollection", "features": page, "links": links,
                "numberMatched": len(hits), "numberReturned": len(page)}
