"""Request fields of POST /chat: context templating, overrides, mood, metadata, images, auto titles."""
from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import openai_agent

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()
PROMPT = "You help {{ user.name | default('the customer') }} with orders.{% if plan %} Plan: {{ plan }}.{% endif %}"


def system_of(request: dict) -> str | None:
    first = request["messages"][0]
    return first["content"] if first["role"] == "system" else None


def error_of(response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


@pytest.fixture
def server(agentd_server, fake_openai):
    return agentd_server({"bot": openai_agent(fake_openai, system_prompt=PROMPT)})


def test_template_without_context_uses_defaults(server, fake_openai):
    assert server.chat("bot", "Hi").status_code == 200
    assert system_of(fake_openai.requests[-1]) == "You help the customer with orders."


def test_template_with_context_is_rendered_and_kept_on_the_conversation(server, fake_openai):
    response = server.chat("bot", "Hi", context={"user": {"name": "Ada"}, "plan": "gold"})
    assert response.status_code == 200, response.text
    assert system_of(fake_openai.requests[-1]) == "You help Ada with orders. Plan: gold."
    server.chat("bot", "Again", conversation_id=response.json()["conversation_id"])
    assert system_of(fake_openai.requests[-1]) == "You help Ada with orders. Plan: gold."


def test_context_values_are_data_not_templates(server, fake_openai):
    server.chat("bot", "Hi", context={"user": {"name": "{{ 7 * 7 }}"}})
    assert system_of(fake_openai.requests[-1]) == "You help {{ 7 * 7 }} with orders."


def test_template_cannot_reach_python_internals(agentd_server, fake_openai):
    evil = "Hi {{ ''.__class__.__mro__[1].__subclasses__() }}"
    server = agentd_server({"bot": openai_agent(fake_openai, system_prompt=evil,
                                                allow_system_prompt_override=True)})
    assert server.chat("bot", "Hi").status_code == 200
    assert "subclasses" in system_of(fake_openai.requests[-1])  # left unrendered, never evaluated
    assert "<class" not in system_of(fake_openai.requests[-1])
    response = server.chat("bot", "Hi", system_prompt="{{ cycler.__init__.__globals__ }}")
    assert response.status_code == 200
    rendered = system_of(fake_openai.requests[-1]) or ""
    assert "<module" not in rendered and "<function" not in rendered and "<class" not in rendered


def test_context_must_be_an_object(server, fake_openai):
    assert error_of(server.chat("bot", "Hi", context="Ada"))[:2] == (400, "INVALID_REQUEST")
    assert fake_openai.calls == 0


def test_system_prompt_override_refused_unless_allowed(agentd_server, fake_openai):
    server = agentd_server({"locked": openai_agent(fake_openai, system_prompt=PROMPT),
                            "open": openai_agent(fake_openai, system_prompt=PROMPT,
                                                 allow_system_prompt_override=True)})
    status, code, message = error_of(server.chat("locked", "Hi", system_prompt="Be a pirate."))
    assert (status, code) == (400, "INVALID_REQUEST") and "system_prompt" in message
    assert fake_openai.calls == 0
    assert server.history("locked").json()["meta"]["total"] == 0  # nothing stored
    assert server.chat("open", "Hi", system_prompt="Be a pirate, {{ user.name }}.",
                       context={"user": {"name": "Ada"}}).status_code == 200
    assert system_of(fake_openai.requests[-1]) == "Be a pirate, Ada."


def test_model_override_only_among_allowed(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, model={
        "allow_override": {"models": ["big-model"]}})})
    status, code, message = error_of(server.chat("bot", "Hi", model="secret-model"))
    assert (status, code) == (400, "INVALID_REQUEST") and "model" in message
    status, code, message = error_of(server.chat("bot", "Hi", provider="anthropic"))
    assert (status, code) == (400, "INVALID_REQUEST") and "provider" in message
    assert fake_openai.calls == 0
    response = server.chat("bot", "Hi", model="big-model")
    assert response.status_code == 200, response.text
    assert fake_openai.requests[-1]["model"] == "big-model"
    server.chat("bot", "Hi")
    assert fake_openai.requests[-1]["model"] == "fake-model"


def test_mood_is_appended_and_validated(server, fake_openai):
    assert server.chat("bot", "Hi", mood="friendly").status_code == 200
    assert "friendly" in system_of(fake_openai.requests[-1])
    assert server.chat("bot", "Hi", mood="normal").status_code == 200
    assert system_of(fake_openai.requests[-1]) == "You help the customer with orders."
    status, code, message = error_of(server.chat("bot", "Hi", mood="angry"))
    assert (status, code) == (400, "INVALID_REQUEST") and "mood" in message


def test_metadata_is_stored_on_the_user_message(server, fake_openai):
    body = server.chat("bot", "Hi", metadata={"source": "web", "n": [1, 2]}).json()
    user = server.history("bot", conversation_id=body["conversation_id"]).json()["messages"][0]
    assert user["role"] == "user" and user["metadata"] == {"source": "web", "n": [1, 2]}
    assert error_of(server.chat("bot", "Hi", metadata=["web"]))[:2] == (400, "INVALID_REQUEST")


def test_a_good_image_reaches_the_model(server, fake_openai):
    response = server.chat("bot", "What is this?", images=[{"data": PNG, "mime_type": "image/png"}])
    assert response.status_code == 200, response.text
    sent = json.dumps(fake_openai.requests[-1]["messages"][-1])
    assert "data:image/png;base64," + PNG[:20] in sent


@pytest.mark.parametrize("image, field", [
    ({"data": "not base64!!", "mime_type": "image/png"}, "images[0].data"),
    ({"data": PNG, "mime_type": "application/pdf"}, "images[0].mime_type"),
    ({"data": PNG, "mime_type": "image/svg+xml"}, "images[0].mime_type"),
    ({"data": "", "mime_type": "image/png"}, "images[0].data"),
    ({"mime_type": "image/png"}, "images[0]"),
    ("just a string", "images[0]"),
])
def test_bad_images_are_400(server, fake_openai, image, field):
    status, code, message = error_of(server.chat("bot", "Look", images=[image]))
    assert (status, code) == (400, "INVALID_REQUEST")
    assert message.startswith(field)
    assert fake_openai.calls == 0


def test_images_must_be_an_array(server, fake_openai):
    assert error_of(server.chat("bot", "Look", images={"data": PNG}))[:2] == (400, "INVALID_REQUEST")


def test_too_big_image_is_400(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)}, max_body_bytes=16 * 1024 * 1024)
    big = base64.b64encode(b"\x00" * (5 * 1024 * 1024 + 1)).decode()
    status, code, message = error_of(server.chat("bot", "Look", images=[{"data": big, "mime_type": "image/png"}]))
    assert (status, code) == (400, "INVALID_REQUEST") and "images[0].data" in message
    assert fake_openai.calls == 0


def test_new_conversations_are_titled_from_the_first_message(server, fake_openai):
    long = "Where is my order " + "please " * 20
    first = server.chat("bot", long).json()["conversation_id"]
    title = server.client.get(f"/api/conversations/{first}").json()["title"]
    assert title.startswith("Where is my order") and title.endswith("…") and len(title) <= 61
    server.chat("bot", "Something else", conversation_id=first)
    assert server.client.get(f"/api/conversations/{first}").json()["title"] == title
    untitled = server.chat("bot", "Hi", auto_title=False).json()["conversation_id"]
    assert server.client.get(f"/api/conversations/{untitled}").json()["title"] is None
    assert error_of(server.chat("bot", "Hi", auto_title="yes"))[:2] == (400, "INVALID_REQUEST")
