"""Tool approvals: list a conversation's pending ones, decide one, resume the paused run.

A decision is recorded once (a conditional UPDATE in the store). While other
approvals of the same step wait, the answer is `202 {"pending": [ids]}`; the
decision that completes the step starts the run that resumes it, and the
request answers like `POST …/chat` (JSON, or SSE with the run's numbered
events, so attach and resume work as for any run).
"""
from __future__ import annotations

import json
import logging

from flask import Blueprint, current_app, g, jsonify, request

from agentd.api.validation import json_body
from agentd.errors import ApprovalExpired, InvalidRequest
from agentd.store import approvals as store
from agentd.store import conversations as conversations_store

log = logging.getLogger("agentd.api.approvals")
bp = Blueprint("approvals", __name__)

DECISIONS = ("approve", "deny")
REASON_CHARS = 1000


def _state():
    return current_app.extensions["agentd"]


def parse_decision(body: dict) -> tuple[bool, str | None, bool]:
    """(approve?, reason, stream) from a decision body, or 400 naming the field."""
    decision = body.get("decision")
    if decision not in DECISIONS:
        raise InvalidRequest("decision: required, 'approve' or 'deny'")
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidRequest("reason: must be a string")
    if reason is not None and len(reason) > REASON_CHARS:
        raise InvalidRequest(f"reason: at most {REASON_CHARS} characters")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream: must be true or false")
    return decision == "approve", (reason or "").strip() or None, bool(stream)


def settle(row, approve: bool, reason: str | None, stream: bool, channel: str):
    """Record the decision; (ids of the step's approvals still waiting, the resuming Turn).

    One transaction: the decision, and when it completes its step, the turn lock
    for the run resuming it and the step's approvals marked used. When that run
    cannot start (409 CONVERSATION_BUSY) the decision is undone with it, so an
    approval is never used by a run that did not start, nor left decided with no
    run to come. An expired approval denies its call (409 APPROVAL_EXPIRED): when
    that completes its step, the step resumes in the background.
    """
    try:
        with store.transaction():
            store.lock_conversation(row.conversation_id)
            store.decide(row, approve, reason)
            waiting = store.undecided_in_step(row.step_id)
            turn = None if waiting else _state().chat.resume_turn(row, g.principal, stream, channel)
    except ApprovalExpired:
        store.expire_step(row.step_id)
        if store.step_decided(row.step_id):
            resume_unwatched(row)
        raise
    return waiting, turn


def resume_unwatched(row) -> None:
    from agentd.api.chat import start_run
    try:
        turn = _state().chat.resume_turn(row, g.principal, True, "api")
    except Exception:  # noqa: BLE001 — the 409 still answers; a later message settles the step
        log.warning("could not resume the step of expired approval %s", row.id, exc_info=True)
        return
    start_run(turn)


def decide(conversation_id: str, approval_id: str, filter_event=None, channel: str = "api"):
    """The POST route's work, shared with the widget's projection of it."""
    from agentd.api.chat import answer_turn
    approve, reason, stream = parse_decision(json_body(request))
    row = store.find(approval_id, conversation_id, g.principal.user_id, g.principal.agents)
    waiting, turn = settle(row, approve, reason, stream, channel)
    if turn is None:
        return jsonify({"pending": waiting}), 202
    return answer_turn(turn, filter_event)


def pending(conversation_id: str, project=store.public):
    conversation = conversations_store.owned(conversation_id, g.principal.user_id, g.principal.agents)
    return jsonify({"approvals": [project(row) for row in store.pending(conversation.id)]})


@bp.get("/api/conversations/<conversation_id>/approvals")
def list_approvals(conversation_id):
    return pending(conversation_id)


@bp.post("/api/conversations/<conversation_id>/approvals/<approval_id>")
def decide_approval(conversation_id, approval_id):
    return decide(conversation_id, approval_id)


# -- the WebSocket's `decision` frame ------------------------------------------------------
def ws_decision(ws, agent_id: str, body: dict, channel: str, filter_event=None):
    """A `{"type": "decision", "approval_id", "decision", "reason"}` frame: record it; the
    resumed run's Turn when it completed its step, else None (a frame said what happened)."""
    from agentd.api.streaming import error_frame
    from agentd.errors import ApiError
    try:
        approve, reason, _ = parse_decision({**body, "stream": True})
        approval_id = body.get("approval_id")
        if not isinstance(approval_id, str):
            raise InvalidRequest("approval_id: required, a string")
        row = store.find_for_user(approval_id, g.principal.user_id, agent_id)
        waiting, turn = settle(row, approve, reason, True, channel)
    except ApiError as exc:
        ws.send(error_frame(exc.code, exc.message))
        return None
    if turn is None:
        ws.send(json.dumps({"type": "approval_recorded", "approval_id": row.id, "pending": waiting}))
    return turn
