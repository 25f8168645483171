"""gunicorn stopping (SIGTERM) while runs go on without a client, or in a tool step.

gunicorn's own wait covers open connections only; a run whose client left
holds none, so the worker gives it the same grace period and then ends it
with its partial answer stored, and a tool step cut short keeps every call
paired with a result.
"""
from __future__ import annotations

import signal

from tests.conftest import Reply, openai_agent
from tests.support import ServerProcess, free_port, iter_frames, server_env, write_agent
from tests.test_streaming import LONG_TEXT

PLUGIN = '''
import time
from agentd import hookimpl

def slow_lookup(order_id: str) -> str:
    """Look an order up (slowly)."""
    time.sleep(30)
    return "shipped"

@hookimpl
def register_tools(register):
    register(slow_lookup)
'''


def gunicorn(tmp_path, database_url, fake, processes) -> ServerProcess:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow.py").write_text(PLUGIN)
    agents = write_agent(tmp_path / "agents", "bot", openai_agent(fake, tools=["slow_lookup"]))
    port = free_port()
    command = ["-m", "gunicorn", "-c", "gunicorn.conf.py", "--workers", "1", "--graceful-timeout", "3",
               "wsgi:app"]
    server = ServerProcess(command, server_env(database_url, agents, port, plugins_dir=plugins), port,
                           tmp_path / "gunicorn.log")
    processes.append(server)
    return server


def test_sigterm_ends_client_less_runs_with_partial_and_paired_rows(tmp_path, database_url, fake_openai,
                                                                    processes, agentd_server):
    server = gunicorn(tmp_path, database_url, fake_openai, processes)
    fake_openai.script(Reply(content=LONG_TEXT * 20, chunk_delay=0.05),
                       Reply(content="Checking.", tool_calls=[("slow_lookup", {"order_id": "A1"})]))
    starts = []
    for message in ("Talk", "Where is A1?"):
        with server.stream("bot", message) as response:
            frames = iter_frames(response)
            starts.append(next(frames)[1])
            for _, event in frames:
                if event["type"] in ("delta", "tool_call"):
                    break   # then the client goes away: each run goes on alone
    server.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    log = server.log.read_text()
    assert "ended 2 running turn(s)" in log, log[-3000:]
    reader = agentd_server({"bot": openai_agent(fake_openai)})
    talk = reader.history("bot", conversation_id=starts[0]["conversation_id"]).json()["messages"]
    assert talk[-1]["status"] == "partial" and (LONG_TEXT * 20).startswith(talk[-1]["content"])
    tool = reader.history("bot", conversation_id=starts[1]["conversation_id"]).json()["messages"]
    assert [m["role"] for m in tool] == ["user", "assistant", "tool"]
    assert tool[2]["tool_call_id"] == tool[1]["tool_calls"][0]["id"]
    assert tool[2]["is_error"] is True and tool[2]["content"].startswith("cancelled: ")
