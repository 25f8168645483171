"""The tool loop through the chat API, against the fake OpenAI server."""
import json

import pytest

from tests.conftest import Reply, openai_agent

PLUGIN = '''
import time
from agentd import hookimpl, ToolContext

def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

def boom(reason: str = "broken") -> str:
    """Always fails."""
    raise RuntimeError(reason)

def whoami(ctx: ToolContext) -> dict:
    """Who is asking, and this agent's configuration for the tool."""
    return {"user": ctx.user_id, "greeting": ctx.config.get("greeting")}

def nap(seconds: float) -> str:
    """Sleep a while."""
    time.sleep(seconds)
    return "rested"

@hookimpl
def register_tools(register):
    register(add)
    register(boom)
    register(whoami, config_schema={"type": "object", "properties": {"greeting": {"type": "string"}},
                                    "additionalProperties": False})
    register(nap, timeout=0.5)
'''


@pytest.fixture
def plugin_dir(tmp_path):
    folder = tmp_path / "myplugins"
    folder.mkdir()
    (folder / "mytools.py").write_text(PLUGIN)
    return folder


@pytest.fixture
def server(agentd_server, fake_openai, plugin_dir):
    tools = ["add", "boom", {"whoami": {"greeting": "hi"}}, "nap"]
    return agentd_server({"bot": openai_agent(fake_openai, tools=tools, max_tool_rounds=2)},
                         plugins_dir=str(plugin_dir))


def _messages(server, conversation_id):
    return server.history("bot", conversation_id=conversation_id).json()["messages"]


def _tool_messages(fake, request_index):
    return [m for m in fake.requests[request_index]["messages"] if m["role"] == "tool"]


def test_one_tool_call_round_trip(server, fake_openai):
    fake_openai.script(Reply(tool_calls=[("add", {"a": 2, "b": 3})]), Reply(content="It is 5."))
    body = server.chat("bot", "What is 2+3?").json()
    assert body["content"] == "It is 5."
    assert body["usage"] == {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    roles = [(m["role"], m.get("tool_calls") is not None) for m in _messages(server, body["conversation_id"])]
    assert roles == [("user", False), ("assistant", True), ("tool", False), ("assistant", False)]
    assert _tool_messages(fake_openai, 1)[0]["content"] == "5"
    assert fake_openai.requests[0]["tools"][0]["function"]["name"] == "add"


def test_parallel_calls_each_get_a_result(server, fake_openai):
    fake_openai.script(Reply(tool_calls=[("add", {"a": 1, "b": 1}), ("add", {"a": 2, "b": 2}),
                                         ("whoami", {})]), Reply(content="done"))
    body = server.chat("bot", "several").json()
    results = _tool_messages(fake_openai, 1)
    assert [r["tool_call_id"] for r in results] == ["call_1", "call_2", "call_3"]
    assert [r["content"] for r in results[:2]] == ["2", "4"]
    assert json.loads(results[2]["content"]) == {"user": "local", "greeting": "hi"}
    stored = [m for m in _messages(server, body["conversation_id"]) if m["role"] == "tool"]
    assert len(stored) == 3


@pytest.mark.parametrize("call, expected", [
    (("add", {"a": "two", "b": 3}), "invalid arguments"),
    (("add", "{not json"), "not valid JSON"),
    (("nosuchtool", {}), "unknown tool 'nosuchtool'"),
    (("boom", {"reason": "kaput"}), "RuntimeError: kaput"),
    (("nap", {"seconds": 3}), "timed out"),
])
def test_tool_failures_are_data_for_the_model(server, fake_openai, call, expected):
    fake_openai.script(Reply(tool_calls=[call]), Reply(content="sorry"))
    response = server.chat("bot", "try it")
    assert response.status_code == 200
    result = _tool_messages(fake_openai, 1)[0]
    assert expected in result["content"]
    stored = [m for m in _messages(server, response.json()["conversation_id"]) if m["role"] == "tool"]
    assert stored[0]["is_error"] is True


def test_round_limit_ends_with_a_call_without_tools(server, fake_openai):
    looping = Reply(tool_calls=[("add", {"a": 1, "b": 2})])
    fake_openai.script(looping, Reply(tool_calls=[("add", {"a": 2, "b": 2})]), Reply(content="final"))
    body = server.chat("bot", "loop forever").json()
    assert body["content"] == "final"
    assert fake_openai.calls == 3
    assert "tools" in fake_openai.requests[1]
    assert "tools" not in fake_openai.requests[2]


def test_repeat_guard_stops_identical_calls(agentd_server, fake_openai, plugin_dir):
    server = agentd_server({"bot": openai_agent(fake_openai, tools=["add"], max_tool_rounds=10,
                                                repeat_limit=2)}, plugins_dir=str(plugin_dir))
    same = Reply(tool_calls=[("add", {"a": 1, "b": 1})])
    fake_openai.script(same, same, same, Reply(content="stopped"))
    assert server.chat("bot", "again and again").json()["content"] == "stopped"
    assert fake_openai.calls == 4
    assert "tools" not in fake_openai.requests[3]


def test_threading_keeps_history(server, fake_openai):
    fake_openai.script(Reply(content="first answer"), Reply(content="second answer"))
    first = server.chat("bot", "one").json()
    second = server.chat("bot", "two", conversation_id=first["conversation_id"]).json()
    assert second["conversation_id"] == first["conversation_id"]
    sent = [(m["role"], m["content"]) for m in fake_openai.requests[1]["messages"]]
    assert sent == [("user", "one"), ("assistant", "first answer"), ("user", "two")]


def test_tool_config_is_validated_when_the_agent_loads(agentd_server, fake_openai, plugin_dir):
    server = agentd_server({"bad": openai_agent(fake_openai, tools=[{"whoami": {"greeting": 5}}]),
                            "good": openai_agent(fake_openai)}, plugins_dir=str(plugin_dir))
    ids = [a["id"] for a in server.client.get("/api/agents").json()["agents"]]
    assert ids == ["good"]
    problem = server.state.problems[0]
    assert problem.key == "tools.0.whoami.greeting"
    assert "greeting: 5" in open(problem.path).read().splitlines()[problem.line - 1]
