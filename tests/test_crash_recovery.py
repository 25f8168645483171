"""`kill -9` of the server in the middle of a stream, then a restart on the same database.

The server runs as a real subprocess (`python -m agentd serve`). Nothing is
lost: the user's message and the text streamed so far are in the history,
no row stays `streaming`, and the conversation takes new turns once the dead
process's turn lease has run out.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Reply, openai_agent
from tests.test_streaming import LONG_TEXT, iter_events, wait_for

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


@pytest.fixture
def processes():
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        proc.stop()


def test_kill_9_mid_stream_then_restart_loses_nothing(tmp_path, database_url, fake_openai, processes):
    agents = write_agent(tmp_path / "agents", "bot", openai_agent(fake_openai))
    port = free_port()
    env = server_env(database_url, agents, port, turn_lease_seconds=2)
    first = ServerProcess(["-m", "agentd", "serve"], env, port, tmp_path / "first.log")
    processes.append(first)
    fake_openai.script(Reply(content=LONG_TEXT * 5, chunk_delay=0.05))
    received = []
    with first.stream("bot", "Tell me everything") as response:
        events = iter_events(response)
        start = next(events)
        conversation = start["conversation_id"]
        saved = None
        for event in events:  # until the heartbeat has saved some of the text (no write per delta)
            assert event["type"] == "delta", event
            received.append(event["content"])
            if len(received) % 4 == 0:
                saved = first.history("bot", conversation)[-1]["content"]
                if saved:
                    break
        assert saved, "the stream ended before its text was saved"
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)

    second = ServerProcess(["-m", "agentd", "serve"], env, port, tmp_path / "second.log")
    processes.append(second)

    def settled():
        rows = second.history("bot", conversation)
        return rows if all(m.get("status") != "streaming" for m in rows) else None

    rows = wait_for(settled, deadline=30.0, what="recovery of the streaming row")
    assert [(m["role"], m["id"]) for m in rows] == [("user", start["user_message_id"]),
                                                   ("assistant", start["id"])]
    assert rows[0]["content"] == "Tell me everything"
    # what the heartbeat had saved survives, marked partial
    assert rows[1]["status"] == "partial"
    assert rows[1]["content"].startswith(saved) and (LONG_TEXT * 5).startswith(rows[1]["content"])
    # the dead process's lease has run out: the conversation takes a new turn
    fake_openai.script(Reply(content="Back again"))
    response = second.client.post("/api/agents/bot/chat",
                                  json={"message": "Still there?", "conversation_id": conversation})
    assert response.status_code == 200, response.text
    assert response.json()["content"] == "Back again"
    assert [m["role"] for m in second.history("bot", conversation)] == ["user", "assistant", "user",
                                                                        "assistant"]


def test_start_up_recovery_leaves_a_live_turn_of_another_process_alone(tmp_path, database_url, fake_openai,
                                                                       processes):
    agents = write_agent(tmp_path / "agents", "bot", openai_agent(fake_openai))
    port, other_port = free_port(), free_port()
    first = ServerProcess(["-m", "agentd", "serve"], server_env(database_url, agents, port,
                                                               turn_lease_seconds=2),
                          port, tmp_path / "first.log")
    processes.append(first)
    fake_openai.script(Reply(content=LONG_TEXT * 3, chunk_delay=0.05))
    with first.stream("bot", "Go") as response:
        events = iter_events(response)
        start = next(events)
        assert next(events)["type"] == "delta"
        # a second process starts on the same database while the first one streams
        other = ServerProcess(["-m", "agentd", "serve"], server_env(database_url, agents, other_port,
                                                                    turn_lease_seconds=2),
                              other_port, tmp_path / "other.log")
        processes.append(other)
        statuses = set()
        for event in events:  # the stream outlives the lease it started with: heartbeat renewals
            if event["type"] != "delta":
                break
            statuses.add(other.history("bot", start["conversation_id"])[-1]["status"])
        rest = list(events)
    assert statuses == {"streaming"}  # the other process's recovery never touched the live row
    assert (rest or [event])[-1]["type"] == "done"
    rows = other.history("bot", start["conversation_id"])
    assert rows[-1]["status"] == "complete" and rows[-1]["content"] == LONG_TEXT * 3
