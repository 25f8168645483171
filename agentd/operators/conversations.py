"""Every user's conversations for operators: filters, full-text search and a turn-by-turn trace.

Search reads the full-text indexes of migration 63 (FTS5 on SQLite, tsvector +
GIN on PostgreSQL) over titles and user/assistant text, never a LIKE scan; a
message still streaming is found once its text is final (migration 64).
"""
from __future__ import annotations

import re

from agentd.errors import ConversationNotFound, InvalidRequest
from agentd.operators.pricing import from_nanousd
from agentd.operators.usage import parse_time
from agentd.store import admin as store
from agentd.store import ledger
from agentd.store.messages import iso

MAX_QUERY_CHARS = 200


def _terms(q: str) -> list[str]:
    """The words of a search, as both engines will read them."""
    return re.findall(r"\w+", q)[:20]


def list_all(agent: str | None = None, user: str | None = None, q: str | None = None,
             limit: int = 50, before: str | None = None) -> dict:
    """A page of every user's conversations, most recently updated first."""
    terms = None
    if q:
        if len(q) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"q: at most {MAX_QUERY_CHARS} characters")
        terms = _terms(q)
        if not terms:
            raise InvalidRequest("q: needs at least one word")
    rows, next_before = store.conversations_page(agent, user, terms, parse_time("before", before), limit)
    return {"conversations": rows, "has_more": next_before is not None,
            "next_before": _cursor(next_before) if next_before else None}


def _cursor(moment) -> str:
    # Full precision (iso() keeps whole seconds): the next page starts right after this row.
    return moment.isoformat(timespec="microseconds") + "Z"


# -- one conversation's trace ---------------------------------------------------------------

def _model_step(row, offset: int) -> dict:
    return {"type": "model_call", "message_id": row.id, "provider": row.provider, "model": row.model,
            "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
            "duration_ms": row.duration_ms, "offset_ms": offset, "status": row.status,
            "content": row.content, "tool_calls": row.tool_calls or None}


def _tool_step(row, call: dict | None, offset: int) -> dict:
    fn = (call or {}).get("function") or {}
    return {"type": "tool_call", "message_id": row.id, "id": row.tool_call_id, "name": row.name,
            "arguments": fn.get("arguments"), "result": row.content, "is_error": bool(row.is_error),
            "error": row.content if row.is_error else None, "duration_ms": row.duration_ms,
            "offset_ms": offset}


def _steps(rows: list) -> list[dict]:
    """Model calls and tool calls in order, each with its start (`offset_ms`) from the turn's start.

    A step's tools run together after its model call; the next call starts when the slowest ends.
    """
    steps, clock, calls, step_tools = [], 0, {}, []
    for row in rows:
        if row.role == "assistant":
            clock += max(step_tools, default=0)
            step_tools = []
            steps.append(_model_step(row, clock))
            clock += row.duration_ms or 0
            calls = {c["id"]: c for c in row.tool_calls or []}
        elif row.role == "tool":
            steps.append(_tool_step(row, calls.get(row.tool_call_id), clock))
            step_tools.append(row.duration_ms or 0)
    return steps


def _turn(user, rows: list, costs: dict) -> dict:
    answers = [r for r in rows if r.role == "assistant"]
    final = answers[-1] if answers else None
    cost = costs.get(user.id)
    return {"id": user.id, "created_at": iso(user.created_at), "question": user.content,
            "status": final.status if final else user.status,
            "answer": final.content if final and not final.tool_calls else None,
            "usage": {"prompt_tokens": sum(r.prompt_tokens or 0 for r in answers),
                      "completion_tokens": sum(r.completion_tokens or 0 for r in answers)},
            "cost_usd": from_nanousd(cost) if cost is not None else None,
            "duration_ms": sum(r.duration_ms or 0 for r in answers) or None,
            "steps": _steps(rows)}


def detail(conversation_id: str) -> dict:
    """The conversation with each turn's steps (model calls, tool calls, durations, errors)."""
    found = store.conversation_rows(conversation_id)
    if found is None:
        raise ConversationNotFound(f"Conversation {conversation_id} does not exist")
    data, messages = found
    turns, current = [], None
    for row in messages:
        if row.role == "user":
            current = (row, [])
            turns.append(current)
        elif current is not None:
            current[1].append(row)
    costs = ledger.costs_by_turn([user.id for user, _ in turns])
    data["turns"] = [_turn(user, rows, costs) for user, rows in turns]
    return data
