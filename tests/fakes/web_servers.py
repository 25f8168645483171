"""Loopback HTTP servers for web_fetch tests: a canary that records every request, and a
page server with the hostile cases (huge body, gzip bomb, image, slow drip, redirects)."""
from __future__ import annotations

import gzip
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = b"""<!doctype html><html><head><title>Intranet status</title></head>
<body><nav>menu</nav><article><h1>Intranet status</h1>
<p>The quarterly report says the blue widgets sold 4242 units this season.</p>
<p>Everything else about the widgets is fine and the factory keeps running.</p>
</article></body></html>"""


def gzip_bomb(size: int) -> bytes:
    """`size` zero bytes, gzip-compressed (a few KB on the wire per 10 MB decoded)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        block = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            gz.write(block)
    return out.getvalue()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # clients hanging up at their byte cap is expected here


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1; `requests` lists (method, path, headers) seen."""

    def __init__(self, handler_factory):
        self.requests: list[tuple[str, str, dict]] = []
        self.server = _Server(("127.0.0.1", 0), handler_factory(self))
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _recording_handler(owner, routes):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            owner.requests.append(("GET", self.path, dict(self.headers)))
            route = routes.get(self.path.split("?")[0], routes.get("*"))
            route(self) if route else self._send(404, b"not found")

        do_POST = do_HEAD = do_PUT = do_DELETE = do_GET

        def _send(self, status, body, content_type="text/html; charset=utf-8", headers=None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass

    return Handler


def canary_server() -> LoopbackServer:
    """Answers everything with a secret page; tests assert it saw no request."""
    return LoopbackServer(lambda owner: _recording_handler(
        owner, {"*": lambda h: h._send(200, b"<html><title>canary</title>CANARY-SECRET</html>")}))


def _big(h, size=50 * 1024 * 1024):
    h.send_response(200)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Content-Length", str(size))
    h.end_headers()
    chunk = b"A" * 65536
    try:
        for _ in range(size // len(chunk)):
            h.wfile.write(chunk)
    except OSError:
        pass  # the client stopped reading at its cap: that is the point


def _bomb(h, data=[]):
    data = data or data.append(gzip_bomb(64 << 20)) or data  # built once, 64 MB decoded
    h._send(200, data[0], "text/html", {"Content-Encoding": "gzip"})


def _drip(h):
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    try:
        for _ in range(100000):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.1)
    except OSError:
        pass


def page_routes(target: str | None = None) -> dict:
    """Routes of the page server; `target` is where /redirect points."""
    return {
        "/page": lambda h: h._send(200, PAGE),
        "/text": lambda h: h._send(200, b"plain words here", "text/plain"),
        "/big": _big,
        "/bomb": _bomb,
        "/image": lambda h: h._send(200, b"\x89PNG\r\n\x1a\n" + b"\0" * 1_000_000, "image/png"),
        "/drip": _drip,
        "/slow-headers": _slow_headers,
        "/redirect": lambda h: h._send(302, b"", headers={"Location": target or "/page"}),
        "/loop": lambda h: h._send(302, b"", headers={"Location": "/loop"}),
        "/missing": lambda h: h._send(404, b"gone"),
    }


def page_server(target: str | None = None, extra: dict | None = None) -> LoopbackServer:
    routes = {**page_routes(target), **(extra or {})}
    return LoopbackServer(lambda owner: _recording_handler(owner, routes))


def _slow_headers(h):
    """Headers that trickle in one byte at a time: only a total deadline stops this."""
    try:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 100000:
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.05)
    except OSError:
        pass
    h.close_connection = True


class SentCounter:
    """Counts what a streaming route managed to send before the client hung up."""

    def __init__(self):
        self.sent = 0


def big_image(counter: SentCounter, size: int = 50 * 1024 * 1024):
    def route(h):
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(size))
        h.end_headers()
        chunk = b"\x89PNG" + b"\0" * 65532
        try:
            while counter.sent < size:
                h.wfile.write(chunk)
                counter.sent += len(chunk)
        except OSError:
            pass
    return route


PRETEND_PUBLIC = "93.184.215.14"   # a global address no test ever really connects to


def route_names(monkeypatch, names: dict[str, list[str]], routes: dict[tuple[str, int], int]):
    """Patch agentd.tools.netguard: `names` answers DNS for test host names (others resolve for
    real, which is only ever loopback literals here), and `routes` sends connections for a
    pretend-public (address, port) to a loopback port. Connecting to any other non-loopback
    address fails the test instead of touching the internet. Returns the log of connections."""
    from agentd.tools import netguard

    real_resolver, real_open = netguard.resolver, netguard.open_connection
    log = {"resolved": [], "connected": []}

    def resolver(host):
        log["resolved"].append(host)
        return list(names[host]) if host in names else real_resolver(host)

    def open_connection(ip, port, timeout):
        log["connected"].append((ip, port))
        if (ip, port) in routes:
            return real_open("127.0.0.1", routes[(ip, port)], timeout)
        if ip not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to reach {ip}:{port}")
        return real_open(ip, port, timeout)

    monkeypatch.setattr(netguard, "resolver", resolver)
    monkeypatch.setattr(netguard, "open_connection", open_connection)
    return log
