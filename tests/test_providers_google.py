"""The Gemini adapter, driven through the chat API against a fake Generative Language server."""
from __future__ import annotations

import base64

import pytest

from agentd.providers.google import clean_schema, wire_contents
from agentd.vocab import Message, ToolCall
from tests.conftest import sse_events
from tests.fakes.gemini_server import Reply, gemini_agent

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
CALCULATIONS = [("calculator", {"expression": "6*7"}), ("calculator", {"expression": "2+2"})]


def ask(server, message: str, stream: bool, agent: str = "bot", **body) -> dict:
    """The final assistant message of a turn (the `done` event's message when streamed)."""
    response = server.chat(agent, message, stream=stream, **body)
    assert response.status_code == 200, response.text
    if not stream:
        return response.json()
    events = sse_events(response)
    assert events[-1]["type"] == "done", events
    return {**events[-1]["message"], "events": events}


@pytest.fixture
def bot(agentd_server, fake_gemini, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "gm-test")
    agent = gemini_agent(fake_gemini, system_prompt="You are terse.", tools=["calculator"])
    return agentd_server({"bot": agent})


@pytest.mark.parametrize("stream", [False, True])
def test_plain_text(bot, fake_gemini, stream):
    fake_gemini.script(Reply(content="Hello from Gemini", usage=(12, 4)))
    answer = ask(bot, "Hi!", stream)
    assert answer["content"] == "Hello from Gemini"
    assert (answer["provider"], answer["model"]) == ("google", "gemini-fake")
    assert answer["usage"] == {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    assert fake_gemini.paths == [f"/v1beta/models/gemini-fake:{method}"]
    assert fake_gemini.headers[0]["X-Goog-Api-Key"] == "gm-test"
    sent = fake_gemini.requests[0]
    assert sent["systemInstruction"]["parts"][0]["text"].startswith("You are terse.")
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "Hi!"}]}]
    declaration = sent["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "calculator"
    assert "additionalProperties" not in declaration["parameters"]  # Gemini refuses it


def test_deltas_are_streamed_one_by_one(bot, fake_gemini):
    fake_gemini.script(Reply(content="one two three"))
    events = ask(bot, "Count", True)["events"]
    assert [e["content"] for e in events if e["type"] == "delta"] == ["one ", "two ", "three"]


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_calls_round_trip(bot, fake_gemini, stream):
    fake_gemini.script(Reply(tool_calls=CALCULATIONS, usage=(20, 8)),
                       Reply(content="42 and 4", usage=(30, 3)))
    answer = ask(bot, "What are 6*7 and 2+2?", stream)
    assert answer["content"] == "42 and 4"
    assert answer["usage"] == {"prompt_tokens": 50, "completion_tokens": 11, "total_tokens": 61}
    follow_up = fake_gemini.requests[1]["contents"]
    assert [c["role"] for c in follow_up] == ["user", "model", "user"]
    calls = follow_up[1]["parts"]
    assert [p["functionCall"]["args"] for p in calls] == [{"expression": "6*7"}, {"expression": "2+2"}]
    assert calls[0]["thoughtSignature"] == "sig-fake"  # sent back as received
    responses = [p["functionResponse"] for p in follow_up[2]["parts"]]  # one turn for both
    assert [r["name"] for r in responses] == ["calculator", "calculator"]
    assert [r["response"]["result"] for r in responses] == [42, 4]
    history = bot.history("bot", conversation_id=answer["conversation_id"]).json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant"]
    ids = [c["id"] for c in history[1]["tool_calls"]]
    assert ids == ["call_0", "call_1"]  # Gemini gives none: made up, stable, distinct
    assert [m["tool_call_id"] for m in history[2:4]] == ids
    if stream:
        kinds = [e["type"] for e in answer["events"]]
        assert kinds.count("tool_call") == 2 and kinds.count("tool_result") == 2


def test_call_ids_stay_distinct_across_steps(bot, fake_gemini):
    fake_gemini.script(Reply(tool_calls=CALCULATIONS[:1]), Reply(tool_calls=CALCULATIONS[1:]),
                       Reply(content="done"))
    answer = ask(bot, "Compute twice", False)
    history = bot.history("bot", conversation_id=answer["conversation_id"]).json()["messages"]
    ids = [c["id"] for m in history if m.get("tool_calls") for c in m["tool_calls"]]
    assert ids == ["call_0", "call_1"]


@pytest.mark.parametrize("stream", [False, True])
def test_image_becomes_inline_data(bot, fake_gemini, stream):
    fake_gemini.script(Reply(content="A tiny picture"))
    answer = ask(bot, "What is this?", stream, images=[{"data": PNG, "mime_type": "image/png"}])
    assert answer["content"] == "A tiny picture"
    parts = fake_gemini.requests[0]["contents"][-1]["parts"]
    assert parts == [{"text": "What is this?"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]


def test_thought_parts_are_streamed_as_reasoning(agentd_server, fake_gemini):
    options = {"thinkingConfig": {"includeThoughts": True}}
    server = agentd_server({"bot": gemini_agent(fake_gemini, model={"options": options})})
    fake_gemini.script(Reply(reasoning="The user greets me", content="Hello"))
    answer = ask(server, "Hi", True)
    reasoning = "".join(e["content"] for e in answer["events"] if e["type"] == "reasoning")
    assert reasoning == "The user greets me" and answer["content"] == "Hello"
    assert fake_gemini.requests[0]["generationConfig"] == options


def test_thoughts_stay_out_of_a_non_streamed_answer(bot, fake_gemini):
    fake_gemini.script(Reply(reasoning="Hidden thinking", content="Visible answer"))
    assert ask(bot, "Hi", False)["content"] == "Visible answer"


def test_generation_settings_come_from_the_model_block(agentd_server, fake_gemini):
    server = agentd_server({"bot": gemini_agent(fake_gemini, model={"max_tokens": 256,
                                                                    "temperature": 0.2})})
    assert ask(server, "Hi", False)["content"] == "echo: Hi"
    sent = fake_gemini.requests[0]
    assert sent["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 256}
    assert "systemInstruction" not in sent and "tools" not in sent


def test_gemini_is_an_alias(agentd_server, fake_gemini):
    server = agentd_server({"bot": gemini_agent(fake_gemini, model={"provider": "gemini"})})
    assert ask(server, "Hi", True)["content"] == "echo: Hi"


# -- wire mapping without HTTP: shapes the chat API cannot produce on its own -----------

def test_tool_results_are_named_from_their_call_when_the_name_is_missing():
    call = ToolCall("call_0", "lookup", '{"q": 1}')
    contents, _ = wire_contents([Message("user", "x"), Message("assistant", None, tool_calls=[call]),
                                 Message("tool", "[1, 2]", tool_call_id="call_0")])
    assert contents[2]["parts"] == [{"functionResponse": {"name": "lookup",
                                                          "response": {"result": [1, 2]}}}]


def test_plain_text_results_are_wrapped_in_an_object():
    contents, _ = wire_contents([Message("tool", "sunny", tool_call_id="c", name="weather")])
    assert contents[0]["parts"][0]["functionResponse"]["response"] == {"result": "sunny"}


def test_schemas_are_reduced_to_what_gemini_accepts():
    schema = {"type": "object", "additionalProperties": False, "$schema": "x",
              "properties": {"unit": {"anyOf": [{"enum": ["c", "f"]}, {"type": "null"}], "default": None},
                             "tags": {"type": "array", "items": {"type": "string", "examples": ["a"]}}}}
    assert clean_schema(schema) == {
        "type": "object",
        "properties": {"unit": {"enum": ["c", "f"], "type": "string", "default": None,
                                      "nullable": True},
                       "tags": {"type": "array", "items": {"type": "string"}}}}
