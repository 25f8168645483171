"""Rate limits through the HTTP API: per user and agent, per widget visitor, per IP, global,
and one limit held across two server processes sharing a Redis store."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agentd.auth import create_key
from agentd import hookimpl
from agentd.vocab import Principal
from tests.conftest import openai_agent

REPO = Path(__file__).resolve().parent.parent


def _limited(response, code="RATE_LIMITED"):
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == code
    retry = int(response.headers["Retry-After"])
    assert 1 <= retry <= 60
    return retry


def test_the_agents_limit_holds_per_user(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, rate_limit="2/minute")})
    with server.state.db.connection_context():
        alice, bob = ({"Authorization": f"Bearer {create_key(u)[1]}"} for u in ("alice", "bob"))

    def chat(headers, **body):
        return server.client.post("/api/agents/bot/chat", json={"message": "hi", **body}, headers=headers)

    assert [chat(alice).status_code for _ in range(2)] == [200, 200]
    _limited(chat(alice))
    streamed = chat(alice, stream=True)
    assert streamed.headers["content-type"].startswith("application/json")
    _limited(streamed)
    assert chat(bob).status_code == 200
    assert fake_openai.calls == 3
    # A refused turn stores nothing.
    history = server.client.get("/api/agents/bot/chat", headers=alice).json()["messages"]
    assert len(history) == 4


def test_open_mode_counts_per_client_ip(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, rate_limit="1 per minute")})
    other = httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    try:
        assert server.chat("bot", "hi").status_code == 200
        _limited(server.chat("bot", "hi"))
        assert other.post("/api/agents/bot/chat", json={"message": "hi"}).status_code == 200
        _limited(other.post("/api/agents/bot/chat", json={"message": "hi"}))
    finally:
        other.close()


def test_limits_are_per_agent(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, rate_limit="1/minute"),
                            "free": openai_agent(fake_openai)})
    assert server.chat("bot", "hi").status_code == 200
    _limited(server.chat("bot", "hi"))
    assert [server.chat("free", "hi").status_code for _ in range(3)] == [200] * 3


def test_widget_visitors_get_the_widget_limit(agentd_server, fake_openai):
    agent = openai_agent(fake_openai, rate_limit="5/minute", widget={"enabled": True, "rate_limit": "1/minute"})
    server = agentd_server({"bot": agent})

    class Visitors:
        @hookimpl
        def authenticate(self, request):
            name = request.headers.get("X-Test-Visitor")
            return Principal(user_id=f"widget:bot:{name}", agents=["bot"], kind="widget") if name else None

    # The widget's own authenticator is another module's; any `authenticate` hook naming a
    # widget principal gets the widget's limit.
    server.state.registry.manager.register(Visitors())

    def chat(name):
        return server.client.post("/api/agents/bot/chat", json={"message": "hi"},
                                  headers={"X-Test-Visitor": name})

    assert chat("v1").status_code == 200
    _limited(chat("v1"))
    assert chat("v2").status_code == 200
    assert [server.chat("bot", "hi").status_code for _ in range(2)] == [200, 200]


def test_the_global_limit_counts_every_turn(agentd_server, fake_openai):
    server = agentd_server({"a": openai_agent(fake_openai), "b": openai_agent(fake_openai)},
                           global_rate_limit="3/minute")
    assert [server.chat(agent, "hi").status_code for agent in ("a", "b", "a")] == [200, 200, 200]
    _limited(server.chat("b", "hi"))
    assert fake_openai.calls == 3


def test_a_limit_over_the_websocket_is_an_error_frame(agentd_server, fake_openai):
    import json
    from simple_websocket import Client
    server = agentd_server({"bot": openai_agent(fake_openai, rate_limit="1/minute")})
    ws = Client.connect(server.url.replace("http", "ws", 1) + "/api/agents/bot/ws")
    try:
        frames = []
        for _ in range(2):
            ws.send(json.dumps({"type": "message", "message": "hi"}))
            while True:
                frame = json.loads(ws.receive(timeout=10))
                if frame["type"] in ("done", "error"):
                    frames.append(frame)
                    break
    finally:
        ws.close()
    assert frames[0]["type"] == "done"
    assert frames[1]["error"]["code"] == "RATE_LIMITED"


def test_an_unknown_storage_fails_at_start(agentd_server, fake_openai):
    with pytest.raises(Exception, match="nope"):
        agentd_server({"bot": openai_agent(fake_openai)}, rate_limit_storage="nope://somewhere")


# ----------------------------------------------------------- two processes, one Redis

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(check, what: str, proc=None, log=None, tries=150):
    for _ in range(tries):
        try:
            if check():
                return
        except Exception:
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited: {log.read_text() if log else ''}")
        time.sleep(0.1)
    raise AssertionError(f"{what} did not start")


@pytest.fixture
def redis_url(tmp_path):
    """A throwaway redis-server on a free loopback port, without persistence."""
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed")
    import redis
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        _wait_for(client.ping, "redis-server", proc)
        yield f"redis://127.0.0.1:{port}"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def _serve(env: dict, port: int, log: Path):
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "agentd", "serve", "--port", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_a_limit_holds_across_two_processes_sharing_redis(tmp_path, fake_openai, redis_url, database_url):
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "bot.yaml").write_text(openai_agent(fake_openai, rate_limit="3/minute"))
    env = {**os.environ, "AGENTD_DATABASE_URL": database_url, "AGENTD_AGENTS_DIR": str(agents),
           "AGENTD_RATE_LIMIT_STORAGE": redis_url, "AGENTD_LOG_FORMAT": "text"}
    procs, urls = [], []
    try:
        for number in range(2):  # one after the other: both migrate the same database
            port = _free_port()
            log = tmp_path / f"server{number}.log"
            procs.append(_serve(env, port, log))
            urls.append(f"http://127.0.0.1:{port}")
            _wait_for(lambda: httpx.get(urls[-1] + "/healthz", timeout=1).status_code == 200,
                      f"server {number}", procs[-1], log)
        with httpx.Client(timeout=30) as client:
            def chat(url):
                return client.post(f"{url}/api/agents/bot/chat", json={"message": "hi"})
            assert [chat(url).status_code for url in (urls[0], urls[1], urls[0])] == [200, 200, 200]
            _limited(chat(urls[1]))
            _limited(chat(urls[0]))
        assert fake_openai.calls == 3
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
