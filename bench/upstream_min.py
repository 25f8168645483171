"""A minimal, fast fake OpenAI-compatible upstream for the benchmarks (asyncio, raw HTTP/1.1).

One process, one event loop, keep-alive connections, no framework: its own cost
must stay far below agentd's, or the "floor" would hide what agentd adds.

What it answers is chosen by the request's `model` name, so one upstream serves
every scenario without state:

    "t50"          50 content tokens (streamed: 50 deltas; non-streamed: one message)
    "t60-i1"       60 tokens, one per second when streamed (open-stream benchmark)
    "t1-i0.002"    interval in seconds between streamed tokens

A request that offers `tools` and whose last message is the user's gets one call
to the first tool (arguments `{}`); after the tool result it answers in text.
A model name ending in `-cN` (`t1-c8`) asks for N parallel calls instead of one.

Run: python -m bench.upstream_min --port 0   (prints "listening on PORT" on stdout)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

_MODEL = re.compile(r"t(\d+)(?:-i([0-9.]+))?(?:-c(\d+))?")
_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def plan(model: str) -> tuple[int, float]:
    """(tokens, interval) from a model name like t50-i0.01; defaults 1 token, no wait."""
    match = _MODEL.fullmatch(model or "")
    if not match:
        return 1, 0.0
    return int(match.group(1)), float(match.group(2) or 0.0)


def tool_calls(body: dict, tool: str) -> list[dict]:
    match = _MODEL.fullmatch(body.get("model") or "")
    count = int(match.group(3)) if match and match.group(3) else 1
    return [{"id": f"call_{n + 1}", "type": "function", "function": {"name": tool, "arguments": "{}"}}
            for n in range(count)]


def wants_tool(body: dict) -> str | None:
    tools = body.get("tools") or []
    messages = body.get("messages") or []
    if tools and messages and messages[-1].get("role") == "user":
        return tools[0]["function"]["name"]
    return None


def _message(body: dict) -> dict:
    tool = wants_tool(body)
    if tool:
        return {"role": "assistant", "content": None, "tool_calls": tool_calls(body, tool)}
    tokens, _ = plan(body.get("model", ""))
    return {"role": "assistant", "content": "tok " * tokens}


def completion_bytes(body: dict) -> bytes:
    message = _message(body)
    reason = "tool_calls" if message.get("tool_calls") else "stop"
    return json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "model": body.get("model"),
                       "choices": [{"index": 0, "message": message, "finish_reason": reason}],
                       "usage": _USAGE}).encode()


def _chunk(model: str, delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    payload = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": model,
               "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        payload["usage"] = usage
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)   # one HTTP chunk per SSE event


async def _stream(writer: asyncio.StreamWriter, body: dict) -> None:
    model = body.get("model", "")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n")
    writer.write(_chunk(model, {"role": "assistant"}))
    tool = wants_tool(body)
    if tool:
        for index, call in enumerate(tool_calls(body, tool)):
            writer.write(_chunk(model, {"tool_calls": [{"index": index, **call}]}))
        finish = "tool_calls"
    else:
        tokens, interval = plan(model)
        token = _chunk(model, {"content": "tok "})
        for number in range(tokens):
            if interval and number:
                await asyncio.sleep(interval)
            writer.write(token)
            await writer.drain()
        finish = "stop"
    writer.write(_chunk(model, {}, finish))
    writer.write(_chunk(model, {}, usage=_USAGE))
    data = b"data: [DONE]\n\n"
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    payload = await reader.readexactly(length) if length else b""
    return method, path, payload


def _plain(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            method, path, payload = await _read_request(reader)
            if method != "POST" or not path.endswith("/chat/completions"):
                writer.write(_plain("404 Not Found", b'{"error": {"message": "not found"}}'))
                continue
            body = json.loads(payload or b"{}")
            if body.get("stream"):
                await _stream(writer, body)
            else:
                writer.write(_plain("200 OK", completion_bytes(body)))
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass   # the client closed its keep-alive connection (or sent garbage)
    finally:
        writer.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port, backlog=4096, limit=1 << 20)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("the bench upstream listens on loopback only")
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
