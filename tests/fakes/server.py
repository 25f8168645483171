"""A tiny threaded HTTP server on 127.0.0.1 for fakes: a WSGI app on an ephemeral port."""
from __future__ import annotations

import queue
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


class ScriptedFake:
    """What every vendor fake shares: scripted replies, recorded requests, a loopback server.

    A subclass speaks one vendor's wire format in `wsgi`, and says in
    `default_reply` what to answer when the script has run out.
    """

    def __init__(self):
        self.replies: queue.Queue = queue.Queue()
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.paths: list[str] = []
        self.streams_closed_early = 0
        self.streams_finished = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # set at stop: stalled replies give up at once
        self.server = LoopbackServer(self.wsgi)

    def script(self, *replies) -> None:
        for reply in replies:
            self.replies.put(reply)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def calls(self) -> int:
        return len(self.requests)

    def default_reply(self, body: dict):
        raise NotImplementedError

    def next_reply(self, body: dict):
        """The next scripted reply (or the default), resolved if it is computed from the body."""
        try:
            reply = self.replies.get_nowait()
        except queue.Empty:
            reply = self.default_reply(body)
        return reply.func(body) if getattr(reply, "func", None) else reply

    def record(self, request, body: dict) -> None:
        with self.lock:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            self.paths.append(request.full_path.rstrip("?"))

    def count_stream(self, finished: bool) -> None:
        with self.lock:
            if finished:
                self.streams_finished += 1
            else:
                self.streams_closed_early += 1

    def wsgi(self, environ, start_response):
        raise NotImplementedError

    def start(self):
        self.server.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.stop()
