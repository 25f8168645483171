"""The conversation API: list, read, rename, delete, truncate; ownership on every route; titles."""
from __future__ import annotations

import json
import threading
import time

import pytest
from simple_websocket import Client as WsClient

from agentd.store.models import Conversation, Message
from tests.conftest import Reply, openai_agent
from tests.test_auth import new_key, user_client


@pytest.fixture
def server(agentd_server, fake_openai):
    return agentd_server({"bot": openai_agent(fake_openai), "other": openai_agent(fake_openai)})


def start(client, message: str = "Hello", agent: str = "bot", **body) -> str:
    response = client.post(f"/api/agents/{agent}/chat", json={"message": message, **body})
    assert response.status_code == 200, response.text
    return response.json()["conversation_id"]


def say(client, conversation_id: str, message: str, agent: str = "bot") -> dict:
    response = client.post(f"/api/agents/{agent}/chat",
                           json={"message": message, "conversation_id": conversation_id})
    assert response.status_code == 200, response.text
    return response.json()


def error_code(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_list_is_most_recent_first_with_counts_and_last_message(server, fake_openai):
    first = start(server.client, "First question")
    second = start(server.client, "Second question")
    start(server.client, "Elsewhere", agent="other")
    fake_openai.script(Reply(content="Latest answer"))
    say(server.client, first, "Follow-up")  # `first` becomes the most recently updated
    body = server.client.get("/api/agents/bot/conversations").json()
    assert body["total"] == 2
    assert [c["id"] for c in body["conversations"]] == [first, second]
    top = body["conversations"][0]
    assert top["message_count"] == 4
    assert top["last_message"]["content"] == "Latest answer"
    assert top["last_message"]["role"] == "assistant"
    assert top["title"] == "First question"
    assert top["channel"] == "api" and top["agent_id"] == "bot"
    assert top["created_at"].endswith("Z") and top["updated_at"].endswith("Z")
    page = server.client.get("/api/agents/bot/conversations", params={"limit": 1, "offset": 1}).json()
    assert [c["id"] for c in page["conversations"]] == [second] and page["total"] == 2


def test_list_channel_filter_and_bad_parameters(server):
    start(server.client)
    assert server.client.get("/api/agents/bot/conversations", params={"channel": "api"}).json()["total"] == 1
    assert server.client.get("/api/agents/bot/conversations", params={"channel": "widget"}).json() == {
        "conversations": [], "total": 0}
    for params in [{"channel": "fax"}, {"limit": 0}, {"limit": 101}, {"limit": "x"}, {"offset": -1}]:
        response = server.client.get("/api/agents/bot/conversations", params=params)
        assert error_code(response) == (400, "INVALID_REQUEST")
        assert next(iter(params)) in response.json()["error"]["message"]
    assert error_code(server.client.get("/api/agents/nope/conversations")) == (404, "AGENT_NOT_FOUND")


def test_list_isolation_between_users(server):
    with user_client(server, "alice") as alice, user_client(server, "bob") as bob:
        mine = start(alice, "Alice's secret plan")
        start(bob, "Bob's question")
        listed = alice.get("/api/agents/bot/conversations").json()
        assert [c["id"] for c in listed["conversations"]] == [mine] and listed["total"] == 1
        assert "Bob" not in json.dumps(listed)
        assert "Alice" not in bob.get("/api/agents/bot/conversations").text


def test_read_pages_oldest_first(server):
    conversation = start(server.client, "one")
    say(server.client, conversation, "two")
    say(server.client, conversation, "three")
    url = f"/api/conversations/{conversation}"
    page = server.client.get(url, params={"limit": 4}).json()
    assert (page["total"], page["limit"], page["offset"], page["has_more"]) == (6, 4, 0, True)
    assert [m["content"] for m in page["messages"]] == ["one", "echo: one", "two", "echo: two"]
    ids = [m["id"] for m in page["messages"]]
    assert ids == sorted(ids)
    rest = server.client.get(url, params={"limit": 4, "offset": 4}).json()
    assert [m["content"] for m in rest["messages"]] == ["three", "echo: three"]
    assert rest["has_more"] is False
    beyond = server.client.get(url, params={"offset": 10}).json()
    assert beyond["messages"] == [] and beyond["has_more"] is False
    assert page["user_id"] == "local" and page["agent_id"] == "bot" and page["title"] == "one"
    for params in [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"offset": "a"}]:
        assert error_code(server.client.get(url, params=params)) == (400, "INVALID_REQUEST")


def test_rename_and_its_validation(server):
    conversation = start(server.client, "Hello")
    url = f"/api/conversations/{conversation}"
    response = server.client.patch(url, json={"title": "  Orders  "})
    assert response.status_code == 200, response.text
    assert response.json()["title"] == "Orders" and response.json()["message_count"] == 2
    assert server.client.get(url).json()["title"] == "Orders"
    for body in [{}, {"title": ""}, {"title": "   "}, {"title": 5}, {"title": None}, {"title": "x" * 201}]:
        response = server.client.patch(url, json=body)
        assert error_code(response) == (400, "INVALID_REQUEST"), body
        assert "title" in response.json()["error"]["message"]
    assert server.client.patch(url, json={"title": "y" * 200}).status_code == 200
    assert error_code(server.client.patch(url, content=b"{nope")) == (400, "INVALID_REQUEST")


def test_delete_removes_the_messages_too(server):
    conversation = start(server.client)
    kept = start(server.client, "Keep me")
    response = server.client.delete(f"/api/conversations/{conversation}")
    assert response.status_code == 200 and response.json() == {"success": True}
    assert error_code(server.client.get(f"/api/conversations/{conversation}")) == (404, "CONVERSATION_NOT_FOUND")
    assert error_code(server.client.delete(f"/api/conversations/{conversation}")) == (404, "CONVERSATION_NOT_FOUND")
    with server.state.db.connection_context():
        assert Message.select().where(Message.conversation == conversation).count() == 0
        assert Message.select().where(Message.conversation == kept).count() == 2
    assert server.client.get("/api/agents/bot/conversations").json()["total"] == 1


def test_truncate_keeps_the_newest(server):
    conversation = start(server.client, "one")
    say(server.client, conversation, "two")
    say(server.client, conversation, "three")
    url = f"/api/conversations/{conversation}/truncate"
    response = server.client.post(url, json={"keep": 4})
    assert response.json() == {"success": True, "conversation_id": conversation, "kept": 4, "deleted": 2}
    contents = [m["content"] for m in server.client.get(f"/api/conversations/{conversation}").json()["messages"]]
    assert contents == ["two", "echo: two", "three", "echo: three"]
    assert server.client.post(url, json={"keep": 10}).json()["deleted"] == 0
    assert server.client.post(url, json={"keep": 0}).json() == {
        "success": True, "conversation_id": conversation, "kept": 0, "deleted": 4}
    assert server.client.get(f"/api/conversations/{conversation}").json()["total"] == 0
    say(server.client, conversation, "again")  # the conversation itself survives
    for body in [{}, {"keep": -1}, {"keep": "2"}, {"keep": 1.5}, {"keep": True}]:
        response = server.client.post(url, json=body)
        assert error_code(response) == (400, "INVALID_REQUEST") and "keep" in response.json()["error"]["message"]


def test_unknown_conversation_is_404_on_every_route(server):
    for method, path, body in [("GET", "/api/conversations/conv_nope", None),
                               ("PATCH", "/api/conversations/conv_nope", {"title": "x"}),
                               ("DELETE", "/api/conversations/conv_nope", None),
                               ("POST", "/api/conversations/conv_nope/truncate", {"keep": 1})]:
        assert error_code(server.client.request(method, path, json=body)) == (404, "CONVERSATION_NOT_FOUND")


def test_busy_conversation_cannot_be_deleted_or_truncated(server, fake_openai):
    conversation = start(server.client)
    release = threading.Event()
    fake_openai.script(Reply(func=lambda body: (release.wait(10), Reply(content="late"))[1]))
    worker = threading.Thread(target=say, args=(server.client, conversation, "slow"))
    worker.start()
    try:
        _wait_for(lambda: fake_openai.calls == 2)
        assert error_code(server.client.delete(f"/api/conversations/{conversation}")) == (409, "CONVERSATION_BUSY")
        response = server.client.post(f"/api/conversations/{conversation}/truncate", json={"keep": 0})
        assert error_code(response) == (409, "CONVERSATION_BUSY")
    finally:
        release.set()
        worker.join(10)
    assert server.client.get(f"/api/conversations/{conversation}").json()["total"] == 4


def _forbidden(response) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"]["code"] == "FORBIDDEN"
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    for secret in ("Alice's secret", "echo", "message_count", "title"):
        assert secret not in response.text


def test_another_users_conversation_is_403_everywhere_and_untouched(server, fake_openai):
    with user_client(server, "alice") as alice, user_client(server, "bob") as bob:
        conversation = start(alice, "Alice's secret plan")
        calls = fake_openai.calls
        _forbidden(bob.get("/api/agents/bot/chat", params={"conversation_id": conversation}))
        _forbidden(bob.delete("/api/agents/bot/chat", params={"conversation_id": conversation}))
        _forbidden(bob.get(f"/api/conversations/{conversation}"))
        _forbidden(bob.patch(f"/api/conversations/{conversation}", json={"title": "mine now"}))
        _forbidden(bob.post(f"/api/conversations/{conversation}/truncate", json={"keep": 0}))
        _forbidden(bob.delete(f"/api/conversations/{conversation}"))
        _forbidden(bob.post("/api/agents/bot/chat", json={"message": "hi", "conversation_id": conversation}))
        _forbidden(bob.post("/api/agents/bot/chat", json={"message": "hi", "conversation_id": conversation,
                                                          "stream": True}))
        mine = alice.get(f"/api/conversations/{conversation}").json()
        assert mine["title"] == "Alice's secret plan" and mine["total"] == 2
        assert fake_openai.calls == calls


def test_another_users_conversation_is_403_over_websocket(server, fake_openai):
    with user_client(server, "alice") as alice:
        conversation = start(alice, "Alice's secret plan")
    bob_key = new_key(server, "bob")
    ws = WsClient.connect(server.url.replace("http://", "ws://") + "/api/agents/bot/ws",
                          headers={"Authorization": f"Bearer {bob_key}"})
    try:
        ws.send(json.dumps({"type": "message", "message": "hi", "conversation_id": conversation}))
        event = json.loads(ws.receive(timeout=10))
    finally:
        ws.close()
    assert event == {"type": "error", "error": {"code": "FORBIDDEN", "message": event["error"]["message"]}}
    assert "secret" not in json.dumps(event)
    with server.state.db.connection_context():
        assert Message.select().where(Message.conversation == conversation).count() == 2


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _title_threads_done() -> None:
    for thread in threading.enumerate():
        if thread.name == "agentd-title":
            thread.join(10)


def _title_of(server, conversation_id: str) -> str:
    with server.state.db.connection_context():
        return Conversation.get_by_id(conversation_id).title


@pytest.fixture
def titled(agentd_server, fake_openai):
    return agentd_server({"bot": openai_agent(fake_openai, model={"title_model": {
        "provider": "openai", "name": "title-model"}})})


def test_title_model_names_a_new_conversation(titled, fake_openai):
    fake_openai.script(Reply(content="Your order shipped."), Reply(content='Title: "Order shipping status."'))
    conversation = start(titled.client, "when does my order ship, it has been a week")
    _wait_for(lambda: fake_openai.calls == 2)
    _title_threads_done()
    assert _title_of(titled, conversation) == "Order shipping status"
    request = fake_openai.requests[1]
    assert request["model"] == "title-model" and not request.get("stream")
    assert "when does my order ship" in json.dumps(request["messages"])
    say(titled.client, conversation, "thanks")  # later turns do not ask again
    _title_threads_done()
    assert fake_openai.calls == 3


def test_title_model_failure_keeps_the_first_message_title(titled, fake_openai):
    fake_openai.script(Reply(content="ok"), Reply(status=500))
    conversation = start(titled.client, "Where is my parcel?")
    _wait_for(lambda: fake_openai.calls >= 2)
    _title_threads_done()
    assert _title_of(titled, conversation) == "Where is my parcel?"


def test_no_title_model_call_when_auto_title_is_off(titled, fake_openai):
    conversation = start(titled.client, "Hello", auto_title=False)
    _title_threads_done()
    assert fake_openai.calls == 1 and _title_of(titled, conversation) is None
