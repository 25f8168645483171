"""The non-streamed chat API of docs/api.md: agents, send, history paging, clear, and its errors."""
import pytest

from tests.conftest import Reply, openai_agent


@pytest.fixture
def server(agentd_server, fake_openai):
    return agentd_server({"bot": openai_agent(fake_openai, system_prompt="secret prompt"),
                          "other": openai_agent(fake_openai)}, max_body_bytes=4096)


def error_of(response):
    return response.status_code, response.json()["error"]["code"]


def test_agents_are_listed_without_secrets(server):
    agents = server.client.get("/api/agents").json()["agents"]
    assert [a["id"] for a in agents] == ["bot", "other"]
    info = server.client.get("/api/agents/bot").json()
    assert info["model"] == {"provider": "openai", "name": "fake-model"}
    assert info["widget"] == {"enabled": False}
    assert "secret prompt" not in server.client.get("/api/agents/bot").text
    assert "base_url" not in server.client.get("/api/agents").text


def test_health(server):
    assert server.client.get("/healthz").json() == {"status": "ok", "database": "ok", "agents": 2}


@pytest.mark.parametrize("body, field", [
    ({}, "message"), ({"message": ""}, "message"), ({"message": "   "}, "message"),
    ({"message": 5}, "message"), ({"message": "hi", "stream": "yes"}, "stream"),
    ({"message": "hi", "mood": "angry"}, "mood"), ({"message": "hi", "context": []}, "context"),
    ({"message": "hi", "metadata": "x"}, "metadata"), ({"message": "hi", "conversation_id": 7}, "conversation_id"),
    ({"message": "hi", "images": {}}, "images"),
])
def test_bad_bodies_are_400_naming_the_field(server, fake_openai, body, field):
    response = server.client.post("/api/agents/bot/chat", json=body)
    assert error_of(response) == (400, "INVALID_REQUEST")
    assert response.json()["error"]["message"].startswith(field)
    assert fake_openai.calls == 0


def test_malformed_json_and_non_object(server):
    response = server.client.post("/api/agents/bot/chat", content=b"{oops",
                                  headers={"Content-Type": "application/json"})
    assert error_of(response) == (400, "INVALID_REQUEST")
    assert error_of(server.client.post("/api/agents/bot/chat", json=[1])) == (400, "INVALID_REQUEST")


def test_message_too_long_stores_nothing(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, max_message_chars=10)})
    assert error_of(server.chat("bot", "x" * 11)) == (400, "INVALID_REQUEST")
    assert server.history("bot").json()["meta"]["total"] == 0


def test_not_found_codes(server):
    assert error_of(server.chat("nope", "hi")) == (404, "AGENT_NOT_FOUND")
    assert error_of(server.client.get("/api/agents/nope")) == (404, "AGENT_NOT_FOUND")
    assert error_of(server.chat("bot", "hi", conversation_id="conv_missing")) == (404, "CONVERSATION_NOT_FOUND")
    assert error_of(server.history("bot", conversation_id="conv_missing")) == (404, "CONVERSATION_NOT_FOUND")
    assert error_of(server.client.get("/api/nothing/here")) == (404, "NOT_FOUND")


def test_conversation_of_another_agent_is_not_found(server, fake_openai):
    first = server.chat("bot", "hello").json()
    response = server.chat("other", "hi", conversation_id=first["conversation_id"])
    assert error_of(response) == (404, "CONVERSATION_NOT_FOUND")


def test_method_not_allowed(server):
    response = server.client.put("/api/agents/bot/chat", json={})
    assert error_of(response) == (405, "METHOD_NOT_ALLOWED")


def test_payload_too_large(server, fake_openai):
    response = server.chat("bot", "x" * 5000)
    assert error_of(response) == (413, "PAYLOAD_TOO_LARGE")
    assert fake_openai.calls == 0


def test_provider_error_keeps_the_user_message(server, fake_openai):
    fake_openai.script(Reply(status=400))
    response = server.chat("bot", "hello?")
    assert error_of(response) == (502, "MODEL_ERROR")
    messages = server.history("bot").json()["messages"]
    assert [m["role"] for m in messages] == ["user"]


def test_provider_unreachable_is_503(agentd_server):
    agent = """
    name: Offline
    model: {provider: openai, name: m, base_url: "http://127.0.0.1:9/v1", retries: 0}
    """
    server = agentd_server({"off": agent})
    assert error_of(server.chat("off", "hello")) == (503, "PROVIDER_UNAVAILABLE")


def test_garbage_answer_is_502(server, fake_openai):
    fake_openai.script(Reply(fault="garbage"))
    assert error_of(server.chat("bot", "hello")) == (502, "MODEL_ERROR")


def _fill(server, fake, count):
    conversation = None
    for i in range(count):
        fake.script(Reply(content=f"a{i}"))
        conversation = server.chat("bot", f"q{i}", conversation_id=conversation).json()["conversation_id"]
    return conversation


def test_history_paging_edges(server, fake_openai):
    empty = server.history("bot").json()
    assert empty == {"messages": [], "meta": {"total": 0, "has_more": False}}
    conversation = _fill(server, fake_openai, 5)  # 10 messages
    everything = server.history("bot", conversation_id=conversation, limit=10).json()
    ids = [m["id"] for m in everything["messages"]]
    assert ids == sorted(ids) and everything["meta"] == {"total": 10, "has_more": False}
    recent = server.history("bot", conversation_id=conversation, limit=4).json()
    assert [m["id"] for m in recent["messages"]] == ids[-4:] and recent["meta"]["has_more"] is True
    older = server.history("bot", conversation_id=conversation, limit=4, before=ids[-4]).json()
    assert [m["id"] for m in older["messages"]] == ids[2:6] and older["meta"]["has_more"] is True
    oldest = server.history("bot", conversation_id=conversation, limit=4, before=ids[2]).json()
    assert [m["id"] for m in oldest["messages"]] == ids[:2] and oldest["meta"]["has_more"] is False
    newer = server.history("bot", conversation_id=conversation, limit=4, after=ids[1]).json()
    assert [m["id"] for m in newer["messages"]] == ids[2:6] and newer["meta"]["has_more"] is True
    last = server.history("bot", conversation_id=conversation, limit=4, after=ids[5]).json()
    assert [m["id"] for m in last["messages"]] == ids[6:] and last["meta"]["has_more"] is False
    assert last["meta"]["total"] == 10
    assert server.history("bot", after=ids[-1]).json()["messages"] == []


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"before": -1},
                                    {"before": 3, "after": 1}])
def test_history_bad_parameters(server, params):
    assert error_of(server.history("bot", **params)) == (400, "INVALID_REQUEST")


def test_history_limit_bounds_are_accepted(server, fake_openai):
    _fill(server, fake_openai, 1)
    assert len(server.history("bot", limit=1).json()["messages"]) == 1
    assert len(server.history("bot", limit=100).json()["messages"]) == 2


def test_history_without_conversation_spans_the_users_conversations(server, fake_openai):
    server.chat("bot", "one")
    server.chat("bot", "two")
    server.chat("other", "elsewhere")
    messages = server.history("bot").json()["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["one", "two"]


def test_clear(server, fake_openai):
    first = server.chat("bot", "one").json()["conversation_id"]
    server.chat("bot", "two")
    response = server.client.delete("/api/agents/bot/chat", params={"conversation_id": first})
    assert response.json() == {"success": True, "deleted": 2}
    assert server.history("bot").json()["meta"]["total"] == 2
    assert server.client.delete("/api/agents/bot/chat").json() == {"success": True, "deleted": 2}
    assert server.history("bot").json()["meta"]["total"] == 0


def test_metadata_and_usage_are_returned(server, fake_openai):
    fake_openai.script(Reply(content="ok", usage=(7, 3)))
    body = server.chat("bot", "hi", metadata={"source": "web"}).json()
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert body["provider"] == "openai" and body["model"] == "fake-model"
    assert body["created_at"].endswith("Z")
    user = server.history("bot").json()["messages"][0]
    assert user["metadata"] == {"source": "web"}
    assert fake_openai.requests[0]["messages"][0] == {"role": "system", "content": "secret prompt"}


def test_line_separator_characters_survive_the_stream(server, fake_openai):
    """U+2028 and U+0085 are text, not line ends, in an event stream (httpx's iter_lines splits them)."""
    from tests.conftest import sse_events
    text = "one\u2028two\u0085three"
    fake_openai.script(Reply(content=text), Reply(content=text))
    assert server.chat("bot", "plain").json()["content"] == text
    response = server.chat("bot", "streamed", stream=True)
    events = sse_events(response)
    assert events[-1]["type"] == "done" and events[-1]["message"]["content"] == text
