"""Streaming a turn as Server-Sent Events over a real socket: order, causality, breaks.

Nothing here asserts a time: "the first delta arrived while the model was
still producing" is checked as an ordering (the fake had not finished its
stream when the client held the first delta), and waits for something to
happen poll a condition with a generous deadline.
"""
from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import Reply, openai_agent, sse_events
from tests.support import wait_for

LONG_TEXT = " ".join(f"word{i}" for i in range(40))
TOOL_PLUGIN = '''
from agentd import hookimpl

def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

@hookimpl
def register_tools(register):
    register(add)
'''


# -- helpers shared by the other streaming test modules --------------------------------
def iter_events(response: httpx.Response):
    """The JSON events of a streamed response, as they arrive."""
    data = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield json.loads("\n".join(data))
            data = []


def open_stream(server, agent: str, message: str, **body):
    """A streamed chat request, still open: use as a context manager."""
    return server.client.stream("POST", f"/api/agents/{agent}/chat",
                                json={"message": message, "stream": True, **body})


def messages(server, agent: str, conversation_id: str) -> list[dict]:
    return server.history(agent, conversation_id=conversation_id).json()["messages"]


def assistant_settled(server, agent: str, conversation_id: str):
    """The last assistant message once it is no longer `streaming` (else None)."""
    rows = [m for m in messages(server, agent, conversation_id) if m["role"] == "assistant"]
    if rows and rows[-1]["status"] != "streaming":
        return rows[-1]
    return None


# -- the tests -----------------------------------------------------------------------------
@pytest.fixture
def bot(agentd_server, fake_openai):
    return agentd_server({"bot": openai_agent(fake_openai)})


def test_events_come_in_order_and_deltas_add_up_to_the_answer(bot, fake_openai):
    fake_openai.script(Reply(content="Once upon a time there was a stream", reasoning="A story."))
    response = bot.chat("bot", "Tell me a story", stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    assert "no-cache" in response.headers["cache-control"]
    events = sse_events(response)
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "done"
    assert types[1] == "reasoning" and set(types[2:-1]) == {"delta"}
    start, done = events[0], events[-1]
    deltas = [e["content"] for e in events if e["type"] == "delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == done["message"]["content"] == "Once upon a time there was a stream"
    assert done["message"]["id"] == start["id"]
    assert done["message"]["conversation_id"] == start["conversation_id"]
    assert done["usage"]["total_tokens"] == 15
    stored = messages(bot, "bot", start["conversation_id"])
    assert [(m["role"], m["id"]) for m in stored] == [("user", start["user_message_id"]),
                                                     ("assistant", start["id"])]
    assert stored[1]["status"] == "complete" and stored[1]["content"] == done["message"]["content"]


def test_every_event_carries_an_event_line_matching_its_type(bot, fake_openai):
    fake_openai.script(Reply(content="Hi there"))
    blocks = [b for b in bot.chat("bot", "Hi", stream=True).text.split("\n\n") if b.strip()]
    for block in blocks:
        lines = block.splitlines()
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ")
        assert json.loads(lines[1][6:])["type"] == lines[0][7:]


def test_first_delta_reaches_the_client_while_the_model_is_still_producing(bot, fake_openai):
    fake_openai.script(Reply(content=LONG_TEXT, chunk_delay=0.05))
    with open_stream(bot, "bot", "Go") as response:
        events = iter_events(response)
        assert next(events)["type"] == "start"
        first = next(events)
        assert first["type"] == "delta" and first["content"] == "word0 "
        # Causality, not timing: the upstream stream is still running.
        assert fake_openai.streams_finished == 0 and fake_openai.streams_closed_early == 0
        rest = list(events)
    assert rest[-1]["type"] == "done"
    assert first["content"] + "".join(e["content"] for e in rest if e["type"] == "delta") == LONG_TEXT
    wait_for(lambda: fake_openai.streams_finished == 1, what="the fake to finish")


def test_a_tool_turn_streams_the_call_and_its_result(agentd_server, fake_openai, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "adder.py").write_text(TOOL_PLUGIN)
    server = agentd_server({"bot": openai_agent(fake_openai, tools=["add"])}, plugins_dir=str(plugins))
    fake_openai.script(Reply(content="Let me add.", tool_calls=[("add", {"a": 2, "b": 3})]),
                       Reply(content="It is 5."))
    events = sse_events(server.chat("bot", "2+3?", stream=True))
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "done"
    call = types.index("tool_call")
    result = types.index("tool_result")
    assert call < result
    assert "delta" in types[1:call]            # the first model call's text
    assert "delta" in types[result:]           # the answer after the tool ran
    assert events[call]["tool_call"]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert events[result]["tool_call_id"] == events[call]["tool_call"]["id"]
    assert events[result]["name"] == "add" and events[result]["content"] == "5"
    assert events[result]["is_error"] is False
    assert events[-1]["message"]["content"] == "It is 5."
    stored = messages(server, "bot", events[0]["conversation_id"])
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["function"]["name"] == "add"
    assert stored[1]["id"] == events[0]["id"]
    assert all(m["status"] == "complete" for m in stored if m["role"] == "assistant")


def test_a_client_leaving_mid_stream_leaves_a_partial_answer_and_closes_the_model_call(agentd_server, fake_openai):
    # The agent asks for the old behaviour; by default the run goes on (tests/test_runs.py).
    bot = agentd_server({"bot": openai_agent(fake_openai, runs={"on_disconnect": "stop"})})
    fake_openai.script(Reply(content=LONG_TEXT, chunk_delay=0.05))
    received = []
    with open_stream(bot, "bot", "Go") as response:
        events = iter_events(response)
        start = next(events)
        while len(received) < 3:
            event = next(events)
            if event["type"] == "delta":
                received.append(event["content"])
    # the client is gone: the turn stops, keeps its text, and hangs up on the model
    conversation = start["conversation_id"]
    stored = wait_for(lambda: assistant_settled(bot, "bot", conversation), what="the partial answer")
    assert stored["status"] == "partial" and stored["id"] == start["id"]
    assert stored["content"].startswith("".join(received))
    assert LONG_TEXT.startswith(stored["content"]) and stored["content"] != LONG_TEXT
    wait_for(lambda: fake_openai.streams_closed_early == 1, what="the model call to be closed")
    assert fake_openai.streams_finished == 0
    # the conversation is free again, and the partial answer is in the next request's history
    fake_openai.script(Reply(content="Again"))
    again = wait_for(lambda: (r := bot.chat("bot", "More", conversation_id=conversation)).status_code != 409
                     and r, what="the turn lock to be released")
    assert again.status_code == 200 and again.json()["content"] == "Again"
    history = fake_openai.requests[-1]["messages"]
    assert [m["role"] for m in history if m["role"] != "system"] == ["user", "assistant", "user"]


def test_an_upstream_cut_mid_stream_ends_with_an_error_event_and_keeps_the_text(bot, fake_openai):
    fake_openai.script(Reply(content="Hello big world", fault="truncate"))
    response = bot.chat("bot", "Hi", stream=True)
    assert response.status_code == 200
    events = sse_events(response)
    assert [e["type"] for e in events] == ["start", "delta", "error"]
    assert events[1]["content"] == "Hello "
    assert events[-1]["error"]["code"] == "MODEL_ERROR"
    assert "ended before the answer was complete" in events[-1]["error"]["message"]
    stored = messages(bot, "bot", events[0]["conversation_id"])
    assert [(m["role"], m["content"], m.get("status")) for m in stored] == [
        ("user", "Hi", None), ("assistant", "Hello ", "error")]


def test_a_failure_before_any_text_leaves_no_assistant_message(bot, fake_openai):
    fake_openai.script(Reply(status=400))
    events = sse_events(bot.chat("bot", "Hi", stream=True))
    assert [e["type"] for e in events] == ["start", "error"]
    assert events[-1]["error"]["code"] == "MODEL_ERROR"
    stored = messages(bot, "bot", events[0]["conversation_id"])
    assert [m["role"] for m in stored] == ["user"]


def test_a_second_turn_in_a_streaming_conversation_is_refused_with_409(bot, fake_openai):
    fake_openai.script(Reply(content=LONG_TEXT, chunk_delay=0.05))
    with open_stream(bot, "bot", "First") as response:
        events = iter_events(response)
        conversation = next(events)["conversation_id"]
        assert next(events)["type"] == "delta"
        for stream in (True, False):
            refused = bot.chat("bot", "Second", conversation_id=conversation, stream=stream)
            assert refused.status_code == 409, refused.text
            assert refused.headers["content-type"].startswith("application/json")
            assert refused.json()["error"]["code"] == "CONVERSATION_BUSY"
        rest = list(events)
    assert rest[-1]["type"] == "done"
    stored = messages(bot, "bot", conversation)
    assert [(m["role"], m["content"]) for m in stored] == [("user", "First"), ("assistant", LONG_TEXT)]


def test_a_long_turn_keeps_its_conversation_past_the_lease_length(agentd_server, fake_openai):
    from agentd.store.models import Conversation, utcnow

    server = agentd_server({"bot": openai_agent(fake_openai)}, turn_lease_seconds=1)
    fake_openai.script(Reply(content=LONG_TEXT * 3, chunk_delay=0.05))
    with open_stream(server, "bot", "Go") as response:
        events = iter_events(response)
        conversation = next(events)["conversation_id"]
        with server.state.db.connection_context():
            first_lease = Conversation.get_by_id(conversation).busy_until
        refused = None
        for event in events:
            if event["type"] != "delta":
                break
            if utcnow() > first_lease:  # the lease taken at the start has run out by now
                refused = server.chat("bot", "Steal", conversation_id=conversation)
                break
        assert refused is not None, "the stream ended before the first lease ran out"
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "CONVERSATION_BUSY"
        assert list(events)[-1]["type"] == "done"


def test_stream_errors_before_the_stream_starts_are_plain_json(bot):
    missing = bot.chat("nobody", "Hi", stream=True)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "AGENT_NOT_FOUND"
    unknown = bot.chat("bot", "Hi", stream=True, conversation_id="conv_doesnotexist")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "CONVERSATION_NOT_FOUND"
    bad = bot.chat("bot", "Hi", stream="yes")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_REQUEST"
