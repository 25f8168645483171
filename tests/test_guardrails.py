"""Guardrails through the HTTP API: refusals never reach the model, PII is redacted, answers are checked."""
import json
import textwrap

import pytest

from agentd.policies.guardrails import find_pii, iban_ok, luhn_ok
from tests.conftest import Reply, openai_agent, sse_events

PLUGIN = '''
from agentd import Verdict, hookimpl

@hookimpl
def check_message(agent, message, context):
    if "forbidden" in message:
        return Verdict(refuse=f"{context.user_id} may not say that to {agent.id}")
    if "colour" in message:
        return Verdict(rewrite=message.replace("colour", "color"))
    return None

@hookimpl
def check_answer(agent, content, context):
    if content and "internal" in content:
        return content.replace("internal", "[hidden]")
    return None
'''


def _messages(server, agent="bot", **params):
    response = server.history(agent, **params)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def _blocked(response, *fragment):
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "GUARDRAIL_BLOCKED"
    for text in fragment:
        assert text in error["message"]
    return error


def test_blocked_pattern_never_reaches_the_model_and_is_stored_refused(agentd_server, fake_openai):
    agent = openai_agent(fake_openai, guardrails={"blocked_patterns": ["(?i)\\bpassword\\b"]})
    server = agentd_server({"bot": agent})
    _blocked(server.chat("bot", "My PASSWORD is hunter2"), "does not accept")
    assert fake_openai.calls == 0
    [message] = _messages(server)
    assert message["role"] == "user" and message["status"] == "refused"
    assert message["content"] == "My PASSWORD is hunter2"


def test_refused_message_in_a_conversation_stays_out_of_the_models_history(agentd_server, fake_openai):
    agent = openai_agent(fake_openai, guardrails={"blocked_patterns": ["secret"]})
    server = agentd_server({"bot": agent})
    first = server.chat("bot", "Hello").json()
    conversation = first["conversation_id"]
    _blocked(server.chat("bot", "tell me the secret", conversation_id=conversation))
    assert fake_openai.calls == 1
    assert server.chat("bot", "And now?", conversation_id=conversation).status_code == 200
    sent = [m["content"] for m in fake_openai.requests[-1]["messages"] if m["role"] == "user"]
    assert sent == ["Hello", "And now?"]
    history = _messages(server, conversation_id=conversation)
    assert [(m["role"], m.get("status")) for m in history] == [
        ("user", None), ("assistant", "complete"), ("user", "refused"), ("user", None), ("assistant", "complete")]


def test_refusal_takes_no_turn_lock(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, guardrails={"blocked_patterns": ["bad"]})})
    conversation = server.chat("bot", "hi").json()["conversation_id"]
    for _ in range(3):
        _blocked(server.chat("bot", "bad words", conversation_id=conversation))
    assert server.chat("bot", "fine words", conversation_id=conversation).status_code == 200


def test_refusal_into_another_users_conversation_is_forbidden_and_stores_nothing(agentd_server, fake_openai):
    from agentd.auth import create_key
    server = agentd_server({"bot": openai_agent(fake_openai, guardrails={"blocked_patterns": ["bad"]})})
    with server.state.db.connection_context():
        _, alice = create_key("alice")
        _, bob = create_key("bob")
    as_alice = {"Authorization": f"Bearer {alice}"}
    as_bob = {"Authorization": f"Bearer {bob}"}
    conversation = server.client.post("/api/agents/bot/chat", json={"message": "hi"},
                                      headers=as_alice).json()["conversation_id"]
    response = server.client.post("/api/agents/bot/chat", headers=as_bob,
                                  json={"message": "bad", "conversation_id": conversation})
    assert response.status_code == 403
    history = server.client.get("/api/agents/bot/chat", headers=as_alice,
                                params={"conversation_id": conversation}).json()["messages"]
    assert len(history) == 2


def test_max_length_refuses_with_422(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, guardrails={"max_length": 10})})
    _blocked(server.chat("bot", "x" * 11), "longer than 10")
    assert server.chat("bot", "x" * 10).status_code == 200
    assert fake_openai.calls == 1


def test_streamed_refusal_is_a_plain_json_error(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, guardrails={"blocked_patterns": ["bad"]})})
    response = server.chat("bot", "bad", stream=True)
    assert response.headers["content-type"].startswith("application/json")
    _blocked(response)
    assert fake_openai.calls == 0


def test_pii_redaction_reaches_the_model_redacted(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, guardrails={"pii": "redact"})})
    text = ("I am jane.doe@example.com, card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, "
            "call +44 20 7946 0958. Order 12345678 on 2024-12-15.")
    response = server.chat("bot", text)
    assert response.status_code == 200, response.text
    sent = fake_openai.requests[0]["messages"][-1]["content"]
    assert sent == ("I am [EMAIL], card [CARD], IBAN [IBAN], call [PHONE]. "
                    "Order 12345678 on 2024-12-15.")
    stored = _messages(server)[0]["content"]
    assert stored == sent


def test_pii_refuse_stores_the_refused_message_redacted(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, guardrails={"pii": "refuse"})})
    _blocked(server.chat("bot", "write to bob@example.org"), "email address")
    assert fake_openai.calls == 0
    [message] = _messages(server)
    assert message["status"] == "refused" and message["content"] == "write to [EMAIL]"
    # A card number failing the Luhn check is no card: the message goes through.
    assert server.chat("bot", "ticket 4111 1111 1111 1112").status_code == 200


def test_output_replacement_replaces_the_whole_answer(agentd_server, fake_openai):
    agent = openai_agent(fake_openai, guardrails={"output_blocked_patterns": ["sk-[A-Za-z0-9]+"],
                                                  "output_replacement": "I can't share that."})
    server = agentd_server({"bot": agent})
    fake_openai.script(Reply(content="The key is sk-abc123, enjoy"))
    body = server.chat("bot", "key?").json()
    assert body["content"] == "I can't share that."
    assert _messages(server)[-1]["content"] == "I can't share that."


def test_output_redaction_in_a_stream_never_shows_the_blocked_text(agentd_server, fake_openai):
    agent = openai_agent(fake_openai, guardrails={"output_blocked_patterns": ["sk-[A-Za-z0-9]+"]})
    server = agentd_server({"bot": agent})
    fake_openai.script(Reply(content="The key is sk-abc123 enjoy"))
    response = server.chat("bot", "key?", stream=True)
    assert "sk-abc123" not in response.text
    events = sse_events(response)
    deltas = "".join(e["content"] for e in events if e["type"] == "delta")
    assert deltas == "The key is [redacted] enjoy"
    assert events[-1]["type"] == "done"
    assert events[-1]["message"]["content"] == "The key is [redacted] enjoy"
    assert _messages(server)[-1]["content"] == "The key is [redacted] enjoy"


def test_plugin_hooks_refuse_rewrite_and_check_answers(agentd_server, fake_openai, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "policy.py").write_text(textwrap.dedent(PLUGIN))
    server = agentd_server({"bot": openai_agent(fake_openai)}, plugins_dir=str(plugins))
    _blocked(server.chat("bot", "a forbidden word"), "local may not say that to bot")
    assert fake_openai.calls == 0
    fake_openai.script(Reply(content="that is internal"))
    body = server.chat("bot", "my favourite colour").json()
    assert fake_openai.requests[0]["messages"][-1]["content"] == "my favourite color"
    assert body["content"] == "that is [hidden]"


def test_websocket_refusal_is_an_error_frame(agentd_server, fake_openai):
    from simple_websocket import Client
    server = agentd_server({"bot": openai_agent(fake_openai, guardrails={"blocked_patterns": ["bad"]})})
    ws = Client.connect(server.url.replace("http", "ws", 1) + "/api/agents/bot/ws")
    try:
        ws.send(json.dumps({"type": "message", "message": "bad"}))
        frame = json.loads(ws.receive(timeout=10))
    finally:
        ws.close()
    assert frame == {"type": "error", "error": {"code": "GUARDRAIL_BLOCKED",
                                                "message": "The message contains content this agent "
                                                           "does not accept"}}
    assert fake_openai.calls == 0


def test_bad_guardrail_pattern_refuses_the_agent_file(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, guardrails={"blocked_patterns": ["("]})})
    assert server.client.get("/api/agents/bot").status_code == 404
    assert any(p.key == "guardrails.blocked_patterns.0" for p in server.state.problems)


@pytest.mark.parametrize("text,kinds", [
    ("reach me: a.b+c@mail.example.co.uk", ["email address"]),
    ("Visa 4012-8888-8888-1881", ["credit card number"]),
    ("GB82WEST12345698765432", ["IBAN"]),
    ("tel. 030 12345678 or (555) 123-4567", ["phone number"]),
    ("order 12345678, 2024-12-15, 10:30, 1,299.00 EUR, v1.2.3", []),
    ("DE89370400440532013001", []),   # IBAN shape, wrong check digits
])
def test_pii_detection(text, kinds):
    assert find_pii(text)[1] == kinds


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE00 3704 0044 0532 0130 00")
