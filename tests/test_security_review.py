"""Findings of the security and correctness review, each pinned by a test over real HTTP.

Isolation (a cached answer, an idempotent replay), open local mode against
browsers on other sites, provider error bodies, and inputs that were 500s.
"""
from __future__ import annotations

import json

from werkzeug.wrappers import Request, Response

from tests.conftest import Reply, openai_agent, sse_events
from tests.fakes.server import LoopbackServer
from tests.test_auth import user_client

WHOAMI_PLUGIN = '''
from agentd import ToolContext, hookimpl

def whoami(ctx: ToolContext) -> dict:
    """The account of the user asking."""
    return {"user": ctx.user_id, "balance": 500 if ctx.user_id == "alice" else 3}

@hookimpl
def register_tools(register):
    register(whoami)
'''


def _error(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


# ------------------------------------------------------------------ isolation

def test_a_cached_answer_built_from_tool_results_is_not_served_to_another_user(
        agentd_server, fake_openai, tmp_path):
    # Tools see who is asking (ToolContext.user_id): what they return is personal.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "who.py").write_text(WHOAMI_PLUGIN)
    agent = openai_agent(fake_openai, tools=["whoami"], cache={"ttl": 3600})
    server = agentd_server({"bot": agent}, plugins_dir=str(plugins))
    alice, bob = user_client(server, "alice"), user_client(server, "bob")
    fake_openai.script(Reply(tool_calls=[("whoami", {})]), Reply(content="Alice, your balance is 500."))
    assert alice.post("/api/agents/bot/chat", json={"message": "What is my balance?"}).status_code == 200
    fake_openai.script(Reply(tool_calls=[("whoami", {})]), Reply(content="Bob, your balance is 3."))
    response = bob.post("/api/agents/bot/chat", json={"message": "What is my balance?"})
    assert response.status_code == 200, response.text
    assert response.headers.get("X-Cache") != "hit"
    assert response.json()["content"] == "Bob, your balance is 3."
    assert fake_openai.calls == 4


def test_a_tool_free_answer_is_still_cached(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, cache={"ttl": 3600})})
    fake_openai.script(Reply(content="We open at nine."))
    assert server.chat("bot", "Opening hours?").headers["X-Cache"] == "miss"
    assert server.chat("bot", "opening hours").headers["X-Cache"] == "hit"
    assert fake_openai.calls == 1


def test_an_agent_limited_key_cannot_replay_another_agents_idempotent_answer(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai), "other": openai_agent(fake_openai)})
    full, limited = user_client(server, "alice"), user_client(server, "alice", agents=["other"])
    fake_openai.script(Reply(content="Only for the bot agent."))
    headers = {"Idempotency-Key": "same-key"}
    first = full.post("/api/agents/bot/chat", json={"message": "hi"}, headers=headers)
    assert first.status_code == 200, first.text
    replay = limited.post("/api/agents/bot/chat", json={"message": "hi"}, headers=headers)
    assert _error(replay) == (404, "AGENT_NOT_FOUND")
    assert "Only for the bot agent" not in replay.text
    # The key still replays for a caller who may use the agent.
    again = full.post("/api/agents/bot/chat", json={"message": "hi"}, headers=headers)
    assert again.json()["id"] == first.json()["id"] and fake_openai.calls == 1


# ----------------------------------------------------------- open local mode

def test_open_local_mode_refuses_pages_on_other_sites(agentd_server, fake_openai):
    # With no key, any web page the local user visits could post to 127.0.0.1 (a
    # "simple" text/plain POST needs no preflight), or read everything through a
    # DNS-rebound name. Open mode answers local, non-browser or same-site callers only.
    server = agentd_server({"bot": openai_agent(fake_openai)})
    body = json.dumps({"message": "hi"})
    cross_site = server.client.post("/api/agents/bot/chat", content=body,
                                    headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert _error(cross_site) == (403, "FORBIDDEN")
    rebound = server.client.get("/api/agents/bot/chat", headers={"Host": "evil.example"})
    assert _error(rebound) == (403, "FORBIDDEN")
    assert fake_openai.calls == 0
    assert server.history("bot").json()["meta"]["total"] == 0
    # curl, the CLI and the server's own pages still work.
    assert server.chat("bot", "hi").status_code == 200
    same_site = server.client.get("/api/agents", headers={"Origin": server.url})
    assert same_site.status_code == 200
    assert server.client.get("/api/agents", headers={"Host": "localhost"}).status_code == 200


def test_open_remote_mode_and_keys_are_not_limited_to_loopback_names(agentd_server, fake_openai):
    remote = agentd_server({"bot": openai_agent(fake_openai)}, allow_open_remote=True)
    assert remote.client.get("/api/agents", headers={"Host": "agents.example"}).status_code == 200
    keyed = agentd_server({"bot": openai_agent(fake_openai)})
    client = user_client(keyed, "alice")
    assert client.get("/api/agents", headers={"Host": "agents.example"}).status_code == 200


# ----------------------------------------------------------------- secrets

def _echoing_upstream() -> LoopbackServer:
    """An OpenAI-compatible server that fails with a body echoing the request's key."""
    def app(environ, start_response):
        request = Request(environ)
        payload = {"error": {"message": f"Invalid key: {request.headers.get('Authorization')}",
                             "internal": "db=10.1.2.3"}}
        return Response(json.dumps(payload), 401, mimetype="application/json")(environ, start_response)
    return LoopbackServer(app).start()


def test_a_provider_error_body_never_reaches_the_client(agentd_server, monkeypatch):
    secret = "sk-test-provider-key-0123456789"
    monkeypatch.setenv("REVIEW_PROVIDER_KEY", secret)
    upstream = _echoing_upstream()
    try:
        yaml_text = json.dumps({"name": "Bot", "model": {
            "provider": "openai", "name": "m", "base_url": upstream.url + "/v1",
            "api_key_env": "REVIEW_PROVIDER_KEY", "retries": 0}})
        server = agentd_server({"bot": yaml_text})
        response = server.chat("bot", "hi")
        assert _error(response) == (502, "MODEL_ERROR")
        assert "401" in response.json()["error"]["message"]
        for leak in (secret, "Invalid key", "10.1.2.3"):
            assert leak not in response.text
        streamed = server.chat("bot", "hi", stream=True)
        for leak in (secret, "Invalid key", "10.1.2.3"):
            assert leak not in streamed.text
    finally:
        upstream.stop()


def test_an_error_event_inside_a_stream_never_reaches_the_client_verbatim(agentd_server, fake_openai):
    """Error events inside a 200 stream carry upstream text too; clients get only its kind."""
    server = agentd_server({"bot": openai_agent(fake_openai)})
    fake_openai.script(Reply(content="one two three", fault="error_event"))
    events = sse_events(server.chat("bot", "hi", stream=True))
    error = events[-1]
    assert error["type"] == "error" and error["error"]["code"] == "MODEL_ERROR"
    assert "server_error" in error["error"]["message"]
    assert "overloaded" not in error["error"]["message"]  # the upstream's own words


# ------------------------------------------------------------- bad inputs

def test_deeply_nested_json_is_a_400(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    deep = '{"message": "hi", "metadata": {"a": ' + "[" * 50000 + "]" * 50000 + "}}"
    for body in ("[" * 100000, deep):
        response = server.client.post("/api/agents/bot/chat", content=body,
                                      headers={"Content-Type": "application/json"})
        assert _error(response) == (400, "INVALID_REQUEST")
    assert fake_openai.calls == 0


def test_nul_characters_are_stored_alike_on_every_database(agentd_server, fake_openai):
    # PostgreSQL text cannot hold U+0000: it was a 500 there (user text, ids,
    # and a model answer carrying one, which lost the whole answer).
    server = agentd_server({"bot": openai_agent(fake_openai)})
    fake_openai.script(Reply(content="an\u0000swer"))
    response = server.chat("bot", "que\u0000stion")
    assert response.status_code == 200, response.text
    conversation = response.json()["conversation_id"]
    history = server.history("bot", conversation_id=conversation).json()["messages"]
    assert [m["content"] for m in history] == ["que\ufffdstion", "an\ufffdswer"]
    fake_openai.script(Reply(content="stream\u0000ed"))
    streamed = server.chat("bot", "again", conversation_id=conversation, stream=True)
    assert '"type":"done"' in streamed.text.replace(" ", "")
    assert server.history("bot", conversation_id=conversation).json()["messages"][-1]["content"] == \
        "stream\ufffded"
    for path in ("/api/conversations/conv_x%00", "/api/agents/bot/chat?conversation_id=conv_x%00"):
        assert _error(server.client.get(path)) == (404, "CONVERSATION_NOT_FOUND")
    assert _error(server.chat("bot", "hi", conversation_id="conv_\u0000")) == (404, "CONVERSATION_NOT_FOUND")
    renamed = server.client.patch(f"/api/conversations/{conversation}", json={"title": "t\u0000"})
    assert renamed.status_code == 200
    assert server.client.get(f"/api/conversations/{conversation}").json()["title"] == "t\ufffd"

