"""Every user's conversations for operators: filters, full-text search and a turn-by-turn trace.

Search reads the full-text indexes of migration 63 (FTS5 on SQLite, tsvector +
GIN on PostgreSQL) over titles and user/assistant text, never a LIKE scan.
"""
from __future__ import annotations

import re

import peewee as pw

from agentd.errors import ConversationNotFound, InvalidRequest
from agentd.operators.pricing import from_nanousd
from agentd.operators.usage import parse_time
from agentd.store.conversations import _counts, _last_messages, summary
from agentd.store.messages import iso
from agentd.store.models import Conversation, Message, UsageRecord, db

MAX_QUERY_CHARS = 200


def _terms(q: str) -> list[str]:
    """The words of a search, as both engines will read them."""
    return re.findall(r"\w+", q)[:20]


def _search_filter(q: str):
    """A WHERE clause: the conversation's title or one of its messages matches every word."""
    terms = _terms(q)
    if not terms:
        raise InvalidRequest("q: needs at least one word")
    p = db.param
    if isinstance(db.obj, pw.PostgresqlDatabase):
        tsq = f"to_tsquery('english', {p})"
        query = " & ".join(terms)
        in_text = pw.SQL(f"SELECT conversation_id FROM message WHERE search @@ {tsq}", [query])
        in_title = pw.SQL(f"SELECT id FROM conversation WHERE search @@ {tsq}", [query])
    else:
        match = " ".join(f'"{t}"' for t in terms)  # each word a quoted FTS5 string: no syntax
        in_text = pw.SQL("SELECT conversation_id FROM message WHERE id IN "
                         f"(SELECT rowid FROM message_fts WHERE message_fts MATCH {p})", [match])
        in_title = pw.SQL("SELECT id FROM conversation WHERE rowid IN "
                          f"(SELECT rowid FROM conversation_fts WHERE conversation_fts MATCH {p})", [match])
    return ((Conversation.id << pw.NodeList((in_text,), parens=True))
            | (Conversation.id << pw.NodeList((in_title,), parens=True)))


def list_all(agent: str | None = None, user: str | None = None, q: str | None = None,
             limit: int = 50, before: str | None = None) -> dict:
    """A page of every user's conversations, most recently updated first."""
    where = pw.Value(True)
    if agent:
        where &= Conversation.agent_id == agent
    if user:
        where &= Conversation.user_id == user
    if q:
        if len(q) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"q: at most {MAX_QUERY_CHARS} characters")
        where &= _search_filter(q)
    cursor = parse_time("before", before)
    if cursor is not None:
        where &= Conversation.updated_at < cursor
    rows = list(Conversation.select().where(where)
                .order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(limit + 1))
    more, rows = len(rows) > limit, rows[:limit]
    ids = [row.id for row in rows]
    counts, lasts = (_counts(ids), _last_messages(ids)) if ids else ({}, {})
    return {"conversations": [summary(r, counts.get(r.id, 0), lasts.get(r.id)) for r in rows],
            "has_more": more, "next_before": _cursor(rows[-1].updated_at) if more else None}


def _cursor(moment) -> str:
    # Full precision (iso() keeps whole seconds): the next page starts right after this row.
    return moment.isoformat(timespec="microseconds") + "Z"


# -- one conversation's trace ---------------------------------------------------------------

def _model_step(row: Message, offset: int) -> dict:
    return {"type": "model_call", "message_id": row.id, "provider": row.provider, "model": row.model,
            "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
            "duration_ms": row.duration_ms, "offset_ms": offset, "status": row.status,
            "content": row.content, "tool_calls": row.tool_calls or None}


def _tool_step(row: Message, call: dict | None, offset: int) -> dict:
    fn = (call or {}).get("function") or {}
    return {"type": "tool_call", "message_id": row.id, "id": row.tool_call_id, "name": row.name,
            "arguments": fn.get("arguments"), "result": row.content, "is_error": bool(row.is_error),
            "error": row.content if row.is_error else None, "duration_ms": row.duration_ms,
            "offset_ms": offset}


def _steps(rows: list[Message]) -> list[dict]:
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


def _turn(user: Message, rows: list[Message], costs: dict) -> dict:
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


def _costs(turn_ids: list[int]) -> dict[int, int]:
    if not turn_ids:
        return {}
    query = (UsageRecord.select(UsageRecord.turn_id, pw.fn.SUM(UsageRecord.cost_nanousd))
             .where(UsageRecord.turn_id.in_(turn_ids)).group_by(UsageRecord.turn_id).tuples())
    return {turn: int(cost) for turn, cost in query if cost is not None}


def detail(conversation_id: str) -> dict:
    """The conversation with each turn's steps (model calls, tool calls, durations, errors)."""
    conversation = Conversation.get_or_none(Conversation.id == conversation_id)
    if conversation is None:
        raise ConversationNotFound(f"Conversation {conversation_id} does not exist")
    messages = list(Message.select().where(Message.conversation == conversation_id).order_by(Message.id))
    turns, current = [], None
    for row in messages:
        if row.role == "user":
            current = (row, [])
            turns.append(current)
        elif current is not None:
            current[1].append(row)
    costs = _costs([user.id for user, _ in turns])
    data = summary(conversation, len(messages), messages[-1] if messages else None)
    data["context"] = conversation.context
    data["turns"] = [_turn(user, rows, costs) for user, rows in turns]
    return data
