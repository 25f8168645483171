"""The operator's reads over every user's data: conversation search, a conversation's rows, export pages.

Search reads the full-text indexes of migration 63 (FTS5 on SQLite, tsvector +
GIN on PostgreSQL) over titles and user/assistant text, never a LIKE scan. A
message being streamed is found once its text is final; on SQLite the index is
filled in batches, brought up to date before each search (migration 64).
"""
from __future__ import annotations

import datetime as dt

import peewee as pw

from agentd.store.conversations import _counts, _last_messages, summary
from agentd.store import search_index
from agentd.store.models import Conversation, Message, db


def _search_filter(terms: list[str]):
    """A WHERE clause: the conversation's title or one of its messages matches every word."""
    p = db.param
    if isinstance(db.obj, pw.PostgresqlDatabase):
        tsq = f"to_tsquery('english', {p})"
        query = " & ".join(terms)
        # As on SQLite (migration 64), a message is found once its text is final, not while it streams.
        in_text = pw.SQL(f"SELECT conversation_id FROM message WHERE search @@ {tsq} "
                         "AND status <> 'streaming'", [query])
        in_title = pw.SQL(f"SELECT id FROM conversation WHERE search @@ {tsq}", [query])
    else:
        match = " ".join(f'"{t}"' for t in terms)  # each word a quoted FTS5 string: no syntax
        in_text = pw.SQL("SELECT conversation_id FROM message WHERE id IN "
                         f"(SELECT rowid FROM message_fts WHERE message_fts MATCH {p})", [match])
        in_title = pw.SQL("SELECT id FROM conversation WHERE rowid IN "
                          f"(SELECT rowid FROM conversation_fts WHERE conversation_fts MATCH {p})", [match])
    return ((Conversation.id << pw.NodeList((in_text,), parens=True))
            | (Conversation.id << pw.NodeList((in_title,), parens=True)))


def conversations_page(agent: str | None, user: str | None, terms: list[str] | None,
                       before: dt.datetime | None, limit: int) -> tuple[list[dict], dt.datetime | None]:
    """Summaries of every user's conversations, newest update first; and the next page's cursor."""
    where = pw.Value(True)
    if agent:
        where &= Conversation.agent_id == agent
    if user:
        where &= Conversation.user_id == user
    if terms:
        search_index.catch_up()  # SQLite: rows written since the last batch (agentd.store.search_index)
        where &= _search_filter(terms)
    if before is not None:
        where &= Conversation.updated_at < before
    rows = list(Conversation.select().where(where)
                .order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(limit + 1))
    more, rows = len(rows) > limit, rows[:limit]
    ids = [row.id for row in rows]
    counts, lasts = (_counts(ids), _last_messages(ids)) if ids else ({}, {})
    return ([summary(r, counts.get(r.id, 0), lasts.get(r.id)) for r in rows],
            rows[-1].updated_at if more else None)


def conversation_rows(conversation_id: str):
    """The conversation (its summary and context) and all its messages, oldest first; None if unknown."""
    conversation = Conversation.get_or_none(Conversation.id == conversation_id)
    if conversation is None:
        return None
    messages = list(Message.select().where(Message.conversation == conversation_id).order_by(Message.id))
    data = summary(conversation, len(messages), messages[-1] if messages else None)
    data["context"] = conversation.context
    return data, messages


def search_plan(terms: list[str]) -> tuple[str, list]:
    """The SQL of a search (for the test that checks its plan), with the index up to date."""
    search_index.catch_up()
    query = Conversation.select(Conversation.id).where(_search_filter(terms))
    return db.get_sql_context().sql(query).query()


# -- export pages --------------------------------------------------------------------------

def turn_page(after: int, agent: str | None, begin, end, size: int) -> list[tuple]:
    """(id, conversation, agent, user, channel, question, created_at) of the next `size` turns."""
    where = (Message.role == "user") & (Message.id > after)
    if agent:
        where &= Message.agent_id == agent
    if begin is not None:
        where &= Message.created_at >= begin
    if end is not None:
        where &= Message.created_at < end
    return list(Message.select(Message.id, Message.conversation, Message.agent_id, Message.user_id,
                               Conversation.channel, Message.content, Message.created_at)
                .join(Conversation, on=(Message.conversation == Conversation.id))
                .where(where).order_by(Message.id).limit(size).tuples())


def turn_steps(turn_ids: list[int]) -> list[tuple]:
    """(turn, role, content, tool_calls, prompt, completion, name) of those turns' assistant and tool rows."""
    return list(Message.select(Message.turn_id, Message.role, Message.content, Message.tool_calls,
                               Message.prompt_tokens, Message.completion_tokens, Message.name)
                .where(Message.turn_id.in_(turn_ids) & (Message.role << ["assistant", "tool"]))
                .order_by(Message.id).tuples())
