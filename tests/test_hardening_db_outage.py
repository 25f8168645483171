"""PostgreSQL going away and coming back, under gunicorn (gunicorn.conf.py, one gevent worker).

The test owns a throwaway PostgreSQL cluster (.ci/start-postgres with its own
folder and port), stops it while a stream is in flight and requests keep
coming, then starts it again. While it is down every request answers 503
SERVICE_UNAVAILABLE (none waits for the worker's timeout: the client's own
timeout here is far below it), a WebSocket gets an `error` frame of that code
and stays open, the stream in flight ends with an `error` event, and once the database is back agentd serves again by itself (the same
worker, never restarted). Skipped when the PostgreSQL binaries are absent.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import json

import httpx
import pytest
import simple_websocket

from tests.conftest import Reply, openai_agent
from tests.support import REPO, ServerProcess, free_port, server_env, wait_for, write_agent
from tests.test_streaming import iter_events

CLIENT_TIMEOUT = 15.0  # far below gunicorn's 60 s worker timeout: a hang would fail the test


class Cluster:
    """A PostgreSQL cluster of the test's own, started and stopped with .ci/start-postgres."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="agentd-outage-pg-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.env = {**os.environ, "AGENTD_PG_DIR": self.dir, "AGENTD_PG_PORT": str(self.port)}

    def _script(self, *args: str) -> str:
        done = subprocess.run(["bash", str(REPO / ".ci" / "start-postgres"), *args], env=self.env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    def start(self) -> str:
        return self._script()

    def stop(self) -> None:
        self._script("--stop")  # immediate: like a crash, every connection dropped

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster():
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl") and not os.environ.get("PGBIN"):
        pytest.skip("PostgreSQL binaries are not installed")
    cluster = Cluster()
    yield cluster
    cluster.remove()


def _database(admin_url: str) -> str:
    import psycopg
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE agentd_outage")
    return admin_url.rsplit("/", 1)[0] + "/agentd_outage"


def _request(url: str, kind: str, conversation_id: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client:
        if kind == "history":
            response = client.get("/api/agents/bot/chat", params={"conversation_id": conversation_id})
        elif kind == "chat":
            response = client.post("/api/agents/bot/chat", json={"message": "hello?"})
        elif kind == "stream":
            response = client.post("/api/agents/bot/chat", json={"message": "hello?", "stream": True})
        elif kind == "conversations":
            response = client.get("/api/agents/bot/conversations")
        else:
            response = client.get("/healthz")
    return response.status_code, response.json(), time.monotonic() - started


def test_postgres_restart_gives_fast_503s_ends_streams_and_recovers(tmp_path, cluster, fake_openai, processes):
    url = _database(cluster.start())
    agents = write_agent(tmp_path / "agents", "bot", openai_agent(fake_openai))
    port = free_port()
    command = ["-m", "gunicorn", "-c", "gunicorn.conf.py", "--workers", "1", "wsgi:app"]
    server = ServerProcess(command, server_env(url, agents, port), port, tmp_path / "outage.log")
    processes.append(server)
    first = server.client.post("/api/agents/bot/chat", json={"message": "remember me"})
    assert first.status_code == 200, first.text
    conversation_id = first.json()["conversation_id"]

    # A stream in flight: sixty words, a tenth of a second apart.
    fake_openai.script(Reply(content=" ".join(f"w{i}" for i in range(60)), chunk_delay=0.1))
    events: list[dict] = []
    reader = threading.Thread(target=_read_stream, args=(server.url, events), daemon=True)
    reader.start()
    wait_for(lambda: sum(e["type"] == "delta" for e in events) >= 3, what="the stream to be under way")

    socket = simple_websocket.Client.connect(server.url.replace("http", "ws") + "/api/agents/bot/ws")
    cluster.stop()
    socket.send(json.dumps({"type": "message", "message": "anyone there?"}))
    frame = json.loads(socket.receive(timeout=CLIENT_TIMEOUT))
    assert frame["type"] == "error" and frame["error"]["code"] == "SERVICE_UNAVAILABLE", frame
    kinds = ["history", "chat", "stream", "conversations", "healthz"] * 6
    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(lambda kind: (kind, *_request(server.url, kind, conversation_id)), kinds))
    for kind, status, body, seconds in outcomes:
        assert status == 503, (kind, status, body)
        if kind == "healthz" and "error" not in body:
            assert body["database"] == "error", body
        else:
            assert body["error"]["code"] == "SERVICE_UNAVAILABLE", (kind, body)
    print("503 latencies:", sorted((round(o[3], 3), o[0]) for o in outcomes))  # never asserted

    reader.join(timeout=60)
    assert not reader.is_alive()
    assert events[-1]["type"] == "error", events[-3:]
    assert events[-1]["error"]["code"] == "SERVICE_UNAVAILABLE"

    cluster.start()
    wait_for(lambda: server.client.get("/healthz").status_code == 200, deadline=60,
             what="agentd to see the database again")
    again = server.client.post("/api/agents/bot/chat", json={"message": "back?"})
    assert again.status_code == 200 and again.json()["content"] == "echo: back?"
    socket.send(json.dumps({"type": "message", "message": "and now?"}))  # the same socket works again
    frames = [json.loads(socket.receive(timeout=CLIENT_TIMEOUT))]
    while frames[-1]["type"] not in ("done", "error"):
        frames.append(json.loads(socket.receive(timeout=CLIENT_TIMEOUT)))
    assert frames[-1]["type"] == "done" and frames[-1]["message"]["content"] == "echo: and now?", frames[-1]
    socket.close()
    history = server.history("bot", conversation_id)
    assert [m["content"] for m in history[:2]] == ["remember me", "echo: remember me"]
    assert server.proc.poll() is None
    assert server.log.read_text().count("Booting worker") == 1  # the same worker all along


def _read_stream(base_url: str, events: list) -> None:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        with client.stream("POST", "/api/agents/bot/chat", json={"message": "tell me", "stream": True}) as response:
            for event in iter_events(response):
                events.append(event)
