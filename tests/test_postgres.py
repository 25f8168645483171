"""The store behaves the same on SQLite and PostgreSQL (run the suite with AGENTD_TEST_POSTGRES_URL).

Most tests here run on whichever database `database_url` gives; the ones about
the PostgreSQL pool and driver need a server and are skipped without one.
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from agentd.errors import ConversationBusy
from agentd.store import messages as store
from agentd.store.database import redact_url
from agentd.store.migrations import MIGRATIONS, migrate
from agentd.store.models import Conversation, Message
from tests.conftest import Reply, openai_agent, sse_events

needs_pg = pytest.mark.skipif(not os.environ.get("AGENTD_TEST_POSTGRES_URL"),
                              reason="needs AGENTD_TEST_POSTGRES_URL (see .ci/start-postgres)")


def _conversation(user="alice", context=None) -> Conversation:
    return store.create_conversation("bot", user, "api", context)


def _message(conversation, role="user", **fields) -> Message:
    return Message.create(conversation=conversation.id, agent_id="bot", user_id=conversation.user_id,
                          role=role, **fields)


def test_json_boolean_and_datetime_fields_round_trip(database):
    context = {"user": {"name": "Zoë"}, "n": 3, "ok": True, "list": [1, None, "ü"]}
    conversation = _conversation(context=context)
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]
    row = _message(conversation, "tool", content="x", is_error=True, tool_call_id="call_1",
                   metadata={"source": "web"})
    step = _message(conversation, "assistant", tool_calls=calls)
    stored = Conversation.get_by_id(conversation.id)
    assert stored.context == context
    again = Message.get_by_id(row.id)
    assert again.is_error is True and again.metadata == {"source": "web"}
    assert Message.get_by_id(step.id).tool_calls == calls
    assert Message.get_by_id(step.id).is_error is False
    assert isinstance(again.created_at, dt.datetime) and again.created_at.tzinfo is None
    assert store.iso(again.created_at).endswith("Z")


def test_insert_returns_growing_ids_and_update_delete_return_counts(database):
    conversation = _conversation()
    ids = [_message(conversation, content=str(i)).id for i in range(3)]
    assert ids == sorted(ids) and all(isinstance(i, int) for i in ids)
    changed = Message.update(status="partial").where(Message.conversation == conversation.id).execute()
    assert changed == 3
    assert store.count_messages(conversation.id) == 3
    assert store.clear_messages("bot", "alice", conversation.id) == 3
    assert store.count_messages(conversation.id) == 0


def test_turn_lock_is_exclusive_until_released_or_expired(database):
    conversation = _conversation()
    token = store.acquire_turn(conversation.id, 600)
    with pytest.raises(ConversationBusy):
        store.acquire_turn(conversation.id, 600)
    store.release_turn(conversation.id, token)
    stale = store.acquire_turn(conversation.id, -1)  # a lease already over, as after a crash
    fresh = store.acquire_turn(conversation.id, 600)
    assert fresh != stale


def test_turn_lock_under_concurrent_claims(database_url, database):
    """Many threads, each on its own connection, race for one lock: exactly one wins."""
    conversation = _conversation()
    results, barrier = [], threading.Barrier(8)

    def claim():
        with database.connection_context():
            barrier.wait()
            try:
                results.append(store.acquire_turn(conversation.id, 600))
            except ConversationBusy:
                results.append(None)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([r for r in results if r]) == 1


def test_history_pages_are_ordered_and_counted(database):
    conversation = _conversation()
    ids = [_message(conversation, content=str(i)).id for i in range(7)]
    rows, total, more = store.history_page("bot", "alice", conversation.id, 3)
    assert [r.id for r in rows] == ids[-3:] and total == 7 and more
    rows, _, more = store.history_page("bot", "alice", conversation.id, 3, before=ids[2])
    assert [r.id for r in rows] == ids[:2] and not more
    rows, _, more = store.history_page("bot", "alice", conversation.id, 3, after=ids[0])
    assert [r.id for r in rows] == ids[1:4] and more


def test_migrations_run_once(database):
    assert migrate(database) == []
    from agentd.store.models import SchemaMigration
    assert sorted(r.version for r in SchemaMigration.select()) == [v for v, _ in MIGRATIONS]


def test_redact_url_hides_the_password():
    assert redact_url("postgresql://agentd:s3cr%40t@db:5432/agentd") == "postgresql://agentd:***@db:5432/agentd"
    assert redact_url("sqlite:///agentd.db") == "sqlite:///agentd.db"


def test_psycopg_is_made_cooperative_when_gevent_patched_after_import():
    """psycopg chooses its wait function at import; under gevent it must wait via patched select."""
    code = textwrap.dedent("""
        import psycopg
        from gevent import monkey; monkey.patch_all()
        from psycopg import waiting
        assert waiting.wait.__name__ == "wait_c", waiting.wait
        from agentd.store.database import open_database
        open_database("postgresql://nobody@127.0.0.1:1/none")   # lazy: connects on first use
        import selectors
        print(waiting.wait.__name__, waiting.DefaultSelector is selectors.DefaultSelector)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["wait_poll", "True"]


@needs_pg
def test_postgres_uses_psycopg3_and_the_pool_gets_its_connections_back(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    database = server.state.db
    assert type(database._adapter).__name__ == "Psycopg3Adapter"
    fake_openai.script(Reply(content="one"), Reply(content="two", chunk_delay=0.01), Reply(content="three"))
    first = server.chat("bot", "hi").json()
    streamed = server.chat("bot", "again", conversation_id=first["conversation_id"], stream=True)
    assert sse_events(streamed)[-1]["type"] == "done"
    assert server.chat("bot", "third", conversation_id=first["conversation_id"]).status_code == 200
    for _ in range(20):
        assert server.history("bot", conversation_id=first["conversation_id"]).status_code == 200
    _wait_for(lambda: not database._in_use)
    assert len(database._connections) <= 3  # reused, not one per request


def _wait_for(predicate, attempts: int = 100) -> None:
    import time
    for _ in range(attempts):
        if predicate():
            return
        time.sleep(0.05)
    assert predicate()
