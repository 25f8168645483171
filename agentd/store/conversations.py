"""Queries behind the conversation API. Every read and write checks ownership here.

`owned()` is the one gate: 404 when the conversation does not exist (or its
agent is outside the caller's key), 403 when it belongs to another user. The
403 is raised before anything of the row is used, so it carries no title,
count or content. Writes repeat the owner in their WHERE clause, so a row can
never be changed on the strength of a check made for another user.
"""
from __future__ import annotations

import peewee as pw

from agentd.errors import ConversationNotFound
from agentd.store.messages import (acquire_turn, get_owned_conversation, iso, message_dict, release_turn,
                                  running)
from agentd.store.models import Conversation, Message, db, utcnow

CHANNELS = ("api", "widget", "ws", "cli", "openai", "agui", "ui", "mcp")
TITLE_MAX = 200


def owned(conversation_id: str, user_id: str, agents: list[str] | None = None) -> Conversation:
    """The caller's conversation: 404 unknown, 403 another user's, 404 outside the key's agents."""
    conversation = get_owned_conversation(conversation_id, user_id)
    if agents is not None and conversation.agent_id not in agents:
        # The key may not use this agent: to it, the conversation does not exist.
        raise ConversationNotFound(f"Conversation {conversation_id} does not exist")
    return conversation


def _mine(conversation: Conversation):
    return (Conversation.id == conversation.id) & (Conversation.user_id == conversation.user_id)


def _last_messages(ids: list[str]) -> dict[str, Message]:
    newest = (Message.select(pw.fn.MAX(Message.id)).where(Message.conversation.in_(ids))
              .group_by(Message.conversation))
    return {row.conversation_id: row for row in Message.select().where(Message.id.in_(newest))}


def _counts(ids: list[str]) -> dict[str, int]:
    query = (Message.select(Message.conversation, pw.fn.COUNT(Message.id).alias("n"))
             .where(Message.conversation.in_(ids)).group_by(Message.conversation).tuples())
    return dict(query)


def _last_message_dict(row: Message | None) -> dict | None:
    if row is None:
        return None
    return {"id": row.id, "role": row.role, "content": row.content, "created_at": iso(row.created_at)}


def summary(conversation: Conversation, count: int, last: Message | None) -> dict:
    """A conversation as listed (docs/api.md), with its owner."""
    return {"id": conversation.id, "agent_id": conversation.agent_id, "user_id": conversation.user_id,
            "title": conversation.title, "channel": conversation.channel, "message_count": count,
            "last_message": _last_message_dict(last), "created_at": iso(conversation.created_at),
            "updated_at": iso(conversation.updated_at)}


def describe(conversation: Conversation) -> dict:
    """One conversation as a summary (counts and last message looked up)."""
    counts, lasts = _counts([conversation.id]), _last_messages([conversation.id])
    return summary(conversation, counts.get(conversation.id, 0), lasts.get(conversation.id))


def list_conversations(agent_id: str, user_id: str, limit: int, offset: int,
                       channel: str | None = None) -> tuple[list[dict], int]:
    """A page of the user's conversations with an agent, most recently updated first, and the total."""
    where = (Conversation.user_id == user_id) & (Conversation.agent_id == agent_id)
    if channel:
        where &= Conversation.channel == channel
    total = Conversation.select().where(where).count()
    rows = list(Conversation.select().where(where)
                .order_by(Conversation.updated_at.desc(), Conversation.created_at.desc(),
                          Conversation.id).limit(limit).offset(offset))
    ids = [row.id for row in rows]
    counts, lasts = (_counts(ids), _last_messages(ids)) if ids else ({}, {})
    return [summary(row, counts.get(row.id, 0), lasts.get(row.id)) for row in rows], total


def messages_page(conversation: Conversation, limit: int, offset: int) -> dict:
    """The conversation with one page of its messages, oldest first, paged by offset."""
    where = Message.conversation == conversation.id
    total = Message.select().where(where).count()
    rows = list(Message.select().where(where).order_by(Message.id).limit(limit).offset(offset))
    return {"id": conversation.id, "agent_id": conversation.agent_id, "user_id": conversation.user_id,
            "title": conversation.title, "channel": conversation.channel,
            "created_at": iso(conversation.created_at), "updated_at": iso(conversation.updated_at),
            "messages": [message_dict(r) for r in rows], "total": total, "limit": limit,
            "offset": offset, "has_more": offset + len(rows) < total, "running": running(conversation)}


def rename(conversation: Conversation, title: str) -> Conversation:
    """Set a conversation's title (the caller validated it)."""
    now = utcnow()
    Conversation.update(title=title, updated_at=now).where(_mine(conversation)).execute()
    conversation.title, conversation.updated_at = title, now
    return conversation


def set_title_if(conversation_id: str, expected: str | None, title: str) -> bool:
    """Replace the title only if it is still `expected` (a rename in the meantime wins)."""
    where = Conversation.id == conversation_id
    where &= Conversation.title.is_null() if expected is None else Conversation.title == expected
    return bool(Conversation.update(title=title).where(where).execute())


def delete(conversation: Conversation, lease_seconds: int) -> int:
    """Delete a conversation and its messages; 409 while a turn runs in it. Returns messages deleted."""
    # Taking the turn lock first means a running turn never writes into a deleted row.
    acquire_turn(conversation.id, lease_seconds)
    with db.atomic():
        deleted = Message.delete().where(Message.conversation == conversation.id).execute()
        Conversation.delete().where(_mine(conversation)).execute()
    return deleted


def _older_than_newest(where, keep: int):
    """The filter for every message but the newest `keep`; None when nothing would go."""
    if keep == 0:
        return where
    # A cursor at the oldest kept id, rather than NOT IN (a huge `keep` would be a huge list).
    oldest_kept = (Message.select(Message.id).where(where).order_by(Message.id.desc())
                   .offset(keep - 1).limit(1).scalar())
    return where & (Message.id < oldest_kept) if oldest_kept is not None else None


def truncate(conversation: Conversation, keep: int, lease_seconds: int) -> tuple[int, int]:
    """Keep the newest `keep` messages; returns (kept, deleted). 409 while a turn runs in it."""
    token = acquire_turn(conversation.id, lease_seconds)
    try:
        with db.atomic():
            where = Message.conversation == conversation.id
            doomed = _older_than_newest(where, keep)
            deleted = Message.delete().where(doomed).execute() if doomed is not None else 0
            kept = Message.select().where(where).count()
    finally:
        release_turn(conversation.id, token)  # also stamps updated_at
    return kept, deleted
