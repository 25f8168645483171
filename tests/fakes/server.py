"""A tiny threaded HTTP server on 127.0.0.1 for fakes: a WSGI app on an ephemeral port."""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

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


@dataclass
class ScriptedReply:
    """One scripted answer; each vendor fake subclasses it to set its model name and fault point."""

    content: str | None = None
    tool_calls: list[tuple[str, dict | str]] = field(default_factory=list)  # (name, arguments)
    reasoning: str | None = None
    usage: tuple[int, int] = (10, 5)
    status: int = 200
    headers: dict = field(default_factory=dict)
    chunk_delay: float = 0.0          # seconds between streamed chunks
    fault: str | None = None          # truncate | malformed | error_event | stall | garbage
    fault_at: int = 2                 # index of the streamed chunk the fault replaces
    model: str = "fake-model"
    func: object = None               # optional callable(request_body) -> reply


def pieces(text: str) -> list[str]:
    """A text cut into words that keep their trailing space, as models stream it."""
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words) if w or i == 0] if text else []


def agent_yaml(provider: str, model_name: str, base_url: str, /, **extra) -> str:
    """YAML for a test agent on a fake server; `extra` keys are merged in (`model` updates the block)."""
    import yaml
    spec = {"name": "Test agent", "description": "An agent for tests",
            "model": {"provider": provider, "name": model_name, "base_url": base_url, "retries": 0}}
    for key, value in extra.items():
        if key == "model":
            spec["model"].update(value)
        else:
            spec[key] = value
    return yaml.safe_dump(spec, sort_keys=False)


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
