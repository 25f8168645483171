"""A tiny threaded HTTP server on 127.0.0.1 for fakes: a WSGI app on an ephemeral port."""
from __future__ import annotations

import threading

from werkzeug.serving import make_server


class LoopbackServer:
    """Serve a WSGI app on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, wsgi_app):
        self.httpd = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
        self.port = self.httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
