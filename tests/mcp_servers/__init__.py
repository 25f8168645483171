"""Real MCP servers for tests: the PyPI `mcp-server-time` (stdio), a probe written with the SDK
(stdio, probe_stdio.py) and an SDK server over Streamable HTTP (http_server.py), on loopback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import free_port, wait_for

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")
PROBE = str(HERE / "probe_stdio.py")


class HttpMcpServer:
    """tests/mcp_servers/http_server.py in a subprocess on 127.0.0.1."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([PYTHON, str(HERE / "http_server.py"), str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, deadline=30.0, what="the HTTP MCP server")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"the HTTP MCP server exited: {self.proc.returncode}"
        try:
            httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1.0)
            return True
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()


def time_server(**extra) -> dict:
    return {"command": TIME_SERVER, "args": ["--local-timezone", "UTC"], "env": {"TZ": "UTC"}, **extra}


def probe_server(*args: str, **extra) -> dict:
    return {"command": PYTHON, "args": [PROBE, *args], **extra}


def unframed(text: str) -> str:
    """A tool message without the untrusted-content frame that MCP results get."""
    if "<untrusted-content>" not in text:
        return text
    return text.split("<untrusted-content>\n", 1)[1].rsplit("\n</untrusted-content>", 1)[0]
