"""The history stays valid for the model: every tool call has its result, whatever ended the run.

The vendor fakes answer an unpaired history with the vendor's real 400, so a
turn after a cut tool step succeeds only if agentd stored (or repaired) the
missing results.
"""
from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.conftest import Reply, openai_agent
from tests.fakes.anthropic_server import Reply as AnthropicReply, anthropic_agent
from tests.fakes.gemini_server import Reply as GeminiReply, gemini_agent
from tests.support import iter_frames, wait_for

PLUGIN = '''
import time
from pathlib import Path

from agentd import hookimpl

DONE = Path(__file__).with_suffix(".done")

def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

def slow_lookup(order_id: str) -> str:
    """Look an order up (slowly)."""
    time.sleep(2)
    DONE.write_text("returned")
    return "shipped"

@hookimpl
def register_tools(register):
    register(add)
    register(slow_lookup)
'''


@pytest.fixture
def plugins(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "shop.py").write_text(PLUGIN)
    return folder


def rows(server, conversation: str) -> list[dict]:
    return server.client.get(f"/api/conversations/{conversation}").json()["messages"]


def two_calls(reply_class):
    return reply_class(content="Checking.", tool_calls=[("add", {"a": 1, "b": 2}),
                                                        ("slow_lookup", {"order_id": "A1"})])


def _watch_until_the_tools_run(frames) -> None:
    """Read up to the step's second `tool_call`: from there its tools are running."""
    calls = 0
    for _, event in frames:
        calls += event["type"] == "tool_call"
        if calls == 2:
            return
    pytest.fail("the tool calls did not arrive")


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "non-streamed"])
def test_a_run_cancelled_during_a_slow_tool_leaves_paired_results(agentd_server, fake_openai, plugins,
                                                                   stream):
    server = agentd_server({"bot": openai_agent(fake_openai, tools=["add", "slow_lookup"])},
                           plugins_dir=str(plugins))
    fake_openai.script(Reply(tool_calls=[("add", {"a": 2, "b": 2})]), Reply(content="Four."))
    conversation = server.chat("bot", "Hello", stream=False).json()["conversation_id"]
    fake_openai.script(two_calls(Reply), Reply(content="Order A1 is on its way."))
    body = {"message": "Where is A1?", "conversation_id": conversation, "stream": stream}
    answer = {}
    if stream:
        with server.client.stream("POST", "/api/agents/bot/chat", json=body) as response:
            frames = iter_frames(response)
            _watch_until_the_tools_run(frames)
            cancelled = server.client.post(f"/api/conversations/{conversation}/cancel")
            assert cancelled.json()["cancelled"], cancelled.text
            assert list(frames)[-1][1]["error"]["code"] == "CANCELLED"
    else:
        waiter = threading.Thread(target=lambda: answer.update(r=server.client.post("/api/agents/bot/chat",
                                                                                   json=body)))
        waiter.start()
        watcher = wait_for(lambda: (r := server.client.send(server.client.build_request(
            "GET", f"/api/conversations/{conversation}/stream"), stream=True)).status_code == 200 and r
            or r.close(), what="the run to be attachable")
        _watch_until_the_tools_run(iter_frames(watcher))
        assert server.client.post(f"/api/conversations/{conversation}/cancel").json()["cancelled"]
        watcher.close()
        waiter.join(20)
        assert answer["r"].status_code == 409 and answer["r"].json()["error"]["code"] == "CANCELLED"
    turn = rows(server, conversation)[4:]
    assert [m["role"] for m in turn] == ["user", "assistant", "tool", "tool"]
    calls = [c["id"] for c in turn[1]["tool_calls"]]
    assert [m["tool_call_id"] for m in turn[2:]] == calls
    # Results are stored once the step's tools all returned: neither had, so both are cancelled.
    assert all(m["is_error"] is True and m["content"].startswith("cancelled: ") for m in turn[2:])
    wait_for((plugins / "shop.done").exists, what="the slow tool to return")  # it returns to no one
    assert len(rows(server, conversation)) == 8
    # The strict fake takes the history: the next turn succeeds.
    fake_openai.script(Reply(content="All good."))
    again = server.chat("bot", "And now?", conversation_id=conversation)
    assert again.status_code == 200, again.text
    sent = [m for m in fake_openai.requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in sent[-2:]] == calls


def _store_unpaired(server, agent_id: str) -> str:
    """A conversation as an older agentd left it: a tool step whose second call has no result."""
    from agentd.store.models import Conversation, Message

    with server.state.db.connection_context():
        conversation = Conversation.create(id="conv_olderversion0001", agent_id=agent_id, user_id="local")
        base = {"conversation": conversation.id, "agent_id": agent_id, "user_id": "local"}
        Message.create(role="user", content="Where is A1?", **base)
        Message.create(role="assistant", content=None, status="complete", tool_calls=[
            {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "slow_lookup", "arguments": '{"order_id": "A1"}'}}], **base)
        Message.create(role="tool", content="3", tool_call_id="call_a", name="add", **base)
        Message.create(role="assistant", content="It was cut off", status="partial", **base)
    return conversation.id


VENDORS = {
    "openai": (openai_agent, Reply, "fake_openai"),
    "anthropic": (anthropic_agent, AnthropicReply, "fake_anthropic"),
    "gemini": (gemini_agent, GeminiReply, "fake_gemini"),
}


@pytest.mark.parametrize("vendor", list(VENDORS))
def test_an_unpaired_row_from_an_older_version_is_repaired_when_read(agentd_server, plugins, request, vendor):
    make_agent, reply, fixture = VENDORS[vendor]
    fake = request.getfixturevalue(fixture)
    server = agentd_server({"bot": make_agent(fake, tools=["add", "slow_lookup"])}, plugins_dir=str(plugins))
    conversation = _store_unpaired(server, "bot")
    fake.script(reply(content="Let me look again."))
    answer = server.chat("bot", "Try again", conversation_id=conversation)
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"] == "Let me look again."
    assert "cancelled: " in json.dumps(fake.requests[-1])   # the missing result, as the model saw it
    stored = rows(server, conversation)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant", "user", "assistant"]


UNPAIRED = {
    "openai": ("/v1/chat/completions", {"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "again"}]},
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        "'tool_call_id'"),
    "anthropic": ("/v1/messages", {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "text", "text": "again"}]}]},
        "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1"),
    "gemini": ("/v1beta/models/gemini-fake:generateContent", {"contents": [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
        {"role": "user", "parts": [{"text": "again"}]}]},
        "the number of function response parts is equal to the number of function call parts"),
}


@pytest.mark.parametrize("vendor", list(UNPAIRED))
def test_the_vendor_fakes_refuse_an_unpaired_history_as_the_vendors_do(request, vendor):
    fake = request.getfixturevalue(VENDORS[vendor][2])
    path, body, message = UNPAIRED[vendor]
    base = fake.server.url
    response = httpx.post(base + path, json=body, timeout=10)
    assert response.status_code == 400
    assert message in json.dumps(response.json())
