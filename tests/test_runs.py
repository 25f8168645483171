"""Runs that outlive their connection, over real HTTP: leave, attach, resume, watch, cancel.

A turn is a run whose events are numbered (`id: <run_id>:<seq>`); the client
that started it is only its first watcher. Nothing here asserts a time: waits
poll a condition with a generous deadline.
"""
from __future__ import annotations

import httpx
import pytest

from agentd.auth import create_key
from tests.conftest import Reply, openai_agent
from tests.support import iter_frames, seq_of, wait_for
from tests.test_streaming import LONG_TEXT, assistant_settled, messages, open_stream

SLOW = dict(content=LONG_TEXT, chunk_delay=0.05)          # about 2 s of deltas
VERY_SLOW = dict(content=LONG_TEXT * 5, chunk_delay=0.05)  # about 10 s: cancelled long before its end


@pytest.fixture
def bot(agentd_server, fake_openai):
    return agentd_server({"bot": openai_agent(fake_openai)})


def attach(server, conversation_id: str, headers=None, **params):
    return server.client.stream("GET", f"/api/conversations/{conversation_id}/stream",
                                params=params, headers=headers or {})


def until_deltas(frames, count: int) -> list:
    """Frames read up to and including the `count`-th delta."""
    seen = []
    while sum(1 for _, e in seen if e["type"] == "delta") < count:
        seen.append(next(frames))
    return seen


def test_a_client_leaving_mid_stream_leaves_the_run_going_to_a_complete_answer(bot, fake_openai):
    fake_openai.script(Reply(**SLOW))
    with open_stream(bot, "bot", "Go") as response:
        frames = iter_frames(response)
        start = until_deltas(frames, 2)[0][1]
    # the client is gone; the run is not
    stored = wait_for(lambda: assistant_settled(bot, "bot", start["conversation_id"]), what="the answer")
    assert stored["status"] == "complete" and stored["content"] == LONG_TEXT
    assert stored["id"] == start["id"]
    assert fake_openai.streams_finished == 1 and fake_openai.streams_closed_early == 0


def test_a_non_streamed_request_whose_client_left_still_finishes_and_stores(bot, fake_openai, tmp_path):
    import time

    def slow(body):
        time.sleep(1.5)  # the model takes longer than the client waits
        return Reply(content="Worth the wait")

    fake_openai.script(Reply(func=slow))
    with httpx.Client(base_url=bot.url, timeout=0.5) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.post("/api/agents/bot/chat", json={"message": "Take your time"})
    listed = bot.client.get("/api/agents/bot/conversations").json()["conversations"]
    conversation = listed[0]["id"]
    stored = wait_for(lambda: assistant_settled(bot, "bot", conversation), what="the stored answer")
    assert stored["status"] == "complete" and stored["content"] == "Worth the wait"


def test_events_are_numbered_and_start_names_the_run(bot, fake_openai):
    fake_openai.script(Reply(content="One two three"))
    with open_stream(bot, "bot", "Count") as response:
        frames = list(iter_frames(response))
    start = frames[0][1]
    assert start["type"] == "start" and start["run_id"].startswith("run_")
    assert [event_id for event_id, _ in frames] == [f"{start['run_id']}:{n}" for n in range(1, len(frames) + 1)]
    assert frames[-1][1]["type"] == "done"


def test_attach_replays_from_seq_1_then_follows_live_without_gap_or_duplicate(bot, fake_openai):
    fake_openai.script(Reply(**SLOW))
    with open_stream(bot, "bot", "Go") as response:
        own = iter_frames(response)
        seen = until_deltas(own, 3)
        conversation = seen[0][1]["conversation_id"]
        with attach(bot, conversation) as watcher:
            assert watcher.status_code == 200
            assert watcher.headers["content-type"].startswith("text/event-stream")
            attached = list(iter_frames(watcher))
        seen += list(own)
    seqs = [seq_of(event_id) for event_id, _ in attached]
    assert seqs == list(range(1, len(attached) + 1))
    assert attached == seen                          # the same events, ids and all
    assert attached[0][1]["type"] == "start" and attached[-1][1]["type"] == "done"
    text = "".join(e["content"] for _, e in attached if e["type"] == "delta")
    assert text == LONG_TEXT == attached[-1][1]["message"]["content"]


def test_last_event_id_and_after_resume_where_the_client_stopped(bot, fake_openai):
    fake_openai.script(Reply(**SLOW))
    with open_stream(bot, "bot", "Go") as response:
        own = iter_frames(response)
        seen = until_deltas(own, 4)
        conversation = seen[0][1]["conversation_id"]
        resume_id = seen[2][0]   # as a browser's EventSource would send it back
        with attach(bot, conversation, headers={"Last-Event-ID": resume_id}) as header, \
                attach(bot, conversation, after=2) as query:
            by_header, by_query = list(iter_frames(header)), list(iter_frames(query))
        seen += list(own)
    assert by_header == seen[3:]
    assert by_query == seen[2:]


def test_last_event_id_of_a_run_that_just_ended_replays_its_rest(bot, fake_openai):
    fake_openai.script(Reply(content="One two three four"), Reply(content="Another"))
    with open_stream(bot, "bot", "Count") as response:
        frames = list(iter_frames(response))
    conversation = frames[0][1]["conversation_id"]
    late = bot.client.get(f"/api/conversations/{conversation}/stream", headers={"Last-Event-ID": frames[1][0]})
    assert late.status_code == 200
    assert [line[4:] for line in late.text.split("\n") if line.startswith("id: ")] == [i for i, _ in frames[2:]]
    # A run of another conversation is not to be had by naming it.
    other = bot.chat("bot", "Elsewhere").json()["conversation_id"]
    named = bot.client.get(f"/api/conversations/{other}/stream", headers={"Last-Event-ID": frames[1][0]})
    assert named.status_code == 204


def test_attach_is_204_when_nothing_runs_and_the_conversation_says_running(bot, fake_openai):
    fake_openai.script(Reply(content="Quick"), Reply(**SLOW))
    conversation = bot.chat("bot", "Hi").json()["conversation_id"]
    idle = bot.client.get(f"/api/conversations/{conversation}/stream")
    assert idle.status_code == 204 and idle.content == b""
    assert bot.client.get(f"/api/conversations/{conversation}").json()["running"] is None
    with open_stream(bot, "bot", "Go", conversation_id=conversation) as response:
        frames = iter_frames(response)
        start = until_deltas(frames, 1)[0][1]
        running = bot.client.get(f"/api/conversations/{conversation}").json()["running"]
        assert running["run_id"] == start["run_id"] and running["started_at"].endswith("Z")
        assert list(frames)[-1][1]["type"] == "done"
    assert bot.client.get(f"/api/conversations/{conversation}").json()["running"] is None
    assert bot.client.get(f"/api/conversations/{conversation}/stream").status_code == 204


def test_a_bad_resume_point_is_400(bot, fake_openai):
    conversation = bot.chat("bot", "Hi").json()["conversation_id"]
    for headers, params in (({"Last-Event-ID": "nonsense"}, {}), ({}, {"after": "-1"}), ({}, {"after": "x"})):
        response = bot.client.get(f"/api/conversations/{conversation}/stream", headers=headers, params=params)
        assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_REQUEST"
    missing = bot.client.get("/api/conversations/conv_nothere/stream")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "CONVERSATION_NOT_FOUND"


def test_two_watchers_each_see_every_event_in_order(bot, fake_openai):
    fake_openai.script(Reply(**SLOW))
    with open_stream(bot, "bot", "Go") as response:
        own = iter_frames(response)
        seen = until_deltas(own, 1)
        conversation = seen[0][1]["conversation_id"]
        with attach(bot, conversation) as first, attach(bot, conversation) as second:
            a, b = iter_frames(first), iter_frames(second)
            head_a, head_b = until_deltas(a, 2), until_deltas(b, 2)   # both live at once
            got_a, got_b = head_a + list(a), head_b + list(b)
        seen += list(own)
    assert got_a == got_b == seen
    assert [seq_of(i) for i, _ in got_a] == list(range(1, len(seen) + 1))


def test_cancel_stops_the_run_stores_partial_and_tells_every_watcher(bot, fake_openai):
    fake_openai.script(Reply(**VERY_SLOW))
    with open_stream(bot, "bot", "Go") as response:
        own = iter_frames(response)
        seen = until_deltas(own, 2)
        start = seen[0][1]
        conversation = start["conversation_id"]
        with attach(bot, conversation) as watcher:
            watched = iter_frames(watcher)
            until_deltas(watched, 2)
            cancelled = bot.client.post(f"/api/conversations/{conversation}/cancel")
            assert cancelled.status_code == 200
            assert cancelled.json() == {"cancelled": True, "run_id": start["run_id"]}
            watcher_tail = list(watched)
        own_tail = list(own)
    for tail in (watcher_tail, own_tail):
        assert tail[-1][1]["type"] == "error" and tail[-1][1]["error"]["code"] == "CANCELLED"
    stored = messages(bot, "bot", conversation)[-1]
    assert stored["status"] == "partial" and stored["id"] == start["id"]
    assert (LONG_TEXT * 5).startswith(stored["content"]) and stored["content"] != LONG_TEXT * 5
    again = bot.client.post(f"/api/conversations/{conversation}/cancel")
    assert again.json() == {"cancelled": False}
    assert bot.client.get(f"/api/conversations/{conversation}").json()["running"] is None
    wait_for(lambda: fake_openai.streams_closed_early == 1, what="the model call to be closed")


def test_a_non_streamed_run_can_be_cancelled_from_elsewhere(bot, fake_openai):
    import threading
    import time

    release = threading.Event()

    def held(body):
        release.wait(10)
        return Reply(content="too late")

    fake_openai.script(Reply(func=held))
    answer = {}
    waiter = threading.Thread(target=lambda: answer.update(r=bot.chat("bot", "Wait")))
    waiter.start()
    listed = wait_for(lambda: bot.client.get("/api/agents/bot/conversations").json()["conversations"],
                      what="the conversation")
    conversation = listed[0]["id"]
    assert bot.client.post(f"/api/conversations/{conversation}/cancel").json()["cancelled"] is True
    release.set()
    waiter.join(15)
    assert answer["r"].status_code == 409 and answer["r"].json()["error"]["code"] == "CANCELLED"
    time.sleep(0.2)
    assert [m["role"] for m in messages(bot, "bot", conversation)] == ["user"]


def test_on_disconnect_stop_keeps_the_old_behaviour(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, runs={"on_disconnect": "stop"})})
    fake_openai.script(Reply(**SLOW))
    with open_stream(server, "bot", "Go") as response:
        start = until_deltas(iter_frames(response), 2)[0][1]
    stored = wait_for(lambda: assistant_settled(server, "bot", start["conversation_id"]), what="the partial")
    assert stored["status"] == "partial" and LONG_TEXT.startswith(stored["content"])
    assert stored["content"] != LONG_TEXT


def test_the_websocket_cancel_frame_and_a_closed_socket(bot, fake_openai):
    import json

    import simple_websocket

    def socket():
        return simple_websocket.Client.connect(bot.url.replace("http://", "ws://") + "/api/agents/bot/ws")

    def until(ws, kind):
        frames = []
        while not frames or frames[-1]["type"] != kind:
            frames.append(json.loads(ws.receive(timeout=20)))
        return frames

    fake_openai.script(Reply(**VERY_SLOW), Reply(**SLOW))
    ws = socket()
    ws.send(json.dumps({"type": "message", "message": "Go"}))
    start = until(ws, "delta")[0]
    ws.send(json.dumps({"type": "cancel"}))
    assert until(ws, "error")[-1]["error"]["code"] == "CANCELLED"
    wait_for(lambda: assistant_settled(bot, "bot", start["conversation_id"]), what="the partial")
    ws.send(json.dumps({"type": "message", "message": "Again", "conversation_id": start["conversation_id"]}))
    until(ws, "delta")
    ws.close()  # the socket goes; the run goes on to its end
    stored = wait_for(lambda: (m := assistant_settled(bot, "bot", start["conversation_id"]))
                      and m["content"] == LONG_TEXT and m, what="the second answer")
    assert stored["status"] == "complete"


def test_another_users_attach_and_cancel_are_forbidden(bot, fake_openai):
    with bot.state.db.connection_context():
        alice = {"Authorization": f"Bearer {create_key('alice')[1]}"}
        bob = {"Authorization": f"Bearer {create_key('bob')[1]}"}
    fake_openai.script(Reply(**SLOW))
    with bot.client.stream("POST", "/api/agents/bot/chat", headers=alice,
                           json={"message": "Mine", "stream": True}) as response:
        frames = iter_frames(response)
        conversation = until_deltas(frames, 1)[0][1]["conversation_id"]
        for method, path in (("GET", "stream"), ("POST", "cancel")):
            refused = bot.client.request(method, f"/api/conversations/{conversation}/{path}", headers=bob)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
            assert bot.client.request(method, f"/api/conversations/{conversation}/{path}").status_code == 401
        rest = list(frames)
    assert rest[-1][1]["type"] == "done"   # bob's cancel did nothing


def test_run_routes_answer_what_the_openapi_description_says(bot, fake_openai):
    from tests.test_openapi import SPEC, conforms

    fake_openai.script(Reply(**VERY_SLOW))
    with open_stream(bot, "bot", "Go") as response:
        frames = iter_frames(response)
        conversation = until_deltas(frames, 1)[0][1]["conversation_id"]
        conforms(bot.client.get(f"/api/conversations/{conversation}"), "/api/conversations/{conversation_id}",
                 "GET")
        with attach(bot, conversation) as watcher:
            until_deltas(iter_frames(watcher), 1)
            cancelled = bot.client.post(f"/api/conversations/{conversation}/cancel")
            conforms(cancelled, "/api/conversations/{conversation_id}/cancel", "POST")
        list(frames)
    watched = bot.client.get(f"/api/conversations/{conversation}/stream", params={"after": 0})
    assert watched.status_code == 204 and "204" in SPEC["paths"]["/api/conversations/{conversation_id}/stream"]["get"]["responses"]
    conforms(bot.client.post(f"/api/conversations/{conversation}/cancel"),
             "/api/conversations/{conversation_id}/cancel", "POST")
    conforms(bot.client.get(f"/api/conversations/{conversation}/stream", headers={"Last-Event-ID": "x"}),
             "/api/conversations/{conversation_id}/stream", "GET")
