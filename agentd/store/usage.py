"""The `usage_day` and `agent_usage_day` tables: tokens per user, and per agent, per UTC day
(agentd.policies.quota reads and adds)."""
from __future__ import annotations

import datetime as dt

from peewee import EXCLUDED

from agentd.store import prepared
from agentd.store.models import AgentUsageDay, UsageDay


def tokens_used(user_id: str, day: dt.date) -> int:
    row = UsageDay.get_or_none((UsageDay.user_id == user_id) & (UsageDay.day == day))
    return row.tokens if row else 0


def add_tokens(user_id: str, day: dt.date, tokens: int) -> None:
    """Add to the user's count for the day atomically (INSERT … ON CONFLICT DO UPDATE).

    Runs on every turn, so its SQL is built once (agentd.store.prepared).
    """
    prepared.run("usage_add", _usage_upsert, _USAGE_MARKERS,
                 {"user": UsageDay.user_id.db_value(user_id), "day": UsageDay.day.db_value(day),
                  "tokens": UsageDay.tokens.db_value(tokens)})


_USAGE_MARKERS = {"user": "\x01user", "day": "\x01day", "tokens": -900001}


def _usage_upsert(m: dict):
    return (UsageDay.insert(user_id=m["user"], day=m["day"], tokens=m["tokens"])
            .on_conflict(conflict_target=[UsageDay.user_id, UsageDay.day],
                         update={UsageDay.tokens: UsageDay.tokens + EXCLUDED.tokens}))


def agent_tokens_used(agent_id: str, day: dt.date) -> int:
    row = AgentUsageDay.get_or_none((AgentUsageDay.agent_id == agent_id) & (AgentUsageDay.day == day))
    return row.tokens if row else 0


def add_agent_tokens(agent_id: str, day: dt.date, tokens: int) -> None:
    """Add to the agent's count for the day atomically, as add_tokens does for a user."""
    prepared.run("agent_usage_add", _agent_usage_upsert, _AGENT_MARKERS,
                 {"agent": AgentUsageDay.agent_id.db_value(agent_id), "day": AgentUsageDay.day.db_value(day),
                  "tokens": AgentUsageDay.tokens.db_value(tokens)})


_AGENT_MARKERS = {"agent": "\x01agent", "day": "\x01day", "tokens": -900001}


def _agent_usage_upsert(m: dict):
    return (AgentUsageDay.insert(agent_id=m["agent"], day=m["day"], tokens=m["tokens"])
            .on_conflict(conflict_target=[AgentUsageDay.agent_id, AgentUsageDay.day],
                         update={AgentUsageDay.tokens: AgentUsageDay.tokens + EXCLUDED.tokens}))
