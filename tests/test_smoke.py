from tests.conftest import Reply, openai_agent


def test_plain_answer_is_stored(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    fake_openai.script(Reply(content="Hello there"))
    response = server.chat("bot", "Hi!")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"] == "Hello there"
    assert body["role"] == "assistant"
    history = server.history("bot", conversation_id=body["conversation_id"]).json()
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
