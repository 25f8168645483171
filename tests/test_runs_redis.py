"""Runs across processes: two agentd servers on one database and one Redis (AGENTD_REDIS_URL).

One is gunicorn with its gevent worker (as deployed), the other the development
server; a run driven by either can be attached to, resumed and cancelled from
the other, its events going through Redis.
"""
from __future__ import annotations

import pytest

from tests.conftest import Reply, openai_agent
from tests.support import (RedisServer, ServerProcess, free_port, iter_frames, seq_of, server_env, wait_for,
                           write_agent)
from tests.test_streaming import LONG_TEXT


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def pair(tmp_path, database_url, fake_openai, redis_server, processes):
    """(gunicorn, dev server) sharing the database and Redis."""
    agents = write_agent(tmp_path / "agents", "bot", openai_agent(fake_openai))
    commands = {"gunicorn": ["-m", "gunicorn", "-c", "gunicorn.conf.py", "--workers", "1", "wsgi:app"],
                "serve": ["-m", "agentd", "serve"]}
    for name, command in commands.items():  # one after the other: both migrate the same database
        port = free_port()
        env = server_env(database_url, agents, port, redis_url=redis_server.url)
        processes.append(ServerProcess(command, env, port, tmp_path / f"{name}.log"))
    return processes[0], processes[1]


def until_deltas(frames, count: int) -> list:
    seen = []
    while sum(1 for _, e in seen if e["type"] == "delta") < count:
        seen.append(next(frames))
    return seen


def attach(server, conversation: str, **kwargs):
    return server.client.stream("GET", f"/api/conversations/{conversation}/stream", **kwargs)


def settled_answer(server, conversation: str) -> dict:
    """The conversation's last message once it is no longer streaming."""
    return wait_for(lambda: (rows := server.history("bot", conversation))[-1]["status"] != "streaming"
                    and rows[-1], what="the answer")


def test_attach_on_another_process_replays_and_follows_through_redis(pair, fake_openai):
    owner, other = pair
    fake_openai.script(Reply(content=LONG_TEXT, chunk_delay=0.05))
    with owner.stream("bot", "Go") as response:
        own = iter_frames(response)
        seen = until_deltas(own, 3)
        start = seen[0][1]
        conversation = start["conversation_id"]
        running = other.client.get(f"/api/conversations/{conversation}").json()["running"]
        assert running["run_id"] == start["run_id"]
        with attach(other, conversation) as full, \
                attach(other, conversation, headers={"Last-Event-ID": seen[2][0]}) as resumed:
            assert full.status_code == resumed.status_code == 200
            attached, rest = list(iter_frames(full)), list(iter_frames(resumed))
        seen += list(own)
    assert [seq_of(i) for i, _ in attached] == list(range(1, len(seen) + 1))
    assert attached == seen and rest == seen[3:]
    assert attached[-1][1]["type"] == "done" and attached[-1][1]["message"]["content"] == LONG_TEXT
    assert other.client.get(f"/api/conversations/{conversation}/stream").status_code == 204
    # A client that lost the end of the run gets the rest from Redis, on either process.
    for server in (owner, other):
        late = server.client.get(f"/api/conversations/{conversation}/stream",
                                 headers={"Last-Event-ID": seen[-3][0]})
        assert late.status_code == 200
        assert [e for e in late.text.split("\n") if e.startswith("id:")] == [f"id: {i}" for i, _ in seen[-2:]]


def test_cancel_from_another_process_stops_the_run_and_tells_its_watchers(pair, fake_openai):
    gunicorn, serve = pair
    for owner, other in ((serve, gunicorn), (gunicorn, serve)):
        fake_openai.script(Reply(content=LONG_TEXT * 5, chunk_delay=0.05))
        with owner.stream("bot", "Go") as response:
            own = iter_frames(response)
            start = until_deltas(own, 2)[0][1]
            conversation = start["conversation_id"]
            with attach(other, conversation) as watcher:
                watched = iter_frames(watcher)
                until_deltas(watched, 2)
                cancelled = other.client.post(f"/api/conversations/{conversation}/cancel")
                assert cancelled.json() == {"cancelled": True, "run_id": start["run_id"]}
                watched_tail = list(watched)
            own_tail = list(own)
        for tail in (watched_tail, own_tail):
            assert tail[-1][1]["type"] == "error" and tail[-1][1]["error"]["code"] == "CANCELLED"
        stored = other.history("bot", conversation)[-1]
        assert stored["status"] == "partial" and stored["id"] == start["id"]
        assert (LONG_TEXT * 5).startswith(stored["content"])
        assert other.client.post(f"/api/conversations/{conversation}/cancel").json() == {"cancelled": False}


def test_a_run_whose_client_left_finishes_under_gunicorn(pair, fake_openai):
    gunicorn, serve = pair
    fake_openai.script(Reply(content=LONG_TEXT, chunk_delay=0.05))
    with gunicorn.stream("bot", "Go") as response:
        start = until_deltas(iter_frames(response), 2)[0][1]
    settled = settled_answer(serve, start["conversation_id"])
    assert settled["status"] == "complete" and settled["content"] == LONG_TEXT


def test_a_watcher_that_loses_redis_is_told_and_the_run_finishes(pair, fake_openai, redis_server):
    owner, other = pair
    fake_openai.script(Reply(content=LONG_TEXT, chunk_delay=0.05))
    with owner.stream("bot", "Go") as response:
        own = iter_frames(response)
        start = until_deltas(own, 2)[0][1]
        conversation = start["conversation_id"]
        with attach(other, conversation) as watcher:
            watched = iter_frames(watcher)
            seen = until_deltas(watched, 2)
            redis_server.stop()
            rest = list(watched)
        own_rest = list(own)
    # Not a cut stream: the watcher is told why, with the last id it had, to resume from.
    last_id, last = rest[-1]
    assert last["type"] == "error" and last["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert seq_of(last_id) <= seq_of((seen + rest[:-1])[-1][0])
    # The run itself went on and stored its answer; its own client read it to the end.
    assert own_rest[-1][1]["type"] == "done" and own_rest[-1][1]["message"]["content"] == LONG_TEXT
    stored = settled_answer(other, conversation)
    assert stored["status"] == "complete" and stored["content"] == LONG_TEXT
