"""Approval decisions that arrive through another client's protocol.

AG-UI resumes an interrupted run with `resume` entries; an AI SDK client sends
its messages again with the tool parts answered (`approval-responded`). Either
way the decisions go through the same path as `POST …/approvals/{id}`
(`agentd.api.approvals.settle`: decided once, resumed in one transaction), and
the answer is the resumed run in the protocol's own frames, or, while other
calls of the step still wait, a run that ends at once listing them again.
"""
from __future__ import annotations

from flask import g

from agentd.api.approvals import settle
from agentd.errors import ApprovalResolved
from agentd.store import approvals as store
from agentd.store import messages as messages_store
from agentd.vocab import Event

Decision = tuple[str, bool, "str | None"]  # (approval id, approve?, reason)


def resumed_events(adapter, conversation_id: str, decisions: list[Decision]):
    """(the resumed turn, or None; the synthetic events of a step still waiting, or None)."""
    turn, row = None, None
    for approval_id, approve, reason in decisions:
        found = store.find(approval_id, conversation_id, g.principal.user_id, g.principal.agents)
        if found.status != "pending" or found.used_at is not None:
            continue  # a decision the client already sent (its history carries it again)
        row = found
        _, turn = settle(row, approve, reason, True, adapter.channel)
    if row is None:
        raise ApprovalResolved("These approvals were already decided")
    return turn, (None if turn is not None else still_waiting(conversation_id, row.step_id))


def still_waiting(conversation_id: str, step_id: int) -> list[Event]:
    """A run that ends at once: the step's message and the approvals it still waits for."""
    rows = [r for r in store.pending(conversation_id) if r.step_id == step_id]
    message = messages_store.message_by_id(step_id)
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    required = [Event("approval_required", {"approval": store.public(r)}) for r in rows]
    start = Event("start", {"id": None, "conversation_id": conversation_id, "user_message_id": step_id,
                            "provider": message.get("provider"), "model": message.get("model")})
    done = Event("done", {"message": {**message, "usage": usage}, "usage": usage,
                          "approvals": [e.data["approval"] for e in required]})
    return [start, *required, done]
