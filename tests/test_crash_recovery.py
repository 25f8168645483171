"""`kill -9` of the server in the middle of a stream, then a restart on the same database.

The server runs as a real subprocess (`python -m agentd serve`). Nothing is
lost: the user's message and the text streamed so far are in the history,
no row stays `streaming`, and the conversation takes new turns once the dead
process's turn lease has run out.
"""
from __future__ import annotations

import signal

from tests.conftest import Reply, openai_agent
from tests.support import ServerProcess, free_port, server_env, wait_for, write_agent
from tests.test_streaming import LONG_TEXT, iter_events

def test_kill_9_mid_stream_then_restart_loses_nothing(tmp_path, database_url, fake_openai, processes):
    agents = write_agent(tmp_path / "agents", "bot", openai_agent(fake_openai))
    port = free_port()
    env = server_env(database_url, agents, port, turn_lease_seconds=2)
    first = ServerProcess(["-m", "agentd", "serve"], env, port, tmp_path / "first.log")
    processes.append(first)
    fake_openai.script(Reply(content=LONG_TEXT * 5, chunk_delay=0.05))
    received = []
    with first.stream("bot", "Tell me everything") as response:
        events = iter_events(response)
        start = next(events)
        conversation = start["conversation_id"]
        saved = None
        for event in events:  # until the heartbeat has saved some of the text (no write per delta)
            assert event["type"] == "delta", event
            received.append(event["content"])
            if len(received) % 4 == 0:
                saved = first.history("bot", conversation)[-1]["content"]
                if saved:
                    break
        assert saved, "the stream ended before its text was saved"
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)

    second = ServerProcess(["-m", "agentd", "serve"], env, port, tmp_path / "second.log")
    processes.append(second)

    def settled():
        rows = second.history("bot", conversation)
        return rows if all(m.get("status") != "streaming" for m in rows) else None

    rows = wait_for(settled, deadline=30.0, what="recovery of the streaming row")
    assert [(m["role"], m["id"]) for m in rows] == [("user", start["user_message_id"]),
                                                   ("assistant", start["id"])]
    assert rows[0]["content"] == "Tell me everything"
    # what the heartbeat had saved survives, marked partial
    assert rows[1]["status"] == "partial"
    assert rows[1]["content"].startswith(saved) and (LONG_TEXT * 5).startswith(rows[1]["content"])
    # the dead process's lease has run out: the conversation takes a new turn
    fake_openai.script(Reply(content="Back again"))
    response = second.client.post("/api/agents/bot/chat",
                                  json={"message": "Still there?", "conversation_id": conversation})
    assert response.status_code == 200, response.text
    assert response.json()["content"] == "Back again"
    assert [m["role"] for m in second.history("bot", conversation)] == ["user", "assistant", "user",
                                                                        "assistant"]


def test_start_up_recovery_leaves_a_live_turn_of_another_process_alone(tmp_path, database_url, fake_openai,
                                                                       processes):
    agents = write_agent(tmp_path / "agents", "bot", openai_agent(fake_openai))
    port, other_port = free_port(), free_port()
    first = ServerProcess(["-m", "agentd", "serve"], server_env(database_url, agents, port,
                                                               turn_lease_seconds=2),
                          port, tmp_path / "first.log")
    processes.append(first)
    fake_openai.script(Reply(content=LONG_TEXT * 3, chunk_delay=0.05))
    with first.stream("bot", "Go") as response:
        events = iter_events(response)
        start = next(events)
        assert next(events)["type"] == "delta"
        # a second process starts on the same database while the first one streams
        other = ServerProcess(["-m", "agentd", "serve"], server_env(database_url, agents, other_port,
                                                                    turn_lease_seconds=2),
                              other_port, tmp_path / "other.log")
        processes.append(other)
        statuses = set()
        for event in events:  # the stream outlives the lease it started with: heartbeat renewals
            if event["type"] != "delta":
                break
            statuses.add(other.history("bot", start["conversation_id"])[-1]["status"])
        rest = list(events)
    # The other process's recovery never touched the live row. (A client reading slowly may
    # still be reading deltas after the run, which outlives its connection, stored the answer.)
    assert statuses and statuses <= {"streaming", "complete"}
    assert (rest or [event])[-1]["type"] == "done"
    rows = other.history("bot", start["conversation_id"])
    assert rows[-1]["status"] == "complete" and rows[-1]["content"] == LONG_TEXT * 3
