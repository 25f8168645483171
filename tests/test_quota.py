"""Daily token quotas through the HTTP API, with the server's clock moved by the test."""
import datetime as dt
from concurrent.futures import ThreadPoolExecutor

from agentd.auth import create_key
from agentd.store.models import UsageDay
from tests.conftest import Reply, openai_agent, sse_events

NOON = dt.datetime(2025, 3, 1, 12, 0, 0)


def _server(agentd_server, fake, tokens=40, **extra):
    server = agentd_server({"bot": openai_agent(fake, quota={"tokens_per_day": tokens}, **extra)})
    server.state.clock = lambda: NOON
    return server


def _keys(server, *users):
    with server.state.db.connection_context():
        return [{"Authorization": f"Bearer {create_key(user)[1]}"} for user in users]


def _chat(server, headers, message="hi", **body):
    return server.client.post("/api/agents/bot/chat", json={"message": message, **body}, headers=headers)


def _used(server, user, day=NOON.date()):
    with server.state.db.connection_context():
        row = UsageDay.get_or_none((UsageDay.user_id == user) & (UsageDay.day == day))
        return row.tokens if row else 0


def test_a_quota_stops_a_user_and_resets_the_next_day(agentd_server, fake_openai):
    server = _server(agentd_server, fake_openai, tokens=40)
    alice, bob = _keys(server, "alice", "bob")
    for _ in range(3):  # 15 tokens a turn: 15, 30, 45
        assert _chat(server, alice).status_code == 200
    assert _used(server, "alice") == 45
    response = _chat(server, alice)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "QUOTA_EXCEEDED"
    assert response.headers["Retry-After"] == str(12 * 3600)
    assert fake_openai.calls == 3
    # Nothing of the refused turn is stored.
    history = server.client.get("/api/agents/bot/chat", headers=alice).json()["messages"]
    assert len(history) == 6
    # Another user has a quota of their own.
    assert _chat(server, bob).status_code == 200
    # The next day the count starts again.
    server.state.clock = lambda: NOON + dt.timedelta(days=1)
    assert _chat(server, alice).status_code == 200
    assert _used(server, "alice", NOON.date() + dt.timedelta(days=1)) == 15
    assert fake_openai.calls == 5


def test_a_streamed_turn_over_quota_is_refused_before_the_stream(agentd_server, fake_openai):
    server = _server(agentd_server, fake_openai, tokens=10)
    fake_openai.script(Reply(content="a long answer", usage=(8, 4)))
    events = sse_events(server.chat("bot", "hi", stream=True))
    assert events[-1]["type"] == "done" and events[-1]["usage"]["total_tokens"] == 12
    response = server.chat("bot", "again", stream=True)
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "QUOTA_EXCEEDED"
    assert fake_openai.calls == 1


def test_usage_counts_every_model_call_of_a_turn(agentd_server, fake_openai):
    server = _server(agentd_server, fake_openai, tokens=1000, tools=["calculator"])
    fake_openai.script(Reply(tool_calls=[("calculator", {"expression": "2+2"})], usage=(20, 3)),
                       Reply(content="4", usage=(30, 2)))
    assert server.chat("bot", "2+2?").status_code == 200
    assert _used(server, "local") == 55


def test_concurrent_turns_add_up(agentd_server, fake_openai):
    server = _server(agentd_server, fake_openai, tokens=10_000)
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda n: server.chat("bot", f"question {n}").status_code, range(12)))
    assert statuses == [200] * 12
    assert _used(server, "local") == 12 * 15


def test_usage_is_recorded_for_agents_without_a_quota(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    server.state.clock = lambda: dt.date(2025, 3, 1)
    assert server.chat("bot", "hi").status_code == 200
    assert _used(server, "local", dt.date(2025, 3, 1)) == 15


def test_an_aware_clock_counts_in_utc(agentd_server, fake_openai):
    server = _server(agentd_server, fake_openai)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    server.state.clock = lambda: dt.datetime(2025, 3, 2, 1, 0, tzinfo=plus_two)  # 23:00 UTC on the 1st
    assert server.chat("bot", "hi").status_code == 200
    assert _used(server, "local", dt.date(2025, 3, 1)) == 15
