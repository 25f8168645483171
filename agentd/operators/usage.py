"""Usage reports over the ledger: tokens, turns and cost grouped by agent, user, model, day or key."""
from __future__ import annotations

import datetime as dt

from agentd.errors import InvalidRequest
from agentd.operators.pricing import from_nanousd
from agentd.store import ledger

GROUPS = tuple(ledger.GROUPS)


def parse_time(name: str, value: str | None, end: bool = False) -> dt.datetime | None:
    """An ISO date or date-time (UTC); a bare date as `to` means the end of that day."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            if end and day == dt.date.max:
                return dt.datetime.max
            return dt.datetime.combine(day + dt.timedelta(days=1 if end else 0), dt.time())
        moment = dt.datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"{name}: not an ISO 8601 date or date-time: {value[:40]!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment


def time_range(start: str | None, stop: str | None,
               names: tuple[str, str] = ("from", "to")) -> tuple[dt.datetime | None, dt.datetime | None]:
    begin, end = parse_time(names[0], start), parse_time(names[1], stop, end=True)
    if begin and end and end < begin:
        raise InvalidRequest(f"{names[1]}: must not be before {names[0]}")
    return begin, end


def _figures(turns, prompt, completion, cost, unpriced) -> dict:
    # Unpriced calls add nothing to cost_usd, which is null when no call of the group had a
    # price; `unpriced_calls` says how many calls the sum leaves out.
    return {"turns": int(turns or 0), "prompt_tokens": int(prompt or 0),
            "completion_tokens": int(completion or 0),
            "cost_usd": from_nanousd(int(cost)) if cost is not None else None,
            "unpriced_calls": int(unpriced or 0)}


def usage_report(group_by: str, start: str | None = None, stop: str | None = None,
                 agent: str | None = None, names: tuple[str, str] = ("from", "to")) -> dict:
    """`{"rows": [{"key", "turns", "prompt_tokens", "completion_tokens", "cost_usd"}], "total"}`."""
    if group_by not in GROUPS:
        raise InvalidRequest(f"group_by: must be one of {', '.join(GROUPS)}")
    begin, end = time_range(start, stop, names)
    rows = [{"key": key, **_figures(*figures)} for key, *figures in ledger.grouped(group_by, begin, end, agent)]
    return {"group_by": group_by, "rows": rows, "total": _figures(*ledger.totals(begin, end, agent))}


def top(group_by: str, start: str | None, stop: str | None, limit: int = 10) -> list[dict]:
    """The `limit` groups with the most tokens (the console's top users), biggest first."""
    begin, end = time_range(start, stop)
    return [{"key": key, **_figures(*figures)} for key, *figures in ledger.top(group_by, begin, end, limit)]


def _day_span(first: str, last: str) -> list[str]:
    day, end, days = dt.date.fromisoformat(first), dt.date.fromisoformat(last), []
    while day <= end and len(days) < 3660:
        days.append(day.isoformat())
        day += dt.timedelta(days=1)
    return days


def daily_series(start: str | None, stop: str | None, by: str) -> dict:
    """Tokens and cost per day for each agent or model: what the console's charts draw.

    Every day of the range is present (a day without calls counts 0 tokens and $0).
    """
    begin, end = time_range(start, stop)
    series: dict[str, dict] = {}
    seen: list[str] = []
    for when, label, tokens, cost in ledger.daily(by, begin, end):
        seen.append(when)
        entry = series.setdefault(label or "?", {"tokens": {}, "cost": {}})
        entry["tokens"][when] = int(tokens or 0)
        entry["cost"][when] = from_nanousd(int(cost)) if cost is not None else None
    first = begin.date().isoformat() if begin else (min(seen) if seen else None)
    last = (end - dt.timedelta(microseconds=1)).date().isoformat() if end else (max(seen) if seen else None)
    days = _day_span(first, last) if first and last else []
    return {"days": days, "series": [
        {"name": label, "tokens": [v["tokens"].get(d, 0) for d in days],
         "cost_usd": [v["cost"].get(d, 0.0) for d in days]} for label, v in series.items()]}
