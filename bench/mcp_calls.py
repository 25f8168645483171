"""`python -m bench.mcp_calls [--calls N]`: what one MCP tool call costs against a pluggy tool.

The same `add(a, b)` function three ways, each called through agentd's tool
runner (`run_tool_calls`: argument validation, the plugin hooks, the result
cache lookup, the timeout), as a turn calls it:
- a plain function registered as a tool (the pluggy way),
- an MCP tool over stdio (bench/mcp_server.py as agentd's child process),
- an MCP tool over Streamable HTTP (the same server on 127.0.0.1).
Also: the cold start (first run: start or connect, list) and the per-run cost
of offering a server's tools, listed again (the server's ttlMs is 0, the SDK's
default) or from the cache (the server allows 60 s). Medians and p99 over N
sequential calls; prints a Markdown table. Not a test: nothing asserts a time.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from agentd.mcp.tools import run_tools
from agentd.tools import ToolContext, tool_from_function
from agentd.tools.hooks import tool_hooks_from
from agentd.turn.toolrun import ToolRunSettings, run_tool_calls
from agentd.vocab import ToolCall
from bench.turns import median, percentile

SERVER = str(Path(__file__).with_name("mcp_server.py"))


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_http() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)
            return proc, f"http://127.0.0.1:{port}/mcp"
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the HTTP MCP server did not start")


def time_calls(name: str, pair: tuple, calls: int) -> list[float]:
    hooks, settings, tools = tool_hooks_from(None), ToolRunSettings(), {name: pair}
    samples = []
    for i in range(calls):
        call = ToolCall(f"c{i}", name, json.dumps({"a": i, "b": 1}))
        start = time.perf_counter()
        result = [e.payload for e in run_tool_calls([call], tools, settings, hooks) if e.type == "tool_result"][0]
        samples.append(time.perf_counter() - start)
        assert result.content.endswith(f"\n{i + 1}\n</untrusted-content>") or result.content == str(i + 1)
    return samples


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mcp_calls")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    proc, url = start_http()
    try:
        block = {"s": {"command": sys.executable, "args": [SERVER, "stdio"]}, "h": {"url": url}}
        ctx = ToolContext(agent_id="bench", user_id="bench")
        (tools, missing), cold = timed(lambda: run_tools(block, ctx, set()))
        assert not missing, missing
        _, warm = timed(lambda: [run_tools(block, ctx, set()) for _ in range(50)])
        hinted = {"c": {"command": sys.executable, "args": [SERVER, "stdio", "60000"]}}
        run_tools(hinted, ctx, set())
        _, cached = timed(lambda: [run_tools(hinted, ctx, set()) for _ in range(50)])
        plain = time_calls("add", (tool_from_function(add), ToolContext()), args.calls)
        stdio = time_calls("s__add", tools["s__add"], args.calls)
        http = time_calls("h__add", tools["h__add"], args.calls)
    finally:
        proc.kill()
    base = median(plain)
    print(f"| what ({args.calls} sequential calls) | p50 | p99 | p50 ÷ pluggy tool |\n|---|---|---|---|")
    for label, samples in (("pluggy tool `add`", plain), ("MCP stdio `s__add`", stdio), ("MCP HTTP `h__add`", http)):
        print(f"| {label} | {median(samples) * 1000:.2f} ms | {percentile(samples, 99) * 1000:.2f} ms "
              f"| {median(samples) / base:.1f}× |")
    print(f"| first run: start stdio + connect HTTP + list both | {cold * 1000:.0f} ms | | |")
    print(f"| each later run: offer both servers' tools (servers say ttlMs 0: listed again) "
          f"| {warm / 50 * 1000:.2f} ms | | |")
    print(f"| each later run: offer a stdio server's tools (server says ttlMs 60000: cached) "
          f"| {cached / 50 * 1000:.2f} ms | | |")


if __name__ == "__main__":
    main()
