"""The `usage_record` table (the usage ledger): its one write and the reports' queries.

Costs are integer nano-dollars; `cost` sums leave unpriced (NULL) calls out and
`unpriced` counts them. Day keys come back as `YYYY-MM-DD` text on both databases.
"""
from __future__ import annotations

import datetime as dt

import peewee as pw

from agentd.store import prepared
from agentd.store.models import UsageRecord

GROUPS = {"agent": UsageRecord.agent_id, "user": UsageRecord.user_id, "model": UsageRecord.model,
          "key": UsageRecord.key_id, "day": pw.fn.DATE(UsageRecord.created_at).coerce(False)}


def insert(rows: list[dict]) -> None:
    """The turn's ledger rows in one statement (the caller's transaction holds it).

    Runs on every turn: its SQL is built once per row count (agentd.store.prepared).
    """
    if rows:
        prepared.insert_many(UsageRecord, rows)


def _where(begin: dt.datetime | None, end: dt.datetime | None, agent: str | None = None):
    where = pw.Value(True)
    if begin is not None:
        where &= UsageRecord.created_at >= begin
    if end is not None:
        where &= UsageRecord.created_at < end
    if agent:
        where &= UsageRecord.agent_id == agent
    return where


def _aggregates():
    """turns, prompt tokens, completion tokens, cost (nano-dollars), unpriced calls."""
    return [pw.fn.COUNT(pw.fn.DISTINCT(UsageRecord.turn_id)), pw.fn.SUM(UsageRecord.prompt_tokens),
            pw.fn.SUM(UsageRecord.completion_tokens), pw.fn.SUM(UsageRecord.cost_nanousd),
            pw.fn.COUNT(UsageRecord.id) - pw.fn.COUNT(UsageRecord.cost_nanousd)]


def _key(value):
    if isinstance(value, dt.datetime):
        value = value.date()
    return value.isoformat() if isinstance(value, dt.date) else value


def grouped(group_by: str, begin, end, agent: str | None = None) -> list[tuple]:
    """(key, turns, prompt, completion, cost, unpriced) per group, by key."""
    expr = GROUPS[group_by]
    query = UsageRecord.select(expr, *_aggregates()).where(_where(begin, end, agent)).group_by(expr)
    return [(_key(key), *figures) for key, *figures in query.order_by(expr).tuples()]


def totals(begin, end, agent: str | None = None) -> tuple:
    """(turns, prompt, completion, cost, unpriced) over the whole range."""
    return UsageRecord.select(*_aggregates()).where(_where(begin, end, agent)).tuples().first() or (0, 0, 0, None, 0)


def top(group_by: str, begin, end, limit: int) -> list[tuple]:
    """The `limit` groups with the most tokens, biggest first (same columns as `grouped`)."""
    expr = GROUPS[group_by]
    tokens = pw.fn.SUM(UsageRecord.prompt_tokens + UsageRecord.completion_tokens)
    query = (UsageRecord.select(expr, *_aggregates()).where(_where(begin, end)).group_by(expr)
             .order_by(tokens.desc(), expr).limit(limit).tuples())
    return [(_key(key), *figures) for key, *figures in query]


def daily(by: str, begin, end) -> list[tuple]:
    """(day, agent or model, tokens, cost) per day and group, by day."""
    day, name = GROUPS["day"], GROUPS[by]
    query = (UsageRecord.select(day, name, pw.fn.SUM(UsageRecord.prompt_tokens + UsageRecord.completion_tokens),
                                pw.fn.SUM(UsageRecord.cost_nanousd))
             .where(_where(begin, end)).group_by(day, name).order_by(day, name).tuples())
    return [(_key(when), label, tokens, cost) for when, label, tokens, cost in query]


def costs_by_turn(turn_ids: list[int]) -> dict[int, int]:
    """Each turn's priced cost in nano-dollars (turns with no priced call are left out)."""
    if not turn_ids:
        return {}
    query = (UsageRecord.select(UsageRecord.turn_id, pw.fn.SUM(UsageRecord.cost_nanousd))
             .where(UsageRecord.turn_id.in_(turn_ids)).group_by(UsageRecord.turn_id).tuples())
    return {turn: int(cost) for turn, cost in query if cost is not None}
