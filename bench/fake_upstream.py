"""A fast fake OpenAI-compatible upstream for benchmarks: gevent, raw sockets, HTTP/1.1 keep-alive.

Its own cost must stay far below agentd's, or the "direct" baseline would hide
what agentd adds; one process holds thousands of slow streams as greenlets.

What it answers is chosen by the request's `model` name (the same names as
bench/upstream_min.py, so either can serve bench/__main__.py):

    "t50"          50 content tokens ("tok0 tok1 …"): streamed as 50 chunks, or one message
    "t60-i1"       60 tokens, one per second when streamed
    "t1-i0.002"    any interval in seconds between streamed tokens

Any other model name gets `default_tokens` tokens at `default_interval` (the
--tokens/--interval options). A request offering `tools` whose last message is
the user's gets one call to the first tool (arguments `{}`), then text.

    python -m bench.fake_upstream --port 0 [--interval 1.0 --tokens 20]
    # prints "listening on PORT"; base URL http://127.0.0.1:PORT/v1
"""
from __future__ import annotations

import argparse
import json
import re
import sys

import gevent
from gevent.server import StreamServer

_MODEL = re.compile(r"t(\d+)(?:-i([0-9.]+))?")
_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
MAX_BODY = 16 * 1024 * 1024


def plan(model: str, default_tokens: int = 20, default_interval: float = 0.0) -> tuple[int, float]:
    """(tokens, interval) for a model name like t50-i0.01."""
    match = _MODEL.fullmatch(model or "")
    if not match:
        return default_tokens, default_interval
    return int(match.group(1)), float(match.group(2) or 0.0)


def wants_tool(body: dict) -> str | None:
    """The first offered tool's name, when the model should call it now."""
    tools = body.get("tools") or []
    messages = body.get("messages") or []
    if tools and messages and messages[-1].get("role") == "user":
        return tools[0].get("function", {}).get("name")
    return None


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    data = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": "bench",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return _frame(data)


def _frame(data) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    line = f"data: {payload}\n\n".encode()
    return f"{len(line):x}\r\n".encode() + line + b"\r\n"   # one HTTP chunk per SSE event


def _completion(tokens: int, tool: str | None) -> dict:
    message = {"role": "assistant", "content": None if tool else " ".join(f"tok{i}" for i in range(tokens))}
    if tool:
        message["tool_calls"] = [{"id": "call_1", "type": "function",
                                  "function": {"name": tool, "arguments": "{}"}}]
    return {"id": "chatcmpl-bench", "object": "chat.completion", "model": "bench", "usage": _USAGE,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}]}


class FakeUpstream:
    """The server; `start()` on 127.0.0.1 in this process, or `python -m bench.fake_upstream`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tokens: int = 20, interval: float = 0.0):
        self.tokens, self.interval = tokens, interval
        self.server = StreamServer((host, port), self._handle, backlog=4096)
        self.requests = 0

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeUpstream":
        self.server.start()
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        self.server.stop()

    # -- one connection -------------------------------------------------------------
    def _handle(self, sock, _addr) -> None:
        reader = sock.makefile("rb")
        try:
            while self._one_request(sock, reader):
                pass
        except (OSError, ValueError):
            pass  # the client went away mid-stream; nothing to clean up
        finally:
            reader.close()
            sock.close()

    def _one_request(self, sock, reader) -> bool:
        request_line = reader.readline(65536)
        if not request_line:
            return False
        headers = {}
        while True:
            line = reader.readline(65536)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = min(int(headers.get("content-length", "0") or 0), MAX_BODY)
        body = json.loads(reader.read(length) or b"{}") if length else {}
        self.requests += 1
        keep = headers.get("connection", "").lower() != "close"
        method, path = (request_line.decode("latin-1").split(" ") + ["", ""])[:2]
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            sock.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            return keep
        tokens, interval = plan(body.get("model", ""), self.tokens, self.interval)
        tool = wants_tool(body)
        if body.get("stream"):
            self._stream(sock, tokens, interval, tool)
        else:
            payload = json.dumps(_completion(tokens, tool)).encode()
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         + f"content-length: {len(payload)}\r\n\r\n".encode() + payload)
        return keep

    def _stream(self, sock, tokens: int, interval: float, tool: str | None) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
        sock.sendall(_chunk({"role": "assistant"}))
        if tool:
            sock.sendall(_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                  "function": {"name": tool, "arguments": "{}"}}]}))
            sock.sendall(_chunk({}, "tool_calls"))
        else:
            for i in range(tokens):
                if interval and i:
                    gevent.sleep(interval)
                sock.sendall(_chunk({"content": f"tok{i}" + (" " if i < tokens - 1 else "")}))
            sock.sendall(_chunk({}, "stop"))
        sock.sendall(_frame({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "choices": [],
                             "usage": _USAGE}))
        sock.sendall(_frame("[DONE]") + b"0\r\n\r\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=20, help="tokens for unknown model names")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between streamed tokens")
    args = parser.parse_args(argv)
    upstream = FakeUpstream(args.host, args.port, args.tokens, args.interval).start()
    print(f"listening on {upstream.port}", flush=True)
    try:
        upstream.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
