"""`agentd chat AGENT` driven through stdin against a running server, as a real subprocess."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import Reply, openai_agent
from tests.support import REPO, free_port


def run_chat(url: str, agent: str, stdin: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "agentd", "chat", agent, "--url", url], cwd=REPO,
                          input=stdin, capture_output=True, text=True, timeout=60, env=env)


def test_chat_keeps_one_conversation_across_lines(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    fake_openai.script(Reply(content="Nice to meet you, Ada."), Reply(content="Your name is Ada."))
    result = run_chat(server.url, "bot", "My name is Ada\n\nWhat is my name?\n")
    assert result.returncode == 0, result.stderr
    assert "bot> Nice to meet you, Ada.\n" in result.stdout
    assert "bot> Your name is Ada.\n" in result.stdout
    # the second request carried the first exchange: one conversation
    second = [(m["role"], m["content"]) for m in fake_openai.requests[1]["messages"] if m["role"] != "system"]
    assert second == [("user", "My name is Ada"), ("assistant", "Nice to meet you, Ada."),
                      ("user", "What is my name?")]
    history = server.history("bot").json()["messages"]
    assert len({m["conversation_id"] for m in history}) == 1
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert fake_openai.requests[0]["stream"] is True


def test_chat_shows_errors_and_goes_on(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    fake_openai.script(Reply(content="Hello ", fault="truncate"), Reply(content="Fine now"))
    result = run_chat(server.url, "bot", "One\nTwo\n")
    assert result.returncode == 0, result.stderr
    assert "[error MODEL_ERROR]" in result.stdout
    assert "bot> Fine now\n" in result.stdout
    assert len({m["conversation_id"] for m in server.history("bot").json()["messages"]}) == 1


def test_chat_with_an_unknown_agent_prints_the_api_error(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    result = run_chat(server.url, "nobody", "Hi\n")
    assert result.returncode == 0, result.stderr
    assert "[404 AGENT_NOT_FOUND] Agent nobody does not exist" in result.stdout


def test_chat_without_a_server_says_so(tmp_path):
    result = run_chat(f"http://127.0.0.1:{free_port()}", "bot", "Hi\n")
    assert result.returncode == 1
    assert "[cannot reach http://127.0.0.1:" in result.stdout
    assert "Traceback" not in result.stderr
