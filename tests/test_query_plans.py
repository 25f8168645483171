"""The history page's query uses the (conversation_id, id) index: checked on the plan, not on a time.

A page must stay cheap however many messages the store holds (docs/benchmarks.md
measures it at 1,000,000), which only holds while the database walks the index
backwards from the cursor instead of scanning or sorting the table. SQLite always
runs (EXPLAIN QUERY PLAN); PostgreSQL runs when AGENTD_TEST_POSTGRES_URL is set
(EXPLAIN after ANALYZE, with enough rows that a sequential scan would cost more).
"""
from __future__ import annotations

import datetime as dt

import peewee as pw
import pytest

from agentd.store import connect_database
from agentd.store.models import Conversation, Message, db

CONVERSATIONS = 200
PER_CONVERSATION = 20


def _fill(database) -> None:
    """Interleaved messages of many conversations, so a conversation's rows are spread out."""
    now = dt.datetime(2024, 1, 1)
    with database.atomic():
        Conversation.insert_many([{"id": f"conv_plan{n}", "agent_id": "a", "user_id": f"u{n % 5}",
                                   "created_at": now, "updated_at": now} for n in range(CONVERSATIONS)]).execute()
        rows = [{"conversation": f"conv_plan{n}", "agent_id": "a", "user_id": f"u{n % 5}",
                 "role": "user" if turn % 2 == 0 else "assistant", "content": "x" * 50,
                 "status": "complete", "is_error": False, "created_at": now}
                for turn in range(PER_CONVERSATION) for n in range(CONVERSATIONS)]
        for start in range(0, len(rows), 500):
            Message.insert_many(rows[start:start + 500]).execute()
    database.execute_sql("ANALYZE")


def _page_queries(before: int | None):
    """The SELECTs history_page runs for one conversation, as agentd builds them."""
    where = Message.conversation == "conv_plan7"
    page = Message.select().where(where)
    if before is not None:
        page = page.where(Message.id < before)
    yield page.order_by(Message.id.desc()).limit(51)
    # `total`: peewee's .count() wraps the filtered select like this.
    yield pw.Select([Message.select().where(where).alias("_wrapped")], [pw.fn.COUNT(pw.SQL("1"))])
    # What history_page runs: the page with that count as a subquery, built by agentd itself.
    from agentd.store import messages as store
    markers = {**store._MARKERS, "conversation": "conv_plan7", "cursor": before, "limit": 51}
    yield store._page_query(True, "before" if before is not None else None)(markers)


def _plan(database, query) -> str:
    sql, params = database.get_sql_context().sql(query).query()
    sqlite = "sqlite" in type(database).__name__.lower()
    rows = database.execute_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + sql, params).fetchall()
    return "\n".join(str(row[-1]) for row in rows)


@pytest.fixture
def filled(database_url):
    database = connect_database(database_url)
    try:
        with database.connection_context():
            _fill(database)
            yield database
    finally:
        db.close() if not db.is_closed() else None
        if hasattr(database, "close_all"):
            database.close_all()


@pytest.mark.parametrize("before", [None, CONVERSATIONS * PER_CONVERSATION // 2])
def test_history_page_walks_the_conversation_index(filled, before):
    for query in _page_queries(before):
        plan = _plan(filled, query)
        assert "message_conv_id" in plan, plan
        if "sqlite" in type(filled).__name__.lower():
            # No sort step: rows come off the index already in id order.
            assert "TEMP B-TREE" not in plan, plan
            assert "SCAN" not in plan.replace("SCAN t1 USING COVERING INDEX", ""), plan
        else:
            # With 20 rows a conversation, PostgreSQL may fetch them through the index as a bitmap
            # and sort those few (as cheap as walking it backwards); it must never scan the table.
            assert "Seq Scan" not in plan, plan


def test_history_page_query_is_the_one_agentd_runs(filled):
    """Guard the test itself: agentd's history_page returns the page this plan is about."""
    from agentd.store import messages as store
    rows, total, has_more = store.history_page("a", "u2", "conv_plan7", 5, None)
    assert total == PER_CONVERSATION and has_more and len(rows) == 5
    assert [r.id for r in rows] == sorted(r.id for r in rows)
