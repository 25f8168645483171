"""A widget session token opens the widget's chat only, never another protocol's route."""
from __future__ import annotations

import pytest

from tests.widget_support import start_widget_server, widget_agent

SITE = "https://shop.example.com"


@pytest.fixture
def server(tmp_path, database_url, fake_openai):
    running = start_widget_server(tmp_path, database_url, {"bot": widget_agent(fake_openai, [SITE])})
    yield running
    running.close()


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/responses", {"model": "bot", "input": "hi"}),
    ("POST", "/api/agents/bot/agui", {"threadId": "t", "runId": "r",
                                      "messages": [{"id": "1", "role": "user", "content": "hi"}]}),
    ("POST", "/api/agents/bot/ui-chat", {"messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}),
    ("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
])
def test_a_widget_token_is_refused(server, fake_openai, method, path, body):
    token = server.token("bot", SITE)
    response = server.client.request(method, path, json=body,
                                     headers={"Authorization": f"Widget {token}", "Origin": SITE})
    assert response.status_code == 403, response.text
    assert fake_openai.calls == 0
