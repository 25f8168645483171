"""Pending tool approvals: stored, decided once, used once, expired in place.

An approval is bound to one call of one model step (the assistant message
holding the `tool_calls`), in one conversation of one user. Each change of
state is a conditional UPDATE, so two deciders, or a decider and a new chat
message, can never both win:

- `decide`: pending -> approved | denied, only while unexpired (inside a
  transaction that first takes the conversation's row, `lock_conversation`);
- `expire_step`: pending -> expired, only once expired;
- `begin_resume`: the step's decided approvals are marked used in the same
  transaction that takes the turn lock for the run resuming the step, so an
  approval is used only when its run has started;
- `settle_expired` (a new chat message): a conversation whose open approvals
  have all expired gets a denied result for each call, so its history stays
  valid for the model; any unexpired one refuses the message.
"""
from __future__ import annotations

import datetime as dt
import secrets

import peewee as pw

from agentd.errors import ApprovalExpired, ApprovalPending, ApprovalResolved, NotFound
from agentd.store import prepared
from agentd.store.models import Approval, Conversation, Message, db, utcnow

DEFAULT_TTL = 86400
EXPIRED_TEXT = "denied: the approval expired"
UNRUN_TEXT = "cancelled: the approved call did not run before its approval expired"


def new_approval_id() -> str:
    return "apr_" + secrets.token_urlsafe(16)


def iso(value: dt.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def public(row: Approval) -> dict:
    """An approval as the API shows it (its owner sees the call and its arguments)."""
    return {"id": row.id, "tool_call": {"id": row.tool_call_id, "type": "function",
                                        "function": {"name": row.tool_name, "arguments": row.arguments}},
            "message": row.message, "status": row.status, "created_at": iso(row.created_at),
            "expires_at": iso(row.expires_at)}


def create(rows: list[dict], ttl: int) -> list[Approval]:
    """Store new pending approvals, valid for `ttl` seconds (inside the caller's transaction)."""
    now = utcnow()
    expires = now + dt.timedelta(seconds=ttl)
    made = [Approval(**{**row, "created_at": now, "expires_at": expires}) for row in rows]
    for row in made:
        row.save(force_insert=True)
    return made


def _step_stored(conversation_id: str):
    """Approvals whose step is still in the history (clearing or truncating may remove it)."""
    return Approval.step_id.in_(Message.select(Message.id).where(Message.conversation == conversation_id))


def pending(conversation_id: str) -> list[Approval]:
    """The conversation's approvals still waiting for a decision, oldest first."""
    return list(Approval.select().where(
        (Approval.conversation == conversation_id) & Approval.used_at.is_null()
        & (Approval.status == "pending") & (Approval.expires_at > utcnow()) & _step_stored(conversation_id))
        .order_by(Approval.created_at, Approval.id))


def find(approval_id: str, conversation_id: str, user_id: str, agents: list[str] | None) -> Approval:
    """The caller's own approval in that conversation; 404 for anything else."""
    row = Approval.get_or_none((Approval.id == approval_id) & (Approval.conversation == conversation_id)
                               & (Approval.user_id == user_id))
    if row is None or (agents is not None and row.agent_id not in agents):
        raise NotFound(f"Approval {approval_id[:80]} does not exist")
    return row


def find_for_user(approval_id: str, user_id: str, agent_id: str) -> Approval:
    """The caller's own approval with that agent, whatever the conversation (the WebSocket)."""
    row = Approval.get_or_none((Approval.id == approval_id) & (Approval.user_id == user_id)
                               & (Approval.agent_id == agent_id))
    if row is None:
        raise NotFound(f"Approval {approval_id[:80]} does not exist")
    return row


def decide(row: Approval, approve: bool, reason: str | None) -> None:
    """Record the decision once; 409 APPROVAL_RESOLVED or APPROVAL_EXPIRED otherwise."""
    now = utcnow()
    changed = (Approval.update(status="approved" if approve else "denied", reason=reason, decided_at=now)
               .where((Approval.id == row.id) & (Approval.status == "pending") & Approval.used_at.is_null()
                      & (Approval.expires_at > now))
               .execute())
    if changed:
        return
    current = Approval.get_by_id(row.id)
    if current.status in ("pending", "expired") and current.used_at is None:
        # The caller marks it expired (`expire_step`) outside its rolled-back transaction.
        raise ApprovalExpired("This approval has expired; the call is denied")
    raise ApprovalResolved(f"This approval was already decided ({current.status})")


def transaction():
    """One transaction around a decision and the start of the run it completes."""
    return db.atomic()


def lock_conversation(conversation_id: str) -> None:
    """Serialise the deciders of one conversation (and its new messages) for this transaction:
    the UPDATE holds the conversation's row lock on PostgreSQL (SQLite's write lock already
    serialises), so two last decisions of one step cannot both see the other still pending."""
    Conversation.update(updated_at=utcnow()).where(Conversation.id == conversation_id).execute()


def expire_step(step_id: int) -> int:
    """Mark a step's pending approvals whose time is up as expired."""
    now = utcnow()
    return (Approval.update(status="expired", decided_at=now)
            .where((Approval.step_id == step_id) & (Approval.status == "pending")
                   & Approval.used_at.is_null() & (Approval.expires_at <= now))
            .execute())


def undecided_in_step(step_id: int) -> list[str]:
    """Ids of the step's approvals still waiting (unexpired), oldest first."""
    return [row.id for row in Approval.select(Approval.id).where(
        (Approval.step_id == step_id) & (Approval.status == "pending") & Approval.used_at.is_null()
        & (Approval.expires_at > utcnow())).order_by(Approval.created_at, Approval.id)]


def step_decided(step_id: int) -> bool:
    """Whether every approval of the step is decided (or expired) and none was used yet."""
    rows = list(Approval.select(Approval.status, Approval.used_at).where(Approval.step_id == step_id))
    return bool(rows) and all(r.status != "pending" and r.used_at is None for r in rows)


def begin_resume(step_id: int, run_id: str) -> list[Approval]:
    """Mark the step's decided approvals used by `run_id` (inside the run's opening
    transaction); raises ApprovalResolved when another run took them first."""
    rows = list(Approval.select().where(Approval.step_id == step_id).order_by(Approval.created_at, Approval.id))
    if not rows or any(r.status == "pending" for r in rows):
        raise ApprovalPending("Some approvals of this step are still pending")
    now = utcnow()
    changed = (Approval.update(used_at=now, resumed_run_id=run_id)
               .where((Approval.step_id == step_id) & Approval.used_at.is_null()
                      & (Approval.status != "pending"))
               .execute())
    if changed != len(rows):
        raise ApprovalResolved("This step was already resumed")
    Message.update(status="complete").where(Message.id == step_id).execute()
    return rows


def result_text(row: Approval) -> str | None:
    """The tool result a decided call gets without running (None: it runs)."""
    if row.status == "approved":
        return None
    if row.status == "denied":
        return f"denied: {row.reason or 'the person did not approve this call'}"
    return EXPIRED_TEXT


def _open_query(m: dict):
    return (Approval.select(Approval.id).where((Approval.conversation == m["conversation"])
                                               & Approval.used_at.is_null()).limit(m["one"]))


def _any_open(conversation_id: str) -> bool:
    """Whether the conversation has an approval not yet used; runs before every message
    of an existing conversation, so its SQL is built once (agentd.store.prepared)."""
    cursor = prepared.run("approvals_open", _open_query, {"conversation": "\x01conversation", "one": -900001},
                          {"conversation": Approval.conversation.db_value(conversation_id), "one": 1})
    return cursor.fetchone() is not None


def settle_expired(conversation_id: str) -> None:
    """Before a new message: refuse it while an approval is open; close expired steps.

    Runs inside the new turn's transaction, after its lock is taken. Each call of
    an expired step gets a result (denied, or cancelled when approved but never
    run), stored right after the step's other results, so the history stays valid.
    """
    if not _any_open(conversation_id):
        return  # the usual case: one indexed read per turn (SQL built once), no write
    now = utcnow()
    open_rows = list(Approval.select().where((Approval.conversation == conversation_id)
                                             & Approval.used_at.is_null()))
    if not open_rows:
        return
    # A step the history no longer holds (cleared, truncated) has nothing left to answer.
    Approval.delete().where((Approval.conversation == conversation_id) & ~_step_stored(conversation_id)).execute()
    open_rows = list(Approval.select().where((Approval.conversation == conversation_id)
                                             & Approval.used_at.is_null()))
    if not open_rows:
        return
    if any(row.expires_at > now for row in open_rows):
        raise ApprovalPending("A tool call in this conversation is waiting for approval; "
                              "approve or deny it first")
    for row in open_rows:
        text = UNRUN_TEXT if row.status == "approved" else (result_text(row) if row.status == "denied"
                                                            else EXPIRED_TEXT)
        Message.create(conversation=conversation_id, agent_id=row.agent_id, user_id=row.user_id,
                       role="tool", content=text, tool_call_id=row.tool_call_id, name=row.tool_name,
                       is_error=True, status="complete")
    ids = [row.id for row in open_rows]
    (Approval.update(status=pw.Case(None, [(Approval.status == "pending", "expired")], Approval.status),
                     used_at=now)
     .where(Approval.id.in_(ids)).execute())
    Message.update(status="complete").where(Message.id.in_({row.step_id for row in open_rows})).execute()


def delete_for(conversation_id: str) -> None:
    Approval.delete().where(Approval.conversation == conversation_id).execute()


__all__ = ["DEFAULT_TTL", "new_approval_id", "public", "create", "pending", "find", "find_for_user", "decide",
           "expire_step", "undecided_in_step", "step_decided", "begin_resume", "result_text",
           "settle_expired", "db"]
