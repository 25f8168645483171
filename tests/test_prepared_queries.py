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
