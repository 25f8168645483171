"""History pages run pre-built SQL (agentd.store.prepared): they must equal what peewee's models give.

Runs on SQLite, and on PostgreSQL when AGENTD_TEST_POSTGRES_URL is set.
"""
from __future__ import annotations

import pytest

from agentd.store import messages as store
from agentd.store.models import Message


def _fill():
    mine = store.create_conversation("bot", "alice", "api", None)
    other = store.create_conversation("bot", "bob", "api", None)
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]
    for n in range(4):
        Message.create(conversation=mine.id, agent_id="bot", user_id="alice", role="user",
                       content=f"q{n} \x00 é", metadata={"n": n} if n % 2 else None)
        Message.create(conversation=mine.id, agent_id="bot", user_id="alice", role="assistant",
                       content=None if n == 1 else f"a{n}", tool_calls=calls if n == 1 else None,
                       status="partial" if n == 2 else "complete", provider="openai", model="m",
                       prompt_tokens=3 if n else None, completion_tokens=4 if n else None)
        Message.create(conversation=mine.id, agent_id="bot", user_id="alice", role="tool", content="ok",
                       tool_call_id="call_1", name="f", is_error=bool(n % 2))
        Message.create(conversation=other.id, agent_id="bot", user_id="bob", role="user", content="x")
    return mine


def _expected(where, order, limit):
    return [store.message_dict(m) for m in Message.select().where(where).order_by(order).limit(limit)]


@pytest.mark.parametrize("by_conversation", [True, False])
def test_pages_match_the_model_rows(database, by_conversation):
    mine = _fill()
    conversation_id = mine.id if by_conversation else None
    where = (Message.conversation == mine.id) if by_conversation else (
        (Message.agent_id == "bot") & (Message.user_id == "alice"))
    everything = _expected(where, Message.id, 100)
    ids = [m["id"] for m in everything]

    rows, total, more = store.history_page("bot", "alice", conversation_id, 5)
    assert [store.message_dict(r) for r in rows] == everything[-5:] and total == 12 and more
    rows, total, more = store.history_page("bot", "alice", conversation_id, 5, before=ids[3])
    assert [store.message_dict(r) for r in rows] == everything[:3] and total == 12 and not more
    rows, total, more = store.history_page("bot", "alice", conversation_id, 5, after=ids[3])
    assert [store.message_dict(r) for r in rows] == everything[4:9] and more
    rows, total, more = store.history_page("bot", "alice", conversation_id, 100)
    assert [store.message_dict(r) for r in rows] == everything and not more


def test_a_page_of_an_unknown_conversation_is_empty(database):
    _fill()
    assert store.history_page("bot", "alice", "conv_missing\x00", 5) == ([], 0, False)


def test_ledger_rows_inserted_through_prepared_sql_read_back_as_peewee_wrote_them(database):
    import datetime as dt

    from agentd.store import ledger, prepared
    from agentd.store.models import UsageRecord

    when = dt.datetime(2026, 3, 4, 5, 6, 7, 890123)
    rows = [{"created_at": when, "run_id": "run_1", "turn_id": n, "conversation_id": "conv_1", "agent_id": "bot",
             "user_id": "alice", "key_id": None if n else "k1", "provider": "openai", "model": "m é",
             "prompt_tokens": 3 * n, "completion_tokens": 4, "duration_ms": None,
             "cost_nanousd": 5_000_000_000_000 + n if n != 1 else None} for n in range(3)]
    UsageRecord.insert_many(rows).execute()   # what peewee writes
    ledger.insert([dict(r) for r in rows])    # the same rows through prepared SQL
    ledger.insert(rows[:1])                   # another row count: its own statement
    read = [{k: v for k, v in r.items() if k != "id"} for r in UsageRecord.select().order_by(UsageRecord.id).dicts()]
    assert read[3:6] == read[:3] and read[6] == read[0]
    assert read[0]["created_at"] == when and read[2]["cost_nanousd"] == 5_000_000_000_002
    with pytest.raises(ValueError):
        prepared.insert_many(UsageRecord, [rows[0], {k: v for k, v in rows[1].items() if k != "key_id"}])
