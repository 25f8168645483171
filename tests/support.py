"""Helpers for tests that run agentd as a real subprocess, and for polling."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

def wait_for(condition, deadline: float = 20.0, what: str = "condition"):
    """Poll `condition()` until it is truthy; fails after `deadline` seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")



REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """agentd in a subprocess on 127.0.0.1:<port>; `command` is what follows the Python executable."""

    def __init__(self, command: list[str], env: dict, port: int, log: Path):
        self.port, self.url, self.log = port, f"http://127.0.0.1:{port}", log
        self.handle = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, *command], cwd=REPO, env=env,
                                     stdout=self.handle, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=30.0)
        wait_for(self._ready, deadline=30.0, what=f"the server on port {port} ({log})")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def stream(self, agent: str, message: str, **body):
        return self.client.stream("POST", f"/api/agents/{agent}/chat",
                                  json={"message": message, "stream": True, **body})

    def history(self, agent: str, conversation_id: str) -> list[dict]:
        response = self.client.get(f"/api/agents/{agent}/chat", params={"conversation_id": conversation_id})
        assert response.status_code == 200, response.text
        return response.json()["messages"]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.handle.close()


def server_env(database_url: str, agents_dir: Path, port: int, **settings) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env.update({"AGENTD_DATABASE_URL": database_url, "AGENTD_AGENTS_DIR": str(agents_dir),
                "AGENTD_HOST": "127.0.0.1", "AGENTD_PORT": str(port), "AGENTD_LOG_FORMAT": "text",
                "AGENTD_ENTRY_POINTS": "false", "PYTHONUNBUFFERED": "1"})
    env.update({f"AGENTD_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def write_agent(folder: Path, agent_id: str, yaml_text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / f"{agent_id}.yaml").write_text(textwrap.dedent(yaml_text))
    return folder


def iter_frames(response: httpx.Response):
    """(id, event) for each SSE event of a streamed response as it arrives; id None when absent."""
    import json
    data, event_id = [], None
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line == "" and data:
            yield event_id, json.loads("\n".join(data))
            data, event_id = [], None


def seq_of(event_id: str) -> int:
    """The seq of an SSE id `<run_id>:<seq>`."""
    return int(event_id.rsplit(":", 1)[1])


class RedisServer:
    """A throwaway redis-server on a free loopback port, without persistence."""

    def __init__(self, folder: Path):
        import shutil
        binary = shutil.which("redis-server")
        if not binary:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis
        self.client = redis.Redis(host="127.0.0.1", port=self.port)

        def ready():
            try:
                return self.client.ping()
            except redis.ConnectionError:
                return False
        wait_for(ready, what="redis-server")

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)
