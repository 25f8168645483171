"""Token quotas per user per day, from the usage providers report.

Every finished turn adds its tokens (all its model calls) to the user's row
for the day in `UsageDay`, with one UPSERT, so concurrent turns and several
processes add up correctly on SQLite and PostgreSQL alike. An agent with
`quota: {tokens_per_day: N}` refuses a user's turn once that user's tokens
today (over every agent) reach N: 429 QUOTA_EXCEEDED, with `Retry-After`
until the next day. `quota: {agent_tokens_per_day: N}` is the agent's own
ceiling over all its users together (table `agent_usage_day`, counted for
agents that set it): once reached, every caller gets 429 QUOTA_EXCEEDED, so
fresh widget visitors or keys cannot spend past it. The day comes from `state.clock` (UTC now by default), so
tests can move to the next day.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Callable

from agentd.errors import ApiError
from agentd.store.usage import add_agent_tokens, add_tokens, agent_tokens_used, tokens_used

log = logging.getLogger("agentd.policies.quota")


class QuotaExceeded(ApiError):
    status, code = 429, "QUOTA_EXCEEDED"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def day_of(moment: dt.date | dt.datetime) -> dt.date:
    """The UTC day of a clock reading (a date, or a naive-UTC or aware datetime)."""
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.timezone.utc)
        return moment.date()
    return moment


def seconds_to_next_day(moment: dt.date | dt.datetime) -> int:
    if not isinstance(moment, dt.datetime):
        return 86400
    now = moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time())
    return max(1, math.ceil((midnight - now).total_seconds()))


class Quotas:
    """`check` refuses a message over the quota; `observe` counts a finished turn's tokens."""

    def __init__(self, clock: Callable[[], dt.date | dt.datetime]):
        self.clock = clock

    def check(self, agent, principal, inp):
        quota = agent.setting("quota") or {}
        if not (quota.get("tokens_per_day") or quota.get("agent_tokens_per_day")):
            return None
        now = self.clock()
        day = day_of(now)
        ceiling = quota.get("agent_tokens_per_day")
        if ceiling and agent_tokens_used(agent.id, day) >= ceiling:
            raise QuotaExceeded(f"This agent's daily token ceiling ({ceiling}) is used up; "
                                "it resets at 00:00 UTC", headers={"Retry-After": str(seconds_to_next_day(now))})
        limit = quota.get("tokens_per_day")
        if limit and tokens_used(principal.user_id, day) >= limit:
            raise QuotaExceeded(f"The daily token quota ({limit}) is used up; it resets at 00:00 UTC",
                                headers={"Retry-After": str(seconds_to_next_day(now))})
        return None

    def observe(self, turn, outcome) -> None:
        tokens = outcome.usage.total_tokens
        if tokens <= 0:
            return
        day = day_of(self.clock())
        try:
            add_tokens(turn.principal.user_id, day, tokens)
            if (turn.agent.setting("quota") or {}).get("agent_tokens_per_day"):
                add_agent_tokens(turn.agent.id, day, tokens)
        except Exception:
            # The answer is already stored; a lost count must not turn it into an error.
            log.exception("could not record token usage for %s", turn.principal.user_id)
