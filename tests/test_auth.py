"""API keys: 401s that say nothing, the CLI, agent-limited keys, open local mode, last_used_at."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import httpx
import pytest

from agentd.auth import create_key, revoke_key, touch
from agentd.store.models import ApiKey
from tests.conftest import openai_agent

UNAUTHORIZED = {"error": {"code": "UNAUTHORIZED", "message": "A valid API key is required"}}


def new_key(server, user: str, agents: list[str] | None = None) -> str:
    with server.state.db.connection_context():
        return create_key(user, agents)[1]


def user_client(server, user: str, agents: list[str] | None = None, key: str | None = None) -> httpx.Client:
    """An HTTP client for `server` carrying a fresh key of `user` (or the `key` given)."""
    key = key or new_key(server, user, agents)
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30.0)


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENTD_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "agentd", *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def server(agentd_server, fake_openai):
    return agentd_server({"bot": openai_agent(fake_openai), "other": openai_agent(fake_openai)})


def test_open_local_mode_needs_no_key(server, fake_openai):
    response = server.chat("bot", "Hi")
    assert response.status_code == 200, response.text
    conversation = server.client.get(f"/api/conversations/{response.json()['conversation_id']}").json()
    assert conversation["user_id"] == "local"


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer agd_wrong", "Basic dXNlcjpwYXNz",
                                           "agd_no_scheme"])
def test_missing_or_wrong_key_is_401_without_detail(server, authorization):
    new_key(server, "alice")  # any key at all ends open local mode
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in [("GET", "/api/agents"), ("POST", "/api/agents/bot/chat"),
                         ("GET", "/api/agents/bot/conversations"), ("GET", "/api/conversations/conv_x")]:
        response = server.client.request(method, path, headers=headers, json={"message": "hi"})
        assert response.status_code == 401
        assert response.json() == UNAUTHORIZED
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_revoked_key_is_401_like_a_wrong_one(server, fake_openai):
    key = new_key(server, "alice")
    with user_client(server, "alice", key=key) as alice:
        assert alice.post("/api/agents/bot/chat", json={"message": "hi"}).status_code == 200
        with server.state.db.connection_context():
            row = ApiKey.get(ApiKey.user_id == "alice")
            assert revoke_key(row.id)
        response = alice.get("/api/agents")
        assert response.status_code == 401
        assert response.json() == UNAUTHORIZED


def test_cli_prints_the_key_alone_on_the_last_line(server, database_url, fake_openai):
    created = cli(database_url, "keys", "create", "--user", "carol")
    assert created.returncode == 0, created.stderr
    key = created.stdout.rstrip("\n").splitlines()[-1]
    assert key.startswith("agd_") and " " not in key
    with user_client(server, "carol", key=key) as carol:
        response = carol.post("/api/agents/bot/chat", json={"message": "hi"})
        assert response.status_code == 200, response.text
        conversation = carol.get(f"/api/conversations/{response.json()['conversation_id']}").json()
        assert conversation["user_id"] == "carol"
    listed = cli(database_url, "keys", "list")
    assert "carol" in listed.stdout and key not in listed.stdout
    key_id = created.stdout.split()[2]  # "created key <id> for user carol"
    assert cli(database_url, "keys", "revoke", key_id).returncode == 0
    assert httpx.get(f"{server.url}/api/agents", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_key_limited_to_an_agent_is_refused_on_others(server, fake_openai):
    with user_client(server, "alice") as alice, user_client(server, "alice", agents=["bot"]) as limited:
        other_conversation = alice.post("/api/agents/other/chat", json={"message": "hi"}).json()["conversation_id"]
        assert limited.post("/api/agents/bot/chat", json={"message": "hi"}).status_code == 200
        assert [a["id"] for a in limited.get("/api/agents").json()["agents"]] == ["bot"]
        for method, path, body in [
                ("POST", "/api/agents/other/chat", {"message": "hi"}),
                ("GET", "/api/agents/other", None),
                ("GET", "/api/agents/other/chat", None),
                ("GET", "/api/agents/other/conversations", None)]:
            response = limited.request(method, path, json=body)
            assert (response.status_code, response.json()["error"]["code"]) == (404, "AGENT_NOT_FOUND"), path
        # Its own conversation with the other agent is invisible to the limited key.
        for method, path, body in [
                ("GET", f"/api/conversations/{other_conversation}", None),
                ("PATCH", f"/api/conversations/{other_conversation}", {"title": "x"}),
                ("POST", f"/api/conversations/{other_conversation}/truncate", {"keep": 0}),
                ("DELETE", f"/api/conversations/{other_conversation}", None)]:
            response = limited.request(method, path, json=body)
            assert (response.status_code, response.json()["error"]["code"]) == (404, "CONVERSATION_NOT_FOUND")
        assert alice.get(f"/api/conversations/{other_conversation}").json()["total"] == 2


def test_last_used_is_written_at_most_once_a_minute(server):
    new_key(server, "alice")
    with server.state.db.connection_context():
        row = ApiKey.get(ApiKey.user_id == "alice")
        now = dt.datetime(2030, 1, 1, 12, 0, 0)
        assert touch(row, now)
        row = ApiKey.get_by_id(row.id)
        assert not touch(row, now + dt.timedelta(seconds=59))
        assert ApiKey.get_by_id(row.id).last_used_at == now
        assert touch(row, now + dt.timedelta(seconds=61))
        stale = ApiKey.get_by_id(row.id)
        stale.last_used_at = None  # a copy read before another process wrote: the update is conditional
        assert not touch(stale, now + dt.timedelta(seconds=62))


def test_a_request_stamps_last_used(server):
    key = new_key(server, "alice")
    with user_client(server, "alice", key=key) as alice:
        assert alice.get("/api/agents").status_code == 200
    with server.state.db.connection_context():
        assert ApiKey.get(ApiKey.user_id == "alice").last_used_at is not None


def test_empty_user_is_refused_by_the_cli(database_url):
    result = cli(database_url, "keys", "create", "--user", " ")
    assert result.returncode != 0
