"""The Anthropic adapter, driven through the chat API against a fake Messages API server."""
from __future__ import annotations

import base64

import pytest

from agentd.providers.anthropic import wire_messages
from agentd.vocab import Message, ToolCall
from tests.conftest import sse_events
from tests.fakes.anthropic_server import Reply, anthropic_agent

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
CALCULATIONS = [("calculator", {"expression": "6*7"}), ("calculator", {"expression": "2+2"})]


def ask(server, message: str, stream: bool, **body) -> dict:
    """The final assistant message of a turn (the `done` event's message when streamed)."""
    response = server.chat("bot", message, stream=stream, **body)
    assert response.status_code == 200, response.text
    if not stream:
        return response.json()
    events = sse_events(response)
    assert events[-1]["type"] == "done", events
    return {**events[-1]["message"], "events": events}


@pytest.fixture
def bot(agentd_server, fake_anthropic, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    agent = anthropic_agent(fake_anthropic, system_prompt="You are terse.", tools=["calculator"])
    return agentd_server({"bot": agent})


@pytest.mark.parametrize("stream", [False, True])
def test_plain_text(bot, fake_anthropic, stream):
    fake_anthropic.script(Reply(content="Hello from Claude", usage=(12, 4)))
    answer = ask(bot, "Hi!", stream)
    assert answer["content"] == "Hello from Claude"
    assert (answer["provider"], answer["model"]) == ("anthropic", "claude-fake")
    assert answer["usage"] == {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
    sent, headers = fake_anthropic.requests[0], fake_anthropic.headers[0]
    assert sent["system"].startswith("You are terse.")
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi!"}]}]
    assert sent["max_tokens"] == 4096 and sent["model"] == "claude-fake"
    assert sent.get("stream", False) is stream
    assert headers["X-Api-Key"] == "sk-ant-test" and headers["Anthropic-Version"] == "2023-06-01"
    assert sent["tools"][0]["name"] == "calculator" and "input_schema" in sent["tools"][0]


def test_deltas_are_streamed_one_by_one(bot, fake_anthropic):
    fake_anthropic.script(Reply(content="one two three"))
    events = ask(bot, "Count", True)["events"]
    assert [e["content"] for e in events if e["type"] == "delta"] == ["one ", "two ", "three"]


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_calls_round_trip(bot, fake_anthropic, stream):
    fake_anthropic.script(Reply(tool_calls=CALCULATIONS, usage=(20, 8)),
                          Reply(content="42 and 4", usage=(30, 3)))
    answer = ask(bot, "What are 6*7 and 2+2?", stream)
    assert answer["content"] == "42 and 4"
    assert answer["usage"] == {"prompt_tokens": 50, "completion_tokens": 11, "total_tokens": 61}
    follow_up = fake_anthropic.requests[1]["messages"]
    assert [m["role"] for m in follow_up] == ["user", "assistant", "user"]
    uses = [b for b in follow_up[1]["content"] if b["type"] == "tool_use"]
    assert [(u["id"], u["input"]) for u in uses] == [("toolu_1", {"expression": "6*7"}),
                                                     ("toolu_2", {"expression": "2+2"})]
    results = follow_up[2]["content"]  # both results merged into one user message
    assert [r["type"] for r in results] == ["tool_result", "tool_result"]
    assert [r["tool_use_id"] for r in results] == ["toolu_1", "toolu_2"]
    assert '"result": 42' in results[0]["content"] and '"result": 4' in results[1]["content"]
    if stream:
        kinds = [e["type"] for e in answer["events"]]
        assert kinds.count("tool_call") == 2 and kinds.count("tool_result") == 2
    history = bot.history("bot", conversation_id=answer["conversation_id"]).json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [c["id"] for c in history[1]["tool_calls"]] == ["toolu_1", "toolu_2"]


@pytest.mark.parametrize("stream", [False, True])
def test_image_becomes_an_image_block(bot, fake_anthropic, stream):
    fake_anthropic.script(Reply(content="A tiny picture"))
    answer = ask(bot, "What is this?", stream, images=[{"data": PNG, "mime_type": "image/png"}])
    assert answer["content"] == "A tiny picture"
    blocks = fake_anthropic.requests[0]["messages"][-1]["content"]
    assert blocks[0] == {"type": "image",
                         "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert blocks[1] == {"type": "text", "text": "What is this?"}


def test_reasoning_is_streamed_as_reasoning_events(bot, fake_anthropic):
    fake_anthropic.script(Reply(reasoning="The user greets me", content="Hello"))
    answer = ask(bot, "Hi", True)
    reasoning = "".join(e["content"] for e in answer["events"] if e["type"] == "reasoning")
    assert reasoning == "The user greets me" and answer["content"] == "Hello"
    kinds = [e["type"] for e in answer["events"]]
    assert kinds.index("reasoning") < kinds.index("delta")


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_blocks_go_back_signed_during_a_tool_loop(agentd_server, fake_anthropic, stream):
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    server = agentd_server({"bot": anthropic_agent(fake_anthropic, tools=["calculator"],
                                                   model={"options": thinking})})
    fake_anthropic.script(Reply(reasoning="I should compute", tool_calls=CALCULATIONS[:1]),
                          Reply(content="42"))
    assert ask(server, "6*7?", stream)["content"] == "42"
    first, second = fake_anthropic.requests
    assert first["thinking"] == thinking["thinking"]
    assistant = second["messages"][1]["content"]
    assert assistant[0] == {"type": "thinking", "thinking": "I should compute", "signature": "sig-fake"}
    assert assistant[1]["type"] == "tool_use"


def test_max_tokens_and_temperature_come_from_the_model_block(agentd_server, fake_anthropic):
    server = agentd_server({"bot": anthropic_agent(fake_anthropic,
                                                   model={"max_tokens": 256, "temperature": 0.2})})
    assert ask(server, "Hi", False)["content"] == "echo: Hi"
    sent = fake_anthropic.requests[0]
    assert (sent["max_tokens"], sent["temperature"]) == (256, 0.2)
    assert "system" not in sent and "tools" not in sent


def test_history_is_sent_as_alternating_roles(bot, fake_anthropic):
    first = ask(bot, "Remember 7", False)
    ask(bot, "What did I say?", False, conversation_id=first["conversation_id"])
    messages = fake_anthropic.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [{"type": "text", "text": "echo: Remember 7"}]


# -- wire mapping without HTTP: shapes the chat API cannot produce on its own -----------

def test_system_messages_in_history_join_the_system_prompt():
    wire, system = wire_messages([Message("system", "Be brief."), Message("user", "Hi")])
    assert system == ["Be brief."] and [m["role"] for m in wire] == ["user"]


def test_broken_tool_arguments_are_sent_as_an_empty_object():
    call = ToolCall("toolu_9", "calculator", "{not json")
    wire, _ = wire_messages([Message("user", "x"), Message("assistant", None, tool_calls=[call]),
                             Message("tool", "oops", tool_call_id="toolu_9")])
    assert wire[1]["content"] == [{"type": "tool_use", "id": "toolu_9", "name": "calculator", "input": {}}]


def test_empty_assistant_messages_are_left_out():
    wire, _ = wire_messages([Message("user", "a"), Message("assistant", None), Message("user", "b")])
    assert wire == [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
