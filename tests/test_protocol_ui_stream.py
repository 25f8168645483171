"""The AI SDK UI message stream, read by the npm `ai` package's own client (node)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Reply
from tests.protocol_support import new_key, sse_data, served  # noqa: F401  (fixture)

CHECKER = Path(__file__).parent / "ui_stream"


@pytest.fixture(scope="session")
def node():
    """node with the `ai` package installed into tests/ui_stream (`npm ci` on first use)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (CHECKER / "node_modules" / "ai" / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CHECKER,
                       check=True, timeout=300)
    return node


def ai_client(node, *args) -> dict:
    done = subprocess.run([node, "check.mjs", *args], cwd=CHECKER, capture_output=True, text=True, timeout=60)
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def ui_message(role: str, text: str, ident: str) -> dict:
    return {"id": ident, "role": role, "parts": [{"type": "text", "text": text}]}


def send(node, server, key, chat_id, *messages, agent="bot") -> dict:
    return ai_client(node, "send", f"{server.url}/api/agents/{agent}/ui-chat", key, chat_id, json.dumps(messages))


def test_the_ai_client_reads_a_text_answer(served, node, fake_openai):
    server, key = served
    fake_openai.script(Reply(content="Hello from agentd", usage=(6, 3)))
    result = send(node, server, key, "chat-1", ui_message("user", "hi", "u1"))
    assert "error" not in result and not result["errors"], result
    message = result["message"]
    assert message["role"] == "assistant"
    assert [p["text"] for p in message["parts"] if p["type"] == "text"] == ["Hello from agentd"]
    assert message["metadata"]["conversation_id"].startswith("conv_")
    assert message["metadata"]["usage"]["total_tokens"] == 9
    kinds = [c["type"] for c in result["chunks"]]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    assert {"text-start", "text-delta", "text-end"} <= set(kinds)


def test_the_ai_client_reads_a_tool_turn(served, node, fake_openai):
    server, key = served
    fake_openai.script(Reply(tool_calls=[("add", {"a": 2, "b": 3})]), Reply(content="It is 5."))
    result = send(node, server, key, "chat-2", ui_message("user", "2+3?", "u1"))
    assert "error" not in result and not result["errors"], result
    tool = next(p for p in result["message"]["parts"] if p["type"] == "dynamic-tool")
    assert tool["toolName"] == "add" and tool["input"] == {"a": 2, "b": 3}
    assert tool["state"] == "output-available" and tool["output"] == "5"
    assert result["message"]["parts"][-1]["text"] == "It is 5."


def test_chat_id_continues_the_conversation(served, node, fake_openai):
    server, key = served
    first = send(node, server, key, "client-chat", ui_message("user", "one", "u1"))
    conversation_id = first["message"]["metadata"]["conversation_id"]
    again = send(node, server, key, conversation_id, ui_message("user", "one", "u1"),
                 ui_message("assistant", "echo: one", "a1"), ui_message("user", "two", "u2"))
    assert again["message"]["metadata"]["conversation_id"] == conversation_id
    sent = [m["content"] for m in fake_openai.requests[-1]["messages"][1:]]
    assert sent == ["one", "echo: one", "two"]


def test_use_chat_ids_name_the_conversation(served, node, fake_openai):
    server, key = served
    chat_id = "Xq3k9ZpLm2Rt7VwY"  # what useChat's generateId makes: 16 characters
    send(node, server, key, chat_id, ui_message("user", "one", "u1"))
    again = send(node, server, key, chat_id, ui_message("user", "one", "u1"),
                 ui_message("assistant", "echo: one", "a1"), ui_message("user", "two", "u2"))
    assert again["message"]["metadata"]["conversation_id"] == chat_id
    stored = server.client.get(f"/api/conversations/{chat_id}", headers={"Authorization": f"Bearer {key}"}).json()
    assert stored["channel"] == "ui"
    assert [m["content"] for m in stored["messages"]] == ["one", "echo: one", "two", "echo: two"]


def test_the_raw_stream_has_the_header_and_ends_with_done(served, fake_openai):
    server, key = served
    response = server.client.post("/api/agents/bot/ui-chat", headers={"Authorization": f"Bearer {key}"},
                                  json={"id": "c", "messages": [ui_message("user", "hi", "u1")]})
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert sse_data(response.text)[-1] == "[DONE]"


def test_a_failed_turn_is_an_error_part(served, node, fake_openai):
    server, key = served
    fake_openai.script(*[Reply(status=500)] * 20)
    response = server.client.post("/api/agents/bot/ui-chat", headers={"Authorization": f"Bearer {key}"},
                                  json={"id": "c", "messages": [ui_message("user", "hi", "u1")]})
    parts = [json.loads(d) for d in sse_data(response.text)[:-1]]
    assert parts[-1]["type"] == "error" and parts[-1]["errorText"].startswith("MODEL_ERROR")
    result = send(node, server, key, "c", ui_message("user", "hi", "u1"))
    assert result["chunks"][-1]["type"] == "error" and "MODEL_ERROR" in result["errors"][0], result


def test_resume_is_204_when_nothing_runs(served, node, fake_openai):
    server, key = served
    first = send(node, server, key, "c", ui_message("user", "hi", "u1"))
    conversation_id = first["message"]["metadata"]["conversation_id"]
    assert ai_client(node, "resume", f"{server.url}/api/agents/bot/ui-chat", key, conversation_id) == \
        {"resumed": False}
    url = f"/api/agents/bot/ui-chat/{conversation_id}/stream"
    assert server.client.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 204
    assert server.client.get(url, headers={"Authorization": f"Bearer {new_key(server, 'eve')}"}).status_code == 403
    assert server.client.get("/api/agents/bot/ui-chat/conv_nope/stream",
                             headers={"Authorization": f"Bearer {key}"}).status_code == 404


@pytest.mark.parametrize("body, field", [
    ({}, "messages"), ({"messages": []}, "messages"), ({"messages": [{"role": "user"}]}, "messages[0]"),
    ({"messages": [ui_message("assistant", "x", "a")]}, "messages"),
    ({"id": 5, "messages": [ui_message("user", "x", "u")]}, "id"),
])
def test_bad_bodies_are_400(served, fake_openai, body, field):
    server, key = served
    response = server.client.post("/api/agents/bot/ui-chat", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400 and response.json()["error"]["message"].startswith(field)
    assert fake_openai.calls == 0


def test_resume_while_a_turn_runs_replays_it_and_follows(served, fake_openai):
    """The running turn's parts from its start, then the live ones, ending with [DONE]."""
    server, key = served
    auth = {"Authorization": f"Bearer {key}"}
    chat_id = "Resume0123456789"
    fake_openai.script(Reply(content="a slow answer " * 10, chunk_delay=0.1))
    with server.client.stream("POST", "/api/agents/bot/ui-chat", headers=auth,
                              json={"id": chat_id, "messages": [ui_message("user", "hi", "u1")]}) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))  # the turn has started
        resumed = server.client.get(f"/api/agents/bot/ui-chat/{chat_id}/stream", headers=auth)
        own = [line for line in lines if line.startswith("data:")]
    assert resumed.status_code == 200 and resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    parts = sse_data(resumed.text)
    assert parts[-1] == "[DONE]" and json.loads(parts[0])["type"] == "start"
    text = "".join(json.loads(p)["delta"] for p in parts[:-1] if json.loads(p)["type"] == "text-delta")
    assert text == "a slow answer " * 10
    assert own[-1] == "data: [DONE]"
    assert server.client.get(f"/api/agents/bot/ui-chat/{chat_id}/stream", headers=auth).status_code == 204
