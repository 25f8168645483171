"""Idempotency-Key on POST /chat: one provider call, the same ids, 422 for another body, 409 while running."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from agentd.policies import idempotency
from agentd.store.models import IdempotencyRecord, Message
from tests.conftest import Reply, openai_agent, sse_events
from tests.test_auth import user_client
from tests.test_conversations import _wait_for


@pytest.fixture
def server(agentd_server, fake_openai):
    return agentd_server({"bot": openai_agent(fake_openai), "other": openai_agent(fake_openai)})


def post(client, body: dict, key: str | None = "key-1", agent: str = "bot"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(f"/api/agents/{agent}/chat", json=body, headers=headers)


def test_same_key_same_body_replays_the_first_result(server, fake_openai):
    fake_openai.script(Reply(content="Only once"))
    first = post(server.client, {"message": "Hi", "metadata": {"a": 1, "b": 2}})
    assert first.status_code == 200, first.text
    # Same body with its keys in another order: the same request.
    again = server.client.post("/api/agents/bot/chat", headers={"Idempotency-Key": "key-1"},
                               content=b'{"metadata": {"b": 2, "a": 1}, "message": "Hi"}')
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert fake_openai.calls == 1
    with server.state.db.connection_context():
        assert Message.select().count() == 2  # one user message, one answer


def test_same_key_other_body_is_422(server, fake_openai):
    assert post(server.client, {"message": "Hi"}).status_code == 200
    for body, agent in [({"message": "Hello"}, "bot"), ({"message": "Hi", "stream": True}, "bot"),
                        ({"message": "Hi"}, "other")]:
        response = post(server.client, body, agent=agent)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert fake_openai.calls == 1


def test_still_running_is_409_then_replayed(server, fake_openai):
    release = threading.Event()
    fake_openai.script(Reply(func=lambda body: (release.wait(10), Reply(content="Slow answer"))[1]))
    results = {}
    worker = threading.Thread(target=lambda: results.update(first=post(server.client, {"message": "Hi"})))
    worker.start()
    try:
        _wait_for(lambda: fake_openai.calls == 1)
        busy = post(server.client, {"message": "Hi"})
        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    finally:
        release.set()
        worker.join(10)
    first = results["first"]
    assert first.status_code == 200 and first.json()["content"] == "Slow answer"
    replay = post(server.client, {"message": "Hi"})
    assert replay.json() == first.json()
    assert fake_openai.calls == 1


def test_keys_are_scoped_per_user(server, fake_openai):
    with user_client(server, "alice") as alice, user_client(server, "bob") as bob:
        a = post(alice, {"message": "Hi"}).json()
        b = post(bob, {"message": "Hi"}).json()
        assert a["conversation_id"] != b["conversation_id"] and a["id"] != b["id"]
        assert post(bob, {"message": "Hi"}).json() == b
    assert fake_openai.calls == 2


def test_a_failed_request_frees_the_key(server, fake_openai):
    fake_openai.script(Reply(status=500))
    failed = post(server.client, {"message": "Hi"})
    assert failed.status_code == 502
    bad = post(server.client, {"message": ""})
    assert bad.status_code == 400
    fake_openai.script(Reply(content="Second try"))
    retried = post(server.client, {"message": "Hi"})
    assert retried.status_code == 200 and retried.json()["content"] == "Second try"
    assert post(server.client, {"message": "Hi"}).json() == retried.json()


def test_without_a_key_every_post_runs(server, fake_openai):
    post(server.client, {"message": "Hi"}, key=None)
    post(server.client, {"message": "Hi"}, key=None)
    assert fake_openai.calls == 2


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_bad_key_is_400(server, fake_openai, key):
    response = post(server.client, {"message": "Hi"}, key=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["message"]
    assert fake_openai.calls == 0


def test_streamed_request_is_replayed_as_start_and_done(server, fake_openai):
    fake_openai.script(Reply(content="Streamed once"))
    first = sse_events(post(server.client, {"message": "Hi", "stream": True}))
    done = first[-1]
    assert done["type"] == "done" and done["message"]["content"] == "Streamed once"
    replay = post(server.client, {"message": "Hi", "stream": True})
    assert replay.headers["content-type"].startswith("text/event-stream")
    events = sse_events(replay)
    assert [e["type"] for e in events] == ["start", "done"]
    assert events[0]["id"] == done["message"]["id"]
    assert events[0]["conversation_id"] == done["message"]["conversation_id"]
    assert events[1]["message"]["id"] == done["message"]["id"]
    assert events[1]["message"]["content"] == "Streamed once"
    assert fake_openai.calls == 1


def test_a_client_that_leaves_a_stream_and_retries_does_not_run_the_turn_twice(server, fake_openai):
    release = threading.Event()
    fake_openai.script(Reply(func=lambda body: (release.wait(10), Reply(content="Slow answer"))[1]))
    body = {"message": "Hi", "stream": True}
    with server.client.stream("POST", "/api/agents/bot/chat", json=body,
                              headers={"Idempotency-Key": "key-1"}) as response:
        assert response.status_code == 200
        _wait_for(lambda: fake_openai.calls == 1)
    # The client is gone; the run goes on. A retry meanwhile is told the first one still runs.
    busy = post(server.client, body)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    release.set()
    _wait_for(lambda: post(server.client, body).status_code == 200)
    events = sse_events(post(server.client, body))
    assert [e["type"] for e in events] == ["start", "done"]
    assert events[1]["message"]["content"] == "Slow answer"
    assert fake_openai.calls == 1
    with server.state.db.connection_context():
        assert Message.select().count() == 2  # one user message, one answer


def test_a_stream_that_fails_frees_the_key(server, fake_openai):
    fake_openai.script(Reply(status=500))
    body = {"message": "Hi", "stream": True}
    failed = sse_events(post(server.client, body))
    assert failed[-1]["type"] == "error"
    fake_openai.script(Reply(content="Second try"))
    retried = sse_events(post(server.client, body))
    assert retried[-1]["type"] == "done" and retried[-1]["message"]["content"] == "Second try"


def _age_records(hours: int) -> None:
    for record in IdempotencyRecord.select():
        IdempotencyRecord.update(created_at=record.created_at - dt.timedelta(hours=hours)).where(
            (IdempotencyRecord.user_id == record.user_id) & (IdempotencyRecord.key == record.key)).execute()


def test_expired_records_are_claimed_afresh(server, fake_openai):
    first = post(server.client, {"message": "Hi"}).json()
    with server.state.db.connection_context():
        _age_records(hours=25)
    second = post(server.client, {"message": "Hi"}).json()
    assert second["id"] != first["id"] and fake_openai.calls == 2
    with server.state.db.connection_context():
        _age_records(hours=25)
        assert idempotency.purge_expired(force=True) == 1
        assert IdempotencyRecord.select().count() == 0


def test_claim_is_decided_by_the_database(server):
    """Two claims of one key (as from two processes): exactly one wins, the other sees it running."""
    stale = dt.timedelta(minutes=10)
    with server.state.db.connection_context():
        assert idempotency.claim("u", "k", "bot", "h1", stale) is None
        with pytest.raises(idempotency.IdempotencyInProgress):
            idempotency.claim("u", "k", "bot", "h1", stale)
        with pytest.raises(idempotency.IdempotencyKeyReused):
            idempotency.claim("u", "k", "bot", "h2", stale)
        later = dt.datetime.utcnow() + dt.timedelta(minutes=11)
        assert idempotency.claim("u", "k", "bot", "h1", stale, now=later) is None  # a crashed first run
        idempotency.finish("u", "k", {"id": 7}, 200)
        assert idempotency.claim("u", "k", "bot", "h1", stale).response == {"id": 7}
