"""gunicorn (gevent worker, gunicorn.conf.py) stopping with streams running, as a real subprocess.

On SIGTERM gunicorn stops accepting; a stream that can finish within
graceful_timeout finishes; one that cannot ends with an `error` event before
the deadline and its text so far is stored, so the worker exits on its own
instead of being killed.
"""
from __future__ import annotations

import signal

import httpx
import pytest
import simple_websocket

from tests.conftest import Reply, openai_agent
from tests.support import ServerProcess, free_port, server_env, wait_for, write_agent
from tests.test_streaming import LONG_TEXT, iter_events


def gunicorn(tmp_path, database_url, fake, graceful: int, name: str) -> ServerProcess:
    agents = write_agent(tmp_path / "agents", "bot", openai_agent(fake))
    port = free_port()
    command = ["-m", "gunicorn", "-c", "gunicorn.conf.py", "--workers", "1",
               "--graceful-timeout", str(graceful), "wsgi:app"]
    return ServerProcess(command, server_env(database_url, agents, port), port, tmp_path / f"{name}.log")


def refused(server: ServerProcess) -> bool:
    try:
        httpx.get(server.url + "/healthz", timeout=2.0)
    except httpx.TransportError:
        return True
    return False


def test_sigterm_lets_a_running_stream_finish_and_closes_idle_sockets(tmp_path, database_url, fake_openai,
                                                                     processes):
    server = gunicorn(tmp_path, database_url, fake_openai, graceful=20, name="finish")
    processes.append(server)
    idle = simple_websocket.Client.connect(server.url.replace("http", "ws") + "/api/agents/bot/ws")
    fake_openai.script(Reply(content=LONG_TEXT, chunk_delay=0.05))
    with server.stream("bot", "Go") as response:
        events = iter_events(response)
        start = next(events)
        assert next(events)["type"] == "delta"
        server.signal(signal.SIGTERM)
        wait_for(lambda: refused(server), what="gunicorn to stop accepting")
        rest = list(events)
    assert rest[-1]["type"] == "done" and rest[-1]["message"]["content"] == LONG_TEXT
    assert server.proc.wait(timeout=60) == 0
    with pytest.raises(simple_websocket.ConnectionClosed):
        idle.receive(timeout=5)  # the idle socket was closed by the server, not left to be killed
    log = server.log.read_text()
    assert "Worker graceful timeout" not in log, log[-2000:]
    assert start["conversation_id"]


def test_sigterm_ends_a_long_stream_with_an_error_and_stores_its_text(tmp_path, database_url, fake_openai,
                                                                     processes, agentd_server):
    server = gunicorn(tmp_path, database_url, fake_openai, graceful=3, name="cut")
    processes.append(server)
    fake_openai.script(Reply(content=LONG_TEXT * 20, chunk_delay=0.05))
    received = []
    with server.stream("bot", "Go on and on") as response:
        events = iter_events(response)
        start = next(events)
        received.append(next(events)["content"])
        server.signal(signal.SIGTERM)
        rest = list(events)
    assert rest[-1]["type"] == "error" and rest[-1]["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert {e["type"] for e in rest[:-1]} <= {"delta"}
    received += [e["content"] for e in rest if e["type"] == "delta"]
    assert server.proc.wait(timeout=60) == 0
    log = server.log.read_text()
    assert "Worker graceful timeout" not in log and "ended 1 running turn(s)" in log, log[-2000:]
    # the same database, read by a fresh server: the text the client saw is stored as partial
    reader = agentd_server({"bot": openai_agent(fake_openai)})
    rows = reader.history("bot", conversation_id=start["conversation_id"]).json()["messages"]
    assert [(m["role"], m["id"]) for m in rows] == [("user", start["user_message_id"]),
                                                   ("assistant", start["id"])]
    assert rows[1]["status"] == "partial"
    assert rows[1]["content"].startswith("".join(received)) and (LONG_TEXT * 20).startswith(rows[1]["content"])
