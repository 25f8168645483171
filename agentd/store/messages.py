"""Queries over conversations and messages. Ownership is checked here, on every read and write."""
from __future__ import annotations

import datetime as dt
import secrets

import peewee as pw

from agentd.errors import ConversationBusy, ConversationNotFound, Forbidden
from agentd.store import prepared, search_index
from agentd.store.approvals import begin_resume, settle_expired
from agentd.store.models import Conversation, Message, db, utcnow

UNFINISHED = "streaming"


def new_conversation_id() -> str:
    # 128 random bits: unguessable, as docs/api.md asks (at least 96).
    return "conv_" + secrets.token_urlsafe(16)


def iso(value: dt.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


_CONVERSATION_FIELDS = Conversation._meta.sorted_fields


def _conversation_by_id(conversation_id: str) -> Conversation | None:
    """Conversation.get_or_none by id, through SQL built once (it runs on most requests)."""
    found = prepared.rows(prepared.run(
        "conversation_by_id", lambda m: Conversation.select().where(Conversation.id == m["id"]).limit(m["one"]),
        {"id": "\x01id", "one": -900001}, {"id": Conversation.id.db_value(conversation_id), "one": 1}),
        _CONVERSATION_FIELDS)
    if not found:
        return None
    conversation = Conversation(**{f.name: getattr(found[0], f.column_name) for f in _CONVERSATION_FIELDS})
    conversation._dirty.clear()  # as read, like peewee's own rows
    return conversation


def get_owned_conversation(conversation_id: str, user_id: str, agent_id: str | None = None) -> Conversation:
    """The conversation if `user_id` owns it: 404 when it does not exist, 403 when another's."""
    conversation = _conversation_by_id(conversation_id)
    if conversation is None or (agent_id and conversation.agent_id != agent_id):
        raise ConversationNotFound(f"Conversation {conversation_id} does not exist")
    if conversation.user_id != user_id:
        raise Forbidden("This conversation belongs to someone else")
    return conversation


def create_conversation(agent_id: str, user_id: str, channel: str, context: dict | None) -> Conversation:
    return Conversation.create(id=new_conversation_id(), agent_id=agent_id, user_id=user_id,
                               channel=channel, context=context or None)


def create_busy_conversation(agent_id: str, user_id: str, channel: str, context: dict | None,
                             title: str | None, lease_seconds: int,
                             conversation_id: str | None = None,
                             run_id: str | None = None) -> tuple[Conversation, str]:
    """A new conversation whose turn lock is already taken: one INSERT instead of three statements.

    `conversation_id` is a client-named thread's id (AG-UI, AI SDK); another
    request creating the same one first makes this one 409 CONVERSATION_BUSY.
    """
    token = secrets.token_hex(8)
    now = utcnow()
    conversation = Conversation(
        id=conversation_id or new_conversation_id(), agent_id=agent_id, user_id=user_id, channel=channel,
        context=context or None, title=title, busy_token=token,
        busy_until=now + dt.timedelta(seconds=lease_seconds), run_id=run_id,
        run_started_at=now if run_id else None)
    # What Conversation.create does (its defaults are in __data__ already), with SQL built once.
    try:
        with db.atomic():  # a savepoint: a lost race must not poison the caller's transaction
            prepared.insert(Conversation, dict(conversation.__data__))
    except pw.IntegrityError:
        raise ConversationBusy("This conversation id is taken, or a turn is already starting it") from None
    conversation._dirty.clear()
    return conversation, token


def acquire_turn(conversation_id: str, lease_seconds: int, run_id: str | None = None) -> str:
    """Take the conversation's turn lock through the database, so it holds across processes.

    `run_id` names the run that takes it (None: a delete or truncate), in the same UPDATE.
    """
    token = secrets.token_hex(8)
    now = utcnow()
    claimed = (Conversation.update(busy_token=token, busy_until=now + dt.timedelta(seconds=lease_seconds),
                                   run_id=run_id, run_started_at=now if run_id else None)
               .where((Conversation.id == conversation_id)
                      & (Conversation.busy_token.is_null() | (Conversation.busy_until < now)))
               .execute())
    if not claimed:
        raise ConversationBusy("A turn is already running in this conversation")
    return token


def release_turn(conversation_id: str, token: str) -> None:
    """Runs at every turn's end, so its SQL is built once (agentd.store.prepared); every
    so many turns it also brings SQLite's full-text index up to date, in the same transaction."""
    prepared.run("release_turn", _release_query, _RELEASE_MARKERS,
                 {"id": Conversation.id.db_value(conversation_id),
                  "token": Conversation.busy_token.db_value(token),
                  "now": Conversation.updated_at.db_value(utcnow())})
    search_index.after_turn()


_RELEASE_MARKERS = {"id": "\x01id", "token": "\x01token", "now": "\x01now"}


def _release_query(m: dict):
    return (Conversation.update({Conversation.busy_token: pw.SQL("NULL"), Conversation.busy_until: pw.SQL("NULL"),
                                 Conversation.updated_at: m["now"]})
            .where((Conversation.id == m["id"]) & (Conversation.busy_token == m["token"])))


def turn_running(conversation: Conversation) -> bool:
    """Whether the conversation's turn lock is held by a lease that has not run out."""
    return conversation.busy_token is not None and conversation.busy_until > utcnow()


def running(conversation: Conversation) -> dict | None:
    """The run holding the conversation's live lease, as `{"run_id", "started_at"}`, else None."""
    if not conversation.run_id or not conversation.busy_token:
        return None
    if conversation.busy_until is None or conversation.busy_until < utcnow():
        return None  # a lease nobody renews: its process is gone
    return {"run_id": conversation.run_id, "started_at": iso(conversation.run_started_at)}


def run_is_live(conversation_id: str, run_id: str) -> bool:
    """Whether that run still holds the conversation's live lease (its process renews it)."""
    conversation = _conversation_by_id(conversation_id)
    return conversation is not None and (running(conversation) or {}).get("run_id") == run_id


def extend_turn(conversation_id: str, token: str, lease_seconds: int) -> None:
    (Conversation.update(busy_until=utcnow() + dt.timedelta(seconds=lease_seconds))
     .where((Conversation.id == conversation_id) & (Conversation.busy_token == token)).execute())


WINDOW_FIELDS = [Message.id, Message.role, Message.content, Message.tool_calls, Message.tool_call_id,
                 Message.name, Message.images]


def _window_query(m):
    return (Message.select(*WINDOW_FIELDS)
            .where((Message.conversation == m["conversation"]) & (Message.status != m["refused"]))
            .order_by(Message.id.desc()).limit(m["limit"]))


def history_window(conversation_id: str, max_messages: int) -> list:
    """The most recent messages for the model, oldest first, never starting mid tool exchange.

    Rows carry WINDOW_FIELDS only (what the model request needs), through SQL built once.
    """
    values = {"conversation": Message.conversation.db_value(conversation_id), "refused": "refused",
              "limit": max_messages}
    rows = prepared.rows(prepared.run("history_window", _window_query,
                                      {"conversation": "\x01conversation", "refused": "\x01refused",
                                       "limit": -900001}, values), WINDOW_FIELDS)
    rows.reverse()
    while rows and rows[0].role != "user":
        rows.pop(0)
    return rows


def _filter(agent_id: str, user_id: str, conversation_id: str | None):
    if conversation_id:
        return Message.conversation == conversation_id
    return (Message.agent_id == agent_id) & (Message.user_id == user_id)


# The columns message_dict needs, in this order.
PAGE_FIELDS = [Message.id, Message.conversation, Message.role, Message.content, Message.tool_calls,
               Message.tool_call_id, Message.name, Message.is_error, Message.metadata, Message.status,
               Message.provider, Message.model, Message.prompt_tokens, Message.completion_tokens,
               Message.created_at]
# Marker values standing for the parameters while the page's SQL is built (agentd.store.prepared).
_MARKERS = {"conversation": "\x01conversation", "agent": "\x01agent", "user": "\x01user",
            "cursor": -900001, "limit": -900002}


def _page_where(markers: dict, by_conversation: bool):
    if by_conversation:
        return _filter("", "", markers["conversation"])
    return _filter(markers["agent"], markers["user"], None)


def _page_query(by_conversation: bool, cursor: str | None):
    def build(markers):
        # The total rides along as an uncorrelated subquery (run once): one round trip, not two.
        total = _count_query(by_conversation)(markers).alias("total")
        query = Message.select(*PAGE_FIELDS, total).where(_page_where(markers, by_conversation))
        if cursor == "after":
            return query.where(Message.id > markers["cursor"]).order_by(Message.id).limit(markers["limit"])
        if cursor == "before":
            query = query.where(Message.id < markers["cursor"])
        return query.order_by(Message.id.desc()).limit(markers["limit"])
    return build


def _count_query(by_conversation: bool):
    def build(markers):
        # What peewee's .count() runs: the filtered select wrapped in a COUNT.
        wrapped = Message.select().where(_page_where(markers, by_conversation)).alias("_wrapped")
        return pw.Select([wrapped], [pw.fn.COUNT(pw.SQL("1"))])
    return build


def history_page(agent_id: str, user_id: str, conversation_id: str | None, limit: int,
                 before: int | None = None, after: int | None = None) -> tuple[list, int, bool]:
    """A page of messages oldest first, the total the filter matches, and whether more lie beyond.

    Rows are attribute objects with message_dict's columns (not model instances): the
    page's SQL is built once (agentd.store.prepared), as pages are the hottest read.
    """
    by_conversation = bool(conversation_id)
    values = {"conversation": Message.conversation.db_value(conversation_id) if by_conversation else None,
              "agent": Message.agent_id.db_value(agent_id), "user": Message.user_id.db_value(user_id),
              "cursor": after if after is not None else before, "limit": limit + 1}
    scope = "by_conversation" if by_conversation else "by_user"
    cursor = "after" if after is not None else ("before" if before is not None else None)
    rows = prepared.rows(prepared.run(f"history_page_{scope}_{cursor}", _page_query(by_conversation, cursor),
                                      _MARKERS, values), PAGE_FIELDS, extra=("total",))
    if rows:
        total = rows[0].total
    else:  # no row to carry the total
        total = prepared.run(f"history_count_{scope}", _count_query(by_conversation), _MARKERS,
                             values).fetchone()[0]
    has_more = len(rows) > limit
    rows = rows[:limit]
    if cursor != "after":
        rows.reverse()
    return rows, total, has_more


def clear_messages(agent_id: str, user_id: str, conversation_id: str | None, lease_seconds: int = 60) -> int:
    """Delete a conversation's messages, or all of the user's messages with the agent.

    409 CONVERSATION_BUSY while a turn runs in the conversation (or, clearing them
    all, in any of the user's conversations with the agent): a running turn would
    otherwise keep writing into a history that was just cleared.
    """
    if conversation_id:
        token = acquire_turn(conversation_id, lease_seconds)
        try:
            with db.atomic():
                return Message.delete().where(_filter(agent_id, user_id, conversation_id)).execute()
        finally:
            release_turn(conversation_id, token)
    with db.atomic():
        if _any_busy(agent_id, user_id):
            raise ConversationBusy("A turn is running in one of these conversations; wait for it to end")
        return Message.delete().where(_filter(agent_id, user_id, None)).execute()


def _any_busy(agent_id: str, user_id: str) -> bool:
    return (Conversation.select(Conversation.id)
            .where((Conversation.user_id == user_id) & (Conversation.agent_id == agent_id)
                   & Conversation.busy_token.is_null(False) & (Conversation.busy_until >= utcnow()))
            .exists())


def _stale_conversations():
    now = utcnow()
    return (Conversation.select(Conversation.id)
            .where(Conversation.busy_token.is_null() | (Conversation.busy_until < now)))


def mark_unfinished(conversation_id: str | None = None) -> int:
    """Rows a crash left mid-stream become `partial` (some text) or `error` (none).

    Only rows whose conversation holds no live turn lease are touched, so another
    process's running stream is never disturbed.
    """
    scope = (Message.conversation.in_(_stale_conversations()) if conversation_id is None
             else Message.conversation == conversation_id)
    unfinished = (Message.status == UNFINISHED) & scope
    with db.atomic():
        with_text = (Message.update(status="partial")
                     .where(unfinished & Message.content.is_null(False) & (Message.content != ""))
                     .execute())
        empty = Message.update(status="error").where(unfinished).execute()
    return with_text + empty


def unfinished_lease_expiry() -> dt.datetime | None:
    """When the earliest live lease over a `streaming` row runs out (None: no such row).

    Those rows belong to a running turn, or to a process that died before its
    lease ran out; recovery looks again then.
    """
    row = (Conversation.select(Conversation.busy_until)
           .join(Message, on=(Message.conversation == Conversation.id))
           .where((Message.status == UNFINISHED) & Conversation.busy_token.is_null(False))
           .order_by(Conversation.busy_until).first())
    return row.busy_until if row else None


def message_dict(row: Message) -> dict:
    """A stored message in docs/api.md's shape."""
    data = {"id": row.id, "role": row.role, "content": row.content,
            "conversation_id": row.conversation_id, "created_at": iso(row.created_at)}
    if row.role == "assistant":
        data["tool_calls"] = row.tool_calls or None
        data["status"] = row.status
        if row.provider:
            data.update(provider=row.provider, model=row.model)
        if row.prompt_tokens is not None:
            data["usage"] = {"prompt_tokens": row.prompt_tokens,
                             "completion_tokens": row.completion_tokens,
                             "total_tokens": row.prompt_tokens + (row.completion_tokens or 0)}
    elif row.role == "tool":
        data.update(tool_call_id=row.tool_call_id, name=row.name, is_error=row.is_error)
    elif row.role == "user":
        data["metadata"] = row.metadata
        if row.status != "complete":
            data["status"] = row.status
    return data


def conversation_texts(conversation_id: str, roles: tuple[str, ...], own_connection: bool = False) -> list[str]:
    """The contents of a conversation's messages of these roles, oldest first (no error results).

    `own_connection`: from a thread that keeps no connection (a tool's), open one and
    give it back at once, so pooled connections are not held by idle tool threads.
    """
    if own_connection:
        with db.connection_context():
            return conversation_texts(conversation_id, roles)
    query = (Message.select(Message.content)
             .where((Message.conversation == conversation_id) & Message.role.in_(roles)
                    & Message.content.is_null(False) & (Message.is_error == False)  # noqa: E712
                    & (Message.status != "refused"))
             .order_by(Message.id).tuples())
    return [content for (content,) in query]


def count_messages(conversation_id: str) -> int:
    return Message.select(pw.fn.COUNT(Message.id)).where(Message.conversation == conversation_id).scalar()


def store_refused_message(agent_id: str, user_id: str, conversation_id: str | None, channel: str,
                          context: dict | None, text: str, metadata: dict | None) -> None:
    """Keep a refused message in the history, outside the model's window, with no turn lock."""
    with db.atomic():
        if conversation_id:
            conversation = get_owned_conversation(conversation_id, user_id, agent_id)
        else:
            conversation = create_conversation(agent_id, user_id, channel, context)
        Message.create(conversation=conversation.id, agent_id=agent_id, user_id=user_id,
                       role="user", content=text, metadata=metadata, status="refused")


def open_turn(agent_id: str, user_id: str, message: dict, *, conversation_id: str | None,
              channel: str, context: dict | None, title: str | None, lease: int,
              history: list[dict] | None = None, new_id: str | None = None,
              run_id: str | None = None) -> tuple[Conversation, str]:
    """Take the conversation's turn lock (creating it when new) and store the user's message.

    One transaction: the conversation (or its new context), the lock and the
    message land together or not at all. `message` holds the message's columns
    besides its conversation, agent and user; `history` (rows of the same form)
    are earlier messages a client sent itself, stored before it in a new
    conversation (whose id is `new_id` when a client named it). Returns the
    conversation, with `user_message_id` set, and the lock's token. `run_id`
    names the run taking the lock.
    """
    with db.atomic():
        if conversation_id:
            conversation = get_owned_conversation(conversation_id, user_id, agent_id)
            stale = conversation.busy_token is not None
            token = acquire_turn(conversation.id, lease, run_id)
            settle_expired(conversation.id)  # 409 APPROVAL_PENDING while a call awaits a person
            conversation.run_id, conversation.run_started_at = run_id, utcnow()
            if stale:
                mark_unfinished(conversation.id)
            if context is not None:
                Conversation.update(context=context).where(Conversation.id == conversation.id).execute()
                conversation.context = context
        else:
            conversation, token = create_busy_conversation(agent_id, user_id, channel, context, title, lease,
                                                           conversation_id=new_id, run_id=run_id)
            if history:
                owner = {"conversation": conversation.id, "agent_id": agent_id, "user_id": user_id}
                Message.insert_many([{**owner, **row} for row in history]).execute()
        user_message_id = prepared.insert(Message, {   # SQL built once (docs/benchmarks.md)
            "conversation": conversation.id, "agent_id": agent_id, "user_id": user_id, **message})
    conversation.user_message_id = user_message_id
    return conversation, token


def open_resume(conversation_id: str, step_id: int, lease: int, run_id: str):
    """Take the turn lock for the run resuming a decided step and mark its approvals used,
    in one transaction: an approval is used only by a run that started. Returns the
    conversation (its `user_message_id` is the step's row, for the `start` event), the
    lock's token and the step's approvals."""
    with db.atomic():
        token = acquire_turn(conversation_id, lease, run_id)
        rows = begin_resume(step_id, run_id)
        conversation = _conversation_by_id(conversation_id)
    conversation.user_message_id = step_id
    return conversation, token, rows


def message_by_id(message_id: int) -> dict:
    return message_dict(Message.get_by_id(message_id))


def written_message_dict(values: dict) -> dict:
    """The API form of a message row from the values just written (no read back)."""
    return message_dict(Message(**values))
