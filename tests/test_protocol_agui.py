"""AG-UI over SSE: every event validates against the `ag-ui-protocol` models, in a legal order."""
from __future__ import annotations

import json

import pytest
from ag_ui.core import Event, EventType, RunAgentInput
from pydantic import TypeAdapter

from tests.conftest import Reply
from tests.protocol_support import new_key, sse_data, served  # noqa: F401  (fixture)

EVENT = TypeAdapter(Event)


def run_input(thread: str, *messages, run: str = "run-1") -> dict:
    body = RunAgentInput(thread_id=thread, run_id=run, state={}, tools=[], context=[], forwarded_props={},
                         messages=[{"id": f"m{i}", **m} for i, m in enumerate(messages)])
    return body.model_dump(by_alias=True, exclude_none=True)


def post(server, key, body, agent="bot"):
    return server.client.post(f"/api/agents/{agent}/agui", json=body,
                              headers={"Authorization": f"Bearer {key}", "Accept": "text/event-stream"})


def events_of(response) -> list:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [EVENT.validate_python(json.loads(data)) for data in sse_data(response.text)]


def check_order(events) -> None:
    """What an AG-UI client verifies: run bounds, messages and tool calls opened before use and closed."""
    assert events[0].type == EventType.RUN_STARTED
    assert events[-1].type in (EventType.RUN_FINISHED, EventType.RUN_ERROR)
    assert sum(e.type in (EventType.RUN_FINISHED, EventType.RUN_ERROR) for e in events) == 1
    open_text, open_calls, ended_calls = None, set(), set()
    for event in events[1:-1]:
        if event.type == EventType.TEXT_MESSAGE_START:
            assert open_text is None
            open_text = event.message_id
        elif event.type == EventType.TEXT_MESSAGE_CONTENT:
            assert event.message_id == open_text and event.delta
        elif event.type == EventType.TEXT_MESSAGE_END:
            assert event.message_id == open_text
            open_text = None
        elif event.type == EventType.TOOL_CALL_START:
            open_calls.add(event.tool_call_id)
        elif event.type == EventType.TOOL_CALL_ARGS:
            assert event.tool_call_id in open_calls
        elif event.type == EventType.TOOL_CALL_END:
            open_calls.remove(event.tool_call_id)
            ended_calls.add(event.tool_call_id)
        elif event.type == EventType.TOOL_CALL_RESULT:
            assert event.tool_call_id in ended_calls
    assert open_text is None and not open_calls


def test_a_text_run(served, fake_openai):
    server, key = served
    fake_openai.script(Reply(content="Hello from the bot", usage=(4, 2)))
    events = events_of(post(server, key, run_input("thread-new", {"role": "user", "content": "hi"})))
    check_order(events)
    assert [e.type for e in events] == [EventType.RUN_STARTED, EventType.TEXT_MESSAGE_START,
                                        *[EventType.TEXT_MESSAGE_CONTENT] * 4, EventType.TEXT_MESSAGE_END,
                                        EventType.RUN_FINISHED]
    assert "".join(e.delta for e in events if e.type == EventType.TEXT_MESSAGE_CONTENT) == "Hello from the bot"
    finished = events[-1]
    assert finished.run_id == "run-1" and finished.thread_id == events[0].thread_id
    assert (finished.usage[0].input_tokens, finished.usage[0].output_tokens) == (4, 2)
    assert fake_openai.requests[-1]["messages"][0]["content"] == "You are the bot."


def test_thread_id_continues_the_conversation(served, fake_openai):
    server, key = served
    first = events_of(post(server, key, run_input("client-thread", {"role": "user", "content": "one"})))
    thread = first[0].thread_id
    assert thread.startswith("conv_")  # a thread agentd did not know became a new conversation
    again = events_of(post(server, key, run_input(thread, {"role": "user", "content": "one"},
                                                  {"role": "assistant", "content": "echo: one"},
                                                  {"role": "user", "content": "two"}, run="run-2")))
    assert again[0].thread_id == thread and again[-1].run_id == "run-2"
    sent = [m["content"] for m in fake_openai.requests[-1]["messages"][1:]]
    assert sent == ["one", "echo: one", "two"]  # stored history; only the last message was new
    other = new_key(server, "mallory")
    assert post(server, other, run_input(thread, {"role": "user", "content": "x"})).status_code == 403


def test_a_client_named_thread_becomes_the_conversation_id(served, fake_openai):
    import uuid
    server, key = served
    thread = str(uuid.uuid4())
    first = events_of(post(server, key, run_input(thread, {"role": "user", "content": "one"})))
    assert first[0].thread_id == thread
    events_of(post(server, key, run_input(thread, {"role": "user", "content": "one"},
                                          {"role": "assistant", "content": "echo: one"},
                                          {"role": "user", "content": "two"}, run="run-2")))
    stored = server.client.get(f"/api/conversations/{thread}", headers={"Authorization": f"Bearer {key}"}).json()
    assert stored["channel"] == "agui"
    assert [m["content"] for m in stored["messages"]] == ["one", "echo: one", "two", "echo: two"]
    assert post(server, new_key(server, "mallory"), run_input(thread, {"role": "user", "content": "x"})
                ).status_code == 403


def test_client_history_seeds_a_new_thread(served, fake_openai):
    server, key = served
    events_of(post(server, key, run_input("t", {"role": "user", "content": "Remember 5."},
                                          {"role": "assistant", "content": "Noted."},
                                          {"role": "user", "content": "What was it?"})))
    sent = [m["content"] for m in fake_openai.requests[-1]["messages"][1:]]
    assert sent == ["Remember 5.", "Noted.", "What was it?"]


def test_a_tool_run(served, fake_openai):
    server, key = served
    fake_openai.script(Reply(content="Let me add.", tool_calls=[("add", {"a": 2, "b": 3})]),
                       Reply(content="It is 5."))
    events = events_of(post(server, key, run_input("t", {"role": "user", "content": "2+3?"})))
    check_order(events)
    kinds = [e.type for e in events]
    start = kinds.index(EventType.TOOL_CALL_START)
    assert kinds[start:start + 4] == [EventType.TOOL_CALL_START, EventType.TOOL_CALL_ARGS,
                                      EventType.TOOL_CALL_END, EventType.TOOL_CALL_RESULT]
    call = events[start]
    assert call.tool_call_name == "add"
    assert json.loads(events[start + 1].delta) == {"a": 2, "b": 3}
    assert events[start + 3].content == "5"
    texts = [e.message_id for e in events if e.type == EventType.TEXT_MESSAGE_START]
    assert len(texts) == 2 and texts[0] != texts[1]  # the text before the call and the answer after it


def test_a_failing_run_ends_with_run_error(served, fake_openai):
    server, key = served
    fake_openai.script(Reply(status=500), Reply(status=500), Reply(status=500), Reply(status=500))
    events = events_of(post(server, key, run_input("t", {"role": "user", "content": "hi"})))
    check_order(events)
    assert events[-1].type == EventType.RUN_ERROR and events[-1].code == "MODEL_ERROR"


@pytest.mark.parametrize("body, field", [
    ({}, "threadId"), ({"threadId": "t", "runId": "r", "messages": "x"}, "messages"),
    ({"threadId": "t", "runId": "r", "messages": []}, "messages"),
    ({"threadId": "t", "runId": "r", "messages": [{"id": "1", "role": "assistant", "content": "x"}]},
     "messages"),
])
def test_bad_run_input_is_400(served, fake_openai, body, field):
    server, key = served
    response = post(server, key, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
    assert response.json()["error"]["message"].startswith(field), response.json()
    assert fake_openai.calls == 0


def test_unknown_agent_and_missing_key(served):
    server, key = served
    body = run_input("t", {"role": "user", "content": "hi"})
    assert post(server, key, body, agent="nope").status_code == 404
    assert server.client.post("/api/agents/bot/agui", json=body).status_code == 401


def test_a_client_named_id_taken_meanwhile_is_409_not_500(database):
    from agentd.errors import ConversationBusy
    from agentd.store.messages import create_busy_conversation
    create_busy_conversation("bot", "alice", "agui", None, None, 60, conversation_id="a" * 20)
    with pytest.raises(ConversationBusy):
        create_busy_conversation("bot", "bob", "agui", None, None, 60, conversation_id="a" * 20)


def test_an_idempotency_key_replays_the_run_as_agui_events(served, fake_openai):
    server, key = served
    body = run_input("t", {"role": "user", "content": "once"})
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "agui-1"}
    first = server.client.post("/api/agents/bot/agui", json=body, headers=headers)
    again = server.client.post("/api/agents/bot/agui", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true" and fake_openai.calls == 1
    replayed = events_of(again)
    check_order(replayed)
    text = lambda events: "".join(e.delta for e in events if e.type == EventType.TEXT_MESSAGE_CONTENT)  # noqa: E731
    assert text(replayed) == text(events_of(first)) == "echo: once"
