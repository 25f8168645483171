"""Two agentd server processes on one database (SQLite file, or PostgreSQL with AGENTD_TEST_POSTGRES_URL).

What must hold across processes, as under gunicorn with several workers or on
several hosts: message order, one turn at a time per conversation (409
CONVERSATION_BUSY from the other process), Idempotency-Key, and ownership.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Reply, openai_agent

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m agentd serve` on a free loopback port."""

    def __init__(self, database_url: str, agents_dir: Path, log_path: Path, **env):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "AGENTD_DATABASE_URL": database_url, "AGENTD_AGENTS_DIR": str(agents_dir),
                   "AGENTD_LOG_LEVEL": "WARNING", "AGENTD_LOG_FORMAT": "text", **env}
        self.log = open(log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "agentd", "serve", "--port", str(self.port)],
                                        cwd=REPO, env=environ, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def wait_ready(self) -> "ServerProcess":
        for _ in range(300):
            if self.process.poll() is not None:
                raise RuntimeError(f"agentd exited: {Path(self.log.name).read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if self.client.get("/healthz").status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("agentd did not become ready")

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def chat(self, message: str, key: str | None = None, **body) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(body.pop("headers", {}))
        return self.client.post("/api/agents/bot/chat", json={"message": message, **body}, headers=headers)


@pytest.fixture
def spawn(tmp_path, database_url):
    """spawn(agents={"bot": yaml}, count=2, **env) -> [ServerProcess, ...] sharing one database."""
    started: list[ServerProcess] = []

    def start(agents: dict[str, str], count: int = 2, **env) -> list[ServerProcess]:
        folder = tmp_path / f"agents{len(started)}"
        folder.mkdir()
        for agent_id, text in agents.items():
            (folder / f"{agent_id}.yaml").write_text(textwrap.dedent(text))
        batch = [ServerProcess(database_url, folder, tmp_path / f"server{len(started) + i}.log", **env)
                 for i in range(count)]  # started together: migrations race on a fresh database
        started.extend(batch)
        return [server.wait_ready() for server in batch]

    yield start
    for server in started:
        server.stop()


def test_message_order_holds_across_processes(spawn, fake_openai):
    a, b = spawn({"bot": openai_agent(fake_openai)})
    fake_openai.script(*[Reply(content=f"answer {i}") for i in range(6)])
    first = a.chat("message 0").json()
    conversation = first["conversation_id"]
    for i in range(1, 6):
        server = (a, b)[i % 2]
        response = server.chat(f"message {i}", conversation_id=conversation)
        assert response.status_code == 200, response.text
    for server in (a, b):
        messages = server.client.get("/api/agents/bot/chat", params={"conversation_id": conversation}).json()
        contents = [m["content"] for m in messages["messages"]]
        assert contents == [x for i in range(6) for x in (f"message {i}", f"answer {i}")]
        ids = [m["id"] for m in messages["messages"]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_turn_running_in_one_process_makes_the_other_answer_409(spawn, fake_openai):
    a, b = spawn({"bot": openai_agent(fake_openai)})
    fake_openai.script(Reply(content="first"),
                       Reply(content="a slow answer in many small words", chunk_delay=0.3),
                       Reply(content="after"))
    conversation = a.chat("hi").json()["conversation_id"]
    with a.client.stream("POST", "/api/agents/bot/chat",
                         json={"message": "slow", "conversation_id": conversation, "stream": True}) as slow:
        lines = slow.iter_lines()
        assert any(line.startswith("data:") and '"delta"' in line for line in lines)  # the turn is running
        busy = b.chat("meanwhile", conversation_id=conversation)
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"]["code"] == "CONVERSATION_BUSY"
        rest = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
        assert rest[-1]["type"] == "done"
    assert b.chat("after", conversation_id=conversation).status_code == 200
    history = b.client.get("/api/agents/bot/chat", params={"conversation_id": conversation}).json()
    assert "meanwhile" not in [m["content"] for m in history["messages"]]  # the refused one is not stored


def test_idempotency_key_holds_across_processes(spawn, fake_openai):
    pytest.importorskip("agentd.policies.idempotency")
    a, b = spawn({"bot": openai_agent(fake_openai)})
    fake_openai.script(Reply(content="once"), Reply(content="twice?"))
    headers = {"Idempotency-Key": "order-42"}
    first = a.chat("charge me", headers=headers)
    again = b.chat("charge me", headers=dict(headers))
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and fake_openai.calls == 1
    reused = b.chat("something else", headers=dict(headers))
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_ownership_holds_across_processes(spawn, fake_openai, database_url):
    from agentd.auth import create_key
    from agentd.store import connect_database
    database = connect_database(database_url)
    with database.connection_context():
        _, alice = create_key("alice")
        _, bob = create_key("bob")
    database.close()
    a, b = spawn({"bot": openai_agent(fake_openai)})
    fake_openai.script(Reply(content="for alice"))
    conversation = a.chat("mine", key=alice).json()["conversation_id"]
    as_bob = {"Authorization": f"Bearer {bob}"}
    assert b.chat("let me in", key=bob, conversation_id=conversation).status_code == 403
    read = b.client.get("/api/agents/bot/chat", params={"conversation_id": conversation}, headers=as_bob)
    assert read.status_code == 403 and read.json()["error"]["code"] == "FORBIDDEN"
    assert b.client.get(f"/api/conversations/{conversation}", headers=as_bob).status_code == 403
    assert b.client.get("/api/agents/bot/chat", params={"conversation_id": conversation}).status_code == 401
    mine = b.client.get("/api/agents/bot/chat", params={"conversation_id": conversation},
                        headers={"Authorization": f"Bearer {alice}"})
    assert [m["content"] for m in mine.json()["messages"]] == ["mine", "for alice"]
