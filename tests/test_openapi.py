"""The OpenAPI description: a valid 3.1 document, served open, covering every route, and true.

"True" is checked by validating real responses of a running server against the
schema the document gives for that route, method, status and content type.
"""
from __future__ import annotations

import json

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec

from agentd.api.openapi import SPEC_PATH
from agentd.auth import create_key
from tests.conftest import Reply, openai_agent, sse_events

SPEC = yaml.safe_load(SPEC_PATH.read_text())
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _validator(ref: str) -> Draft202012Validator:
    # Refs inside the spec are relative to its root, so validate against the whole document.
    return Draft202012Validator({"$ref": ref, "paths": SPEC["paths"], "components": SPEC["components"]})


def _documented_response(path: str, method: str, status: int) -> tuple[str, dict]:
    responses = SPEC["paths"][path][method.lower()]["responses"]
    key = str(status) if str(status) in responses else "default"
    assert key in responses, f"{method} {path} does not document {status}"
    response = responses[key]
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[1]
        return _pointer("components", "responses", name), SPEC["components"]["responses"][name]
    return _pointer("paths", path, method.lower(), "responses", key), response


def conforms(response, path: str, method: str) -> None:
    """Assert that an httpx response matches what the spec documents for it."""
    where, documented = _documented_response(path, method, response.status_code)
    media = response.headers["Content-Type"].split(";")[0].strip()
    assert media in documented.get("content", {}), f"{method} {path} {response.status_code}: {media} undocumented"
    if media == "application/json":
        errors = list(_validator(where + _pointer("content", media, "schema")[1:]).iter_errors(response.json()))
        assert not errors, [e.message for e in errors]
    elif media == "text/event-stream":
        stream_event = _validator("#/components/schemas/StreamEvent")
        for event in sse_events(response):
            errors = list(stream_event.iter_errors(event))
            assert not errors, (event, [e.message for e in errors])


def test_the_description_is_valid_openapi_3_1():
    validate_spec(SPEC)
    assert SPEC["openapi"].startswith("3.1")


def test_every_route_of_the_app_is_described_and_nothing_else(agentd_server):
    server = agentd_server({})
    served = set()
    for rule in server.app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - IGNORED_METHODS:
            served.add((path, method.lower()))
    described = {(path, method) for path, item in SPEC["paths"].items()
                 for method in item if method in ("get", "post", "put", "patch", "delete")}
    assert served == described


def test_served_as_json_on_an_open_route(agentd_server):
    server = agentd_server({})
    with server.state.db.connection_context():
        create_key("alice")
    response = server.client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(SPEC))
    assert server.client.get("/api/agents").status_code == 401


def test_real_responses_match_their_schemas(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, tools=["calculator"])})
    fake_openai.script(Reply(tool_calls=[("calculator", {"expression": "2+2"})]), Reply(content="4"),
                       Reply(content="streamed", reasoning="thinking"), Reply(status=500))
    c = server.client
    conforms(c.get("/api/agents"), "/api/agents", "GET")
    conforms(c.get("/api/agents/bot"), "/api/agents/{agent_id}", "GET")
    conforms(c.get("/api/agents/nope"), "/api/agents/{agent_id}", "GET")
    answer = server.chat("bot", "2+2?")
    conforms(answer, "/api/agents/{agent_id}/chat", "POST")
    conversation = answer.json()["conversation_id"]
    conforms(server.chat("bot", "more", conversation_id=conversation, stream=True),
             "/api/agents/{agent_id}/chat", "POST")
    failed = server.chat("bot", "fail", stream=True)
    assert sse_events(failed)[-1]["type"] == "error"
    conforms(failed, "/api/agents/{agent_id}/chat", "POST")
    conforms(server.chat("bot", ""), "/api/agents/{agent_id}/chat", "POST")
    conforms(c.post("/api/agents/bot/chat", content=b"{not json", headers={"Content-Type": "application/json"}),
             "/api/agents/{agent_id}/chat", "POST")
    conforms(server.history("bot", conversation_id=conversation), "/api/agents/{agent_id}/chat", "GET")
    conforms(server.history("bot", limit=0), "/api/agents/{agent_id}/chat", "GET")
    conforms(c.get("/api/agents/bot/conversations"), "/api/agents/{agent_id}/conversations", "GET")
    conforms(c.get(f"/api/conversations/{conversation}"), "/api/conversations/{conversation_id}", "GET")
    conforms(c.patch(f"/api/conversations/{conversation}", json={"title": "Sums"}),
             "/api/conversations/{conversation_id}", "PATCH")
    conforms(c.post(f"/api/conversations/{conversation}/truncate", json={"keep": 2}),
             "/api/conversations/{conversation_id}/truncate", "POST")
    conforms(c.get("/api/conversations/conv_nope"), "/api/conversations/{conversation_id}", "GET")
    conforms(c.delete("/api/agents/bot/chat", params={"conversation_id": conversation}),
             "/api/agents/{agent_id}/chat", "DELETE")
    conforms(c.delete(f"/api/conversations/{conversation}"), "/api/conversations/{conversation_id}", "DELETE")
    conforms(c.get("/healthz"), "/healthz", "GET")
    conforms(c.get("/metrics"), "/metrics", "GET")
    conforms(c.get("/widget.js"), "/widget.js", "GET")
    conforms(c.get("/api/openapi.json"), "/api/openapi.json", "GET")
    conforms(c.post("/api/widget/session", json={"agent_id": "bot"}), "/api/widget/session", "POST")


@pytest.mark.parametrize("path, params, body", [
    ("/api/agents/bot/chat", {"after": str(2**70)}, None),
    ("/api/agents/bot/conversations", {"offset": str(2**64)}, None),
    ("/api/agents/bot/chat", None, {"message": "hi", "images": [{"data": "", "mime_type": {}}]}),
    ("/api/agents/bot/chat", None, {"message": "hi", "metadata": {"n": 2**70}}),
])
def test_out_of_range_values_found_by_schemathesis_are_400s(agentd_server, fake_openai, path, params, body):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    response = server.client.post(path, json=body) if body else server.client.get(path, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_REQUEST"


def test_a_streamed_idempotent_answer_with_unicode_line_separators_is_recorded(agentd_server, fake_openai):
    """Found by schemathesis: U+0085/U+2028 inside a `done` frame broke the idempotency record."""
    server = agentd_server({"bot": openai_agent(fake_openai)})
    fake_openai.script(Reply(content="one\u2028two\x85three"))
    headers = {"Idempotency-Key": "k-1"}
    body = {"message": "hi", "stream": True}
    first = server.client.post("/api/agents/bot/chat", json=body, headers=headers)
    # Parsed by hand: SSE lines end only at CR/LF (conftest's sse_events uses splitlines()).
    data = [line[5:] for line in first.text.split("\n") if line.startswith("data:")]
    done = json.loads(data[-1])
    assert done["type"] == "done" and done["message"]["content"] == "one\u2028two\x85three"
    again = server.client.post("/api/agents/bot/chat", json=body, headers=headers)
    assert again.status_code == 200 and fake_openai.calls == 1
    assert again.headers.get("Idempotent-Replayed") == "true"
