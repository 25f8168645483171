"""MCP servers as tool sources, through real chat turns: real MCP servers on loopback
(mcp-server-time from PyPI and an SDK probe over stdio, an SDK server over Streamable
HTTP), agentd serving over HTTP, the fake OpenAI server as the model."""
from __future__ import annotations

import json
import os
import signal

import httpx
import pytest

from agentd.auth import create_key
from tests.conftest import Reply, openai_agent, sse_events
from tests.mcp_servers import HttpMcpServer, probe_server, time_server, unframed


@pytest.fixture(scope="module")
def mcp_http(tmp_path_factory):
    server = HttpMcpServer(tmp_path_factory.mktemp("mcp") / "http.log")
    yield server
    server.stop()


def offered(request: dict) -> dict:
    """The tools of one model request, by name."""
    return {t["function"]["name"]: t["function"] for t in request.get("tools") or []}


def tool_messages(request: dict) -> list[str]:
    """The tool messages of one model request, unframed."""
    return [unframed(m["content"]) for m in request["messages"] if m["role"] == "tool"]


def user_client(server, user: str) -> httpx.Client:
    with server.state.db.connection_context():
        key = create_key(user)[1]
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60.0)


def test_tools_are_offered_with_schemas_and_a_call_streams_and_is_stored(agentd_server, fake_openai):
    servers = {"time": time_server(tools=["get_current_time"], timeout=20)}
    server = agentd_server(agents={"bot": openai_agent(fake_openai, mcp_servers=servers)})
    fake_openai.script(Reply(tool_calls=[("time__get_current_time", {"timezone": "UTC"})]), Reply(content="done"))
    response = server.chat("bot", "what time is it?", stream=True)
    assert response.status_code == 200
    events = sse_events(response)
    types = [e["type"] for e in events]
    assert types.index("tool_call") < types.index("tool_result") < types.index("done")
    tools = offered(fake_openai.requests[0])
    assert list(tools) == ["time__get_current_time"]  # the allowlist leaves convert_time out
    schema = tools["time__get_current_time"]["parameters"]
    assert "timezone" in schema["properties"] and schema["required"] == ["timezone"]
    assert "time" in tools["time__get_current_time"]["description"].lower()
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["is_error"] is False and result["name"] == "time__get_current_time"
    assert "untrusted content returned by the time__get_current_time tool" in result["content"]
    assert json.loads(unframed(result["content"]))["timezone"] == "UTC"
    assert json.loads(tool_messages(fake_openai.requests[1])[0])["timezone"] == "UTC"
    stored = server.history("bot", conversation_id=events[0]["conversation_id"]).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert json.loads(unframed(stored[2]["content"]))["timezone"] == "UTC"
    info = server.client.get("/api/agents/bot").json()
    assert info["mcp_servers"] == ["time"] and "time__get_current_time" not in info["tools"]


def test_http_server_results_allowlist_structured_content_and_images(agentd_server, fake_openai, mcp_http):
    servers = {"web": {"url": mcp_http.url, "tools": ["weather", "picture"], "timeout": 10}}
    server = agentd_server(agents={"bot": openai_agent(fake_openai, mcp_servers=servers)})
    fake_openai.script(Reply(tool_calls=[("web__weather", {"city": "Oslo"}), ("web__picture", {})]),
                       Reply(content="done"))
    assert server.chat("bot", "weather?").json()["content"] == "done"
    assert sorted(offered(fake_openai.requests[0])) == ["web__picture", "web__weather"]
    weather, picture = tool_messages(fake_openai.requests[1])
    assert json.loads(weather) == {"city": "Oslo", "temperature_c": 21}
    assert "image/png" in picture and "iVBOR" not in picture  # a placeholder, never base64


def test_progress_messages_stream_as_status_events(agentd_server, fake_openai, mcp_http):
    servers = {"web": {"url": mcp_http.url, "tools": ["steps"]}}
    server = agentd_server(agents={"bot": openai_agent(fake_openai, mcp_servers=servers)})
    fake_openai.script(Reply(tool_calls=[("web__steps", {})]), Reply(content="done"))
    events = sse_events(server.chat("bot", "go", stream=True))
    kinds = [(e["type"], e.get("message")) for e in events if e["type"] in ("tool_call", "status", "tool_result")]
    assert kinds == [("tool_call", None), ("status", "step 1 of 2"), ("status", "step 2 of 2"), ("tool_result", None)]
    assert unframed(next(e for e in events if e["type"] == "tool_result")["content"]) == "both steps done"


def test_headers_carry_env_and_user_per_caller(agentd_server, fake_openai, mcp_http, monkeypatch):
    monkeypatch.setenv("MCP_TEST_TOKEN", "tok-from-env")
    headers = {"Authorization": "Bearer ${MCP_TEST_TOKEN}", "X-User-Id": "{{ user.id }}"}
    servers = {"web": {"url": mcp_http.url, "headers": headers, "tools": ["whoami"]}}
    server = agentd_server(agents={"bot": openai_agent(fake_openai, mcp_servers=servers)})
    seen = {}
    for user in ("alice", "bob", "alice"):
        fake_openai.script(Reply(tool_calls=[("web__whoami", {})]), Reply(content="ok"))
        with user_client(server, user) as client:
            response = client.post("/api/agents/bot/chat", json={"message": "who am I?"})
        assert response.status_code == 200, response.text
        seen.setdefault(user, []).append(json.loads(tool_messages(fake_openai.requests[-1])[0]))
    assert seen["alice"] == [{"authorization": "Bearer tok-from-env", "user": "alice"}] * 2
    assert seen["bob"] == [{"authorization": "Bearer tok-from-env", "user": "bob"}]


def test_a_dead_server_leaves_its_tools_out_and_the_turn_uses_the_others(agentd_server, fake_openai):
    servers = {"gone": {"url": "http://127.0.0.1:9/mcp", "timeout": 5},
               "crash": probe_server("--die", timeout=5),
               "time": time_server(tools=["get_current_time"])}
    server = agentd_server(agents={"bot": openai_agent(fake_openai, mcp_servers=servers)})
    fake_openai.script(Reply(tool_calls=[("time__get_current_time", {"timezone": "UTC"})]), Reply(content="done"))
    response = server.chat("bot", "time?")
    assert response.status_code == 200 and response.json()["content"] == "done"
    first = fake_openai.requests[0]
    assert list(offered(first)) == ["time__get_current_time"]
    system = first["messages"][0]
    assert system["role"] == "system" and "gone, crash" in system["content"]  # the model is told
    assert json.loads(tool_messages(fake_openai.requests[1])[0])["timezone"] == "UTC"


def test_a_timeout_and_a_raising_tool_are_error_results(agentd_server, fake_openai, mcp_http):
    servers = {"web": {"url": mcp_http.url, "tools": ["slow"], "timeout": 1},
               "web2": {"url": mcp_http.url, "tools": ["explode"], "timeout": 20}}
    server = agentd_server(agents={"bot": openai_agent(fake_openai, mcp_servers=servers)})
    fake_openai.script(Reply(tool_calls=[("web__slow", {"seconds": 5}), ("web2__explode", {"reason": "x"})]),
                       Reply(content="sorry"))
    events = sse_events(server.chat("bot", "go", stream=True))
    results = {e["name"]: e for e in events if e["type"] == "tool_result"}
    assert results["web__slow"]["is_error"] and "did not answer within 1 s" in results["web__slow"]["content"]
    assert results["web2__explode"]["is_error"] and "explode" in results["web2__explode"]["content"]
    assert events[-1]["type"] == "done" and events[-1]["message"]["content"] == "sorry"


def test_a_long_tool_name_is_cut_to_64_characters_and_still_callable(agentd_server, fake_openai):
    server = agentd_server(agents={"bot": openai_agent(fake_openai, mcp_servers={"probe": probe_server()})})
    fake_openai.script(Reply(content="listing"))
    server.chat("bot", "list")
    long_name = next(n for n in offered(fake_openai.requests[0]) if "deliberately" in n)
    assert len(long_name) == 64 and long_name.startswith("probe__a_deliberately_long")
    fake_openai.script(Reply(tool_calls=[(long_name, {"text": "hi"})]), Reply(content="done"))
    server.chat("bot", "call it")
    assert tool_messages(fake_openai.requests[-1]) == ["long: hi"]


def test_the_stdio_child_sees_only_its_env_and_path(agentd_server, fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    monkeypatch.setenv("AGENTD_SECRET_KEY", "also-secret")
    servers = {"probe": probe_server(env={"FOO": "bar"}, tools=["environment"])}
    server = agentd_server(agents={"bot": openai_agent(fake_openai, mcp_servers=servers)})
    fake_openai.script(Reply(tool_calls=[("probe__environment", {})]), Reply(content="done"))
    server.chat("bot", "env?")
    seen = json.loads(tool_messages(fake_openai.requests[1])[0])
    assert seen["FOO"] == "bar"
    # LC_CTYPE is set by the child's own Python (PEP 538 locale coercion), not inherited.
    assert set(seen["names"]) <= {"FOO", "PATH", "LC_CTYPE"} and "PATH" in seen["names"]


def test_the_stdio_process_is_reused_across_turns_and_restarted_when_it_dies(agentd_server, fake_openai):
    servers = {"probe": probe_server(env={"RUN": "reuse"}, tools=["pid"])}
    server = agentd_server(agents={"bot": openai_agent(fake_openai, mcp_servers=servers)})

    def pid() -> int:
        fake_openai.script(Reply(tool_calls=[("probe__pid", {})]), Reply(content="done"))
        assert server.chat("bot", "pid?").status_code == 200
        return int(tool_messages(fake_openai.requests[-1])[0])

    first = pid()
    assert pid() == first
    os.kill(first, signal.SIGKILL)
    second = pid()
    assert second != first and pid() == second


@pytest.mark.parametrize("ttl,counts", [("60000", [1, 1]), ("0", [1, 2])])
def test_tool_lists_are_cached_for_the_ttl_the_server_gives(agentd_server, fake_openai, ttl, counts):
    servers = {"probe": probe_server("--ttl", ttl, tools=["list_count"])}
    server = agentd_server(agents={"bot": openai_agent(fake_openai, mcp_servers=servers)})
    seen = []
    for _ in counts:
        fake_openai.script(Reply(tool_calls=[("probe__list_count", {})]), Reply(content="done"))
        server.chat("bot", "how many lists?")
        seen.append(int(tool_messages(fake_openai.requests[-1])[0]))
    assert seen == counts


def test_tool_hooks_see_mcp_tools_like_any_other(agentd_server, fake_openai, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "audit.py").write_text(
        "from agentd import hookimpl\n"
        "from agentd.vocab import ToolResult\n"
        "@hookimpl\n"
        "def before_tool_call(tool, arguments, context):\n"
        "    if tool.name == 'probe__add':\n"
        "        return {**arguments, 'b': 100}\n"
        "@hookimpl\n"
        "def after_tool_call(tool, arguments, result, context):\n"
        "    return ToolResult(result.tool_call_id, result.name, 'audited ' + result.content)\n")
    server = agentd_server(agents={"bot": openai_agent(fake_openai, mcp_servers={"probe": probe_server(tools=["add"])})},
                           plugins_dir=str(plugins))
    fake_openai.script(Reply(tool_calls=[("probe__add", {"a": 1, "b": 2})]), Reply(content="done"))
    server.chat("bot", "add")
    [message] = [m["content"] for m in fake_openai.requests[1]["messages"] if m["role"] == "tool"]
    assert message.startswith("audited ") and unframed(message) == "101"


def test_a_folder_plugin_adds_run_tools_and_a_note(agentd_server, fake_openai, tmp_path):
    """The run_tools hook MCP uses is open to any plugin: per-run tools, bound to the caller."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "per_run.py").write_text(
        "from dataclasses import replace\n"
        "from agentd import hookimpl\n"
        "from agentd.tools import tool_from_function\n"
        "@hookimpl\n"
        "def run_tools(run, tool_context):\n"
        "    user = tool_context.user_id\n"
        "    def whoami() -> str:\n"
        "        'Who is asking.'\n"
        "        return 'you are ' + user\n"
        "    run.system_notes.append('A per-run note.')\n"
        "    return {'whoami': (tool_from_function(whoami), replace(tool_context, config={}))}\n")
    server = agentd_server(agents={"bot": openai_agent(fake_openai)}, plugins_dir=str(plugins))
    fake_openai.script(Reply(tool_calls=[("whoami", {})]), Reply(content="done"))
    server.chat("bot", "who?")
    assert "whoami" in offered(fake_openai.requests[0])
    assert fake_openai.requests[0]["messages"][0]["content"].endswith("A per-run note.")
    assert tool_messages(fake_openai.requests[1]) == ["you are local"]
