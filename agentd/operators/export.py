"""Exporting turns, one row each, as JSON lines or CSV, in constant memory.

Turns are read in keyset pages (user messages by id, `BATCH` at a time); each
page's answers, token counts, tool calls and costs come from two more queries
bounded by that page's turn ids. Memory stays flat however many turns there are.
"""
from __future__ import annotations

import csv
import json
from typing import IO, Iterator

from agentd.operators.pricing import from_nanousd
from agentd.operators.usage import time_range
from agentd.store import admin as store
from agentd.store import ledger
from agentd.store.messages import iso

COLUMNS = ["conversation_id", "agent_id", "user_id", "channel", "question", "answer", "prompt_tokens",
           "completion_tokens", "cost_usd", "tool_calls", "created_at"]
FORMATS = ("jsonl", "csv")
BATCH = 1000


def _page_steps(turn_ids: list[int]) -> dict[int, dict]:
    """Per turn: its final answer, summed tokens and the tools called, in order."""
    found: dict[int, dict] = {}
    for turn_id, role, content, calls, prompt, completion, name in store.turn_steps(turn_ids):
        turn = found.setdefault(turn_id, {"answer": None, "prompt": 0, "completion": 0, "tools": []})
        if role == "tool":
            turn["tools"].append(name)
            continue
        turn["prompt"] += prompt or 0
        turn["completion"] += completion or 0
        if not calls:
            turn["answer"] = content
    return found


def turns(agent: str | None = None, since: str | None = None, until: str | None = None) -> Iterator[dict]:
    """Every turn matching the filters, oldest first, as export rows."""
    begin, end = time_range(since, until, ("since", "until"))
    after = 0
    while True:
        page = store.turn_page(after, agent, begin, end, BATCH)
        if not page:
            return
        ids = [row[0] for row in page]
        steps, costs = _page_steps(ids), ledger.costs_by_turn(ids)
        for turn_id, conversation_id, agent_id, user_id, channel, question, created_at in page:
            found = steps.get(turn_id) or {"answer": None, "prompt": 0, "completion": 0, "tools": []}
            yield {"conversation_id": conversation_id, "agent_id": agent_id, "user_id": user_id,
                   "channel": channel, "question": question, "answer": found["answer"],
                   "prompt_tokens": found["prompt"], "completion_tokens": found["completion"],
                   "cost_usd": from_nanousd(costs.get(turn_id)), "tool_calls": found["tools"],
                   "created_at": iso(created_at)}
        after = ids[-1]


def _plain(cost: float | None) -> str:
    """A cost as a plain decimal (no exponent, which spreadsheets read badly); empty if unknown."""
    return "" if cost is None else f"{cost:.9f}".rstrip("0").rstrip(".")


def write(rows: Iterator[dict], fmt: str, out: IO[str]) -> int:
    """Write rows as `jsonl` or `csv` (tool names joined by spaces); returns how many."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "tool_calls": " ".join(row["tool_calls"]),
                             "cost_usd": _plain(row["cost_usd"])})
            count += 1
        return count
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count
