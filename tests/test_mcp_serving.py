"""MCP servers in `agentd agents check`, and under gunicorn's gevent worker (a real subprocess):
the loop thread, stdio children and HTTP sessions work with monkey-patching, and a turn
waiting on an MCP tool does not block the worker's other requests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import yaml

from tests.conftest import Reply, openai_agent
from tests.mcp_servers import HttpMcpServer, probe_server, time_server, unframed
from tests.support import REPO, ServerProcess, free_port, server_env, wait_for, write_agent


def check(folder) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENTD_AGENTS_DIR": str(folder)}
    return subprocess.run([sys.executable, "-m", "agentd", "agents", "check"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def agent_with(servers: dict) -> str:
    return yaml.safe_dump({"name": "T", "model": {"provider": "openai", "name": "m"}, "mcp_servers": servers},
                          sort_keys=False)


@pytest.mark.parametrize("servers,where,words", [
    ({"time": {"command": "no-such-mcp-server-here"}}, "7: mcp_servers.time.command", "was not found on PATH"),
    ({"docs": {"url": "ftp://example.com/mcp"}}, "7: mcp_servers.docs.url", "http:// or https://"),
    ({"docs": {"url": "http://[::1/mcp"}}, "7: mcp_servers.docs.url", "not a valid URL"),
    ({"both": {"command": "true", "url": "http://h/mcp"}}, "7: mcp_servers.both", "either `command`"),
    ({"docs": {"url": "http://h/mcp", "env": {"A": "b"}}}, "9: mcp_servers.docs.env", "not allowed"),
    ({"docs": {"url": "http://h/mcp", "headers": {"X": "{{ user.id "}}}, "9: mcp_servers.docs.headers.X", "bad template"),
    ({"time": {"command": "true", "timout": 3}}, "8: mcp_servers.time.timout", "unknown key"),
    ({"a__b": {"command": "true"}}, "6: mcp_servers", "does not match"),
])
def test_agents_check_names_file_line_and_key(tmp_path, servers, where, words):
    (tmp_path / "bot.yaml").write_text(agent_with(servers))
    result = check(tmp_path)
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if line.startswith("error"))
    assert f"bot.yaml:{where}" in line and words in line, result.stdout


def test_agents_check_accepts_the_documented_block(tmp_path):
    servers = {"time": time_server(tools=["get_current_time"], timeout=20),
               "docs": {"url": "https://mcp.example.com/mcp", "requires_approval": True,
                        "headers": {"Authorization": "Bearer ${DOCS_TOKEN}", "X-User-Id": "{{ user.id }}"}}}
    (tmp_path / "bot.yaml").write_text(agent_with(servers))
    result = check(tmp_path)
    assert result.returncode == 0, result.stdout


@pytest.fixture
def mcp_http(tmp_path):
    server = HttpMcpServer(tmp_path / "http.log")
    yield server
    server.stop()


def test_under_gunicorn_gevent_mcp_calls_work_and_do_not_block_the_worker(
        tmp_path, database_url, fake_openai, mcp_http, processes):
    servers = {"probe": probe_server(tools=["add", "pid"]), "web": {"url": mcp_http.url, "tools": ["slow", "whoami"],
                                                                   "headers": {"X-User-Id": "{{ user.id }}"}}}
    agents = write_agent(tmp_path / "agents", "bot", openai_agent(fake_openai, mcp_servers=servers))
    port = free_port()
    command = ["-m", "gunicorn", "-c", "gunicorn.conf.py", "--workers", "1", "wsgi:app"]
    server = ServerProcess(command, server_env(database_url, agents, port), port, tmp_path / "gunicorn.log")
    processes.append(server)
    fake_openai.script(Reply(tool_calls=[("probe__add", {"a": 2, "b": 3}), ("web__whoami", {}), ("probe__pid", {})]),
                       Reply(content="ok"))
    response = server.client.post("/api/agents/bot/chat", json={"message": "add"})
    assert response.status_code == 200, response.text
    add, whoami, pid = [unframed(m["content"]) for m in fake_openai.requests[-1]["messages"] if m["role"] == "tool"]
    assert add == "5" and json.loads(whoami)["user"] == "local"
    assert running(int(pid))

    # While one turn waits on a slow MCP tool, the same worker still answers.
    fake_openai.script(Reply(tool_calls=[("web__slow", {"seconds": 4})]), Reply(content="done"))
    finished = threading.Event()
    thread = threading.Thread(target=lambda: (server.client.post("/api/agents/bot/chat", json={"message": "slow"}),
                                              finished.set()))
    thread.start()
    wait_for(lambda: len(fake_openai.requests) == 3, what="the model to ask for the slow tool")
    assert server.client.get("/healthz").status_code == 200
    assert not finished.is_set()  # /healthz answered while the MCP call was still running
    thread.join(timeout=60)
    assert finished.is_set()
    assert unframed(fake_openai.requests[-1]["messages"][-1]["content"]) == "finally"

    server.signal(signal.SIGTERM)  # the worker stops its stdio servers on the way out
    server.proc.wait(timeout=60)
    wait_for(lambda: not running(int(pid)), what="the stdio MCP server to stop")


def running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
