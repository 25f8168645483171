"""Structured logs: a JSON line per request and per turn, request ids, and no secret in any line."""
from __future__ import annotations

import json
import logging

import pytest

from agentd import logs
from agentd.auth import create_key
from agentd.config import Config
from tests.conftest import Reply, openai_agent, sse_events

PROVIDER_KEY = "planted-provider-value-7f3a9c"        # no recognisable shape: found by value
DB_PASSWORD = "planted-db-pw-51c0"
SECRET_KEY = "planted-flask-secret-88e1d2"

LEAKY_PLUGIN = '''
import logging, os
from agentd import hookimpl, ToolContext

log = logging.getLogger("plugins.leaky")

def leak(ctx: ToolContext) -> str:
    """A careless tool that logs everything it can reach, then fails."""
    log.info("config %s env key %s", ctx.config, os.environ.get("LEAKY_LLM_API_KEY"))
    raise RuntimeError("could not reach %s with key %s" % (ctx.config["database"],
                                                         os.environ["LEAKY_LLM_API_KEY"]))

@hookimpl
def register_tools(register):
    register(leak, config_schema={"type": "object", "properties": {"database": {"type": "string"}}})
'''


@pytest.fixture
def leaky(agentd_server, fake_openai, tmp_path, monkeypatch):
    monkeypatch.setenv("LEAKY_LLM_API_KEY", PROVIDER_KEY)
    plugins = tmp_path / "leaky_plugins"
    plugins.mkdir()
    (plugins / "leaky.py").write_text(LEAKY_PLUGIN)
    database = f"postgresql://reader:{DB_PASSWORD}@127.0.0.1:9/shop"
    agent = openai_agent(fake_openai, model={"api_key_env": "LEAKY_LLM_API_KEY"},
                         tools=[{"leak": {"database": database}}])
    return agentd_server({"bot": agent}, plugins_dir=str(plugins), log_format="json",
                         log_level="DEBUG", secret_key=SECRET_KEY)


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_no_secret_reaches_any_log_line(leaky, fake_openai, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    server = leaky
    with server.state.db.connection_context():
        _, api_key = create_key("alice")

    @server.app.before_request
    def careless_extension():  # an extension that logs whole requests
        from flask import request
        logging.getLogger("careless").info("headers %s", dict(request.headers))

    server.client.headers["Authorization"] = f"Bearer {api_key}"
    fake_openai.script(Reply(tool_calls=[("leak", {})]), Reply(content="sorry"),
                       Reply(content="partial", chunk_delay=0.01), Reply(status=401))
    assert server.chat("bot", "go").status_code == 200
    assert sse_events(server.chat("bot", "stream", stream=True))[-1]["type"] == "done"
    assert server.chat("bot", "fail").status_code in (502, 503)
    assert server.client.get("/api/agents", headers={"Authorization": "Bearer agd_wrongwrongwrong"}).status_code == 401
    assert fake_openai.headers[0]["Authorization"] == f"Bearer {PROVIDER_KEY}"  # the key was in use

    captured = caplog.text + capsys.readouterr().err
    assert "careless" in captured and "plugins.leaky" in captured and "***" in captured  # leaks were tried
    for secret in (PROVIDER_KEY, DB_PASSWORD, SECRET_KEY, api_key, api_key[4:], "agd_wrongwrongwrong"):
        assert secret not in captured


def test_one_json_line_per_request_and_per_turn_with_request_ids(leaky, fake_openai, capsys):
    server = leaky
    fake_openai.script(Reply(content="hello", usage=(7, 3)))
    response = server.client.post("/api/agents/bot/chat", json={"message": "hi"},
                                  headers={"X-Request-Id": "req-abc.123"})
    assert response.headers["X-Request-Id"] == "req-abc.123"
    bad = server.client.get("/api/agents/nope", headers={"X-Request-Id": "bad id\twith spaces"})
    generated = bad.headers["X-Request-Id"]
    assert generated and generated != "bad id\twith spaces"

    lines = _json_lines(capsys.readouterr().err)
    requests = [l for l in lines if l.get("event") == "request"]
    chat = next(l for l in requests if l["request_id"] == "req-abc.123")
    assert chat["method"] == "POST" and chat["path"] == "/api/agents/bot/chat"
    assert chat["status"] == 200 and chat["user"] == "local" and chat["duration_ms"] >= 0
    missing = next(l for l in requests if l["request_id"] == generated)
    assert missing["status"] == 404
    turn = next(l for l in lines if l.get("event") == "turn")
    assert turn["agent"] == "bot" and turn["outcome"] == "complete" and turn["rounds"] == 0
    assert turn["conversation"] == response.json()["conversation_id"]
    assert turn["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert turn["provider"] == "openai" and turn["model"] == "fake-model"
    assert turn["request_id"] == "req-abc.123"
    assert all(l["level"] and l["logger"] and l["ts"].endswith("Z") for l in lines)


def test_streamed_turn_log_has_time_to_first_token(leaky, fake_openai, capsys):
    fake_openai.script(Reply(content="a streamed answer", chunk_delay=0.01))
    assert sse_events(leaky.chat("bot", "hi", stream=True))[-1]["type"] == "done"
    turn = next(l for l in _json_lines(capsys.readouterr().err) if l.get("event") == "turn")
    assert turn["stream"] is True and turn["ttft_ms"] is not None and turn["outcome"] == "complete"


def test_database_url_password_is_redacted(tmp_path, caplog):
    url = f"postgresql://agentd:{DB_PASSWORD}x@db.internal:5432/agentd"
    logs.configure(Config(database_url=url, log_format="text"))
    caplog.set_level(logging.INFO)
    logging.getLogger("agentd.test").error("cannot connect to %s", url)
    try:
        raise ConnectionError(f"connection to {url} failed")
    except ConnectionError:
        logging.getLogger("agentd.test").exception("database down")
    assert DB_PASSWORD not in caplog.text and "db.internal" in caplog.text


@pytest.mark.parametrize("text, hidden", [
    ("Authorization: Bearer abcdef123456", "abcdef123456"),
    ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
    ("redis://:hunter22@cache:6379/0", "hunter22"),
    ("https://x.example/?api_key=zzz999yyy&q=1", "zzz999yyy"),
    ('{"password": "correct-horse"}', "correct-horse"),
    ("key sk-proj-abcdefghijklmnop1234", "abcdefghijklmnop1234"),
    ("OPENAI_API_KEY=abc123def456", "abc123def456"),
    ("access_token: tok-123456", "tok-123456"),
])
def test_secret_shaped_text_is_redacted(text, hidden):
    assert hidden not in logs.redact(text)


@pytest.mark.parametrize("text", [
    'UPDATE "conversation" SET "busy_token" = ? WHERE ("conversation"."busy_token" = ?)',
    "turn bot complete: 120 tokens",
    "GET /api/agents/bot/chat 200",
])
def test_ordinary_text_is_left_alone(text):
    assert logs.redact(text) == text

    ("agd_Zm9vYmFyYmF6cXV4MTIzNDU2", "Zm9vYmFyYmF6cXV4MTIzNDU2"),
