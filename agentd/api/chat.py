"""Agents and chat routes of API.md: list agents, send (JSON, SSE, WebSocket), history, clear."""
from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context

from agentd import idempotency
from agentd.api.streaming import SSE_HEADERS, pump, sse_stream
from agentd.api.validation import chat_input, int_arg, json_body
from agentd.errors import ApiError, InvalidRequest
from agentd.store import messages as store

bp = Blueprint("chat", __name__)


def service():
    return current_app.extensions["agentd"].chat


def state():
    return current_app.extensions["agentd"]


@bp.get("/api/agents")
def list_agents():
    agents = state().agents.values()
    allowed = g.principal.agents
    return jsonify({"agents": [a.info() for a in agents if allowed is None or a.id in allowed]})


@bp.get("/api/agents/<agent_id>")
def get_agent(agent_id):
    return jsonify(service().agent(agent_id, g.principal).info())


def run_to_completion(turn) -> dict:
    """Drive a non-streamed turn; the final message, or the turn's error raised."""
    for event in turn.events():
        if event.type == "done":
            return {**event.data["message"], "usage": event.data["usage"]}
        if event.type == "error":
            raise event.payload
    raise ApiError("the turn ended without an answer")


def send_message(agent_id: str, body: dict, channel: str, filter_event=None):
    """Start a turn and answer it as JSON or as an SSE stream."""
    inp = chat_input(body, channel=channel)
    turn = service().start_turn(agent_id, g.principal, inp)
    if not inp.stream:
        return jsonify(run_to_completion(turn))
    response = Response(stream_with_context(sse_stream(turn, filter_event, state().db.connection_context)),
                        mimetype="text/event-stream", headers=SSE_HEADERS)
    return response


@bp.post("/api/agents/<agent_id>/chat")
def post_chat(agent_id):
    body = json_body(request)
    return idempotency.guard(agent_id, body, lambda: send_message(agent_id, body, "api"))


def _history_filter(agent_id: str):
    conversation_id = request.args.get("conversation_id") or None
    if conversation_id:
        store.get_owned_conversation(conversation_id, g.principal.user_id, agent_id)
    return conversation_id


@bp.get("/api/agents/<agent_id>/chat")
def get_history(agent_id):
    service().agent(agent_id, g.principal)
    limit = int_arg(request.args, "limit", 50, 1, 100)
    before = int_arg(request.args, "before", None, 0)
    after = int_arg(request.args, "after", None, 0)
    if before is not None and after is not None:
        raise InvalidRequest("before/after: give one cursor, not both")
    conversation_id = _history_filter(agent_id)
    rows, total, has_more = store.history_page(agent_id, g.principal.user_id, conversation_id,
                                               limit, before, after)
    return jsonify({"messages": [store.message_dict(r) for r in rows],
                    "meta": {"total": total, "has_more": has_more}})


@bp.delete("/api/agents/<agent_id>/chat")
def clear_history(agent_id):
    service().agent(agent_id, g.principal)
    conversation_id = _history_filter(agent_id)
    deleted = store.clear_messages(agent_id, g.principal.user_id, conversation_id)
    return jsonify({"success": True, "deleted": deleted})


def websocket_session(ws, agent_id: str, channel: str = "ws", filter_event=None) -> None:
    """Serve turns over one socket, one at a time; `{"type": "cancel"}` stops the running one."""
    service().agent(agent_id, g.principal)
    while True:
        frame = ws.receive()
        if frame is None:
            return
        try:
            body = json.loads(frame)
        except ValueError:
            ws.send(json.dumps({"type": "error", "error": {"code": "INVALID_REQUEST",
                                                           "message": "frame: malformed JSON"}}))
            continue
        if not isinstance(body, dict) or body.get("type") != "message":
            continue  # a cancel with no running turn, or an unknown frame
        _ws_turn(ws, agent_id, body, channel, filter_event)


def _ws_turn(ws, agent_id, body, channel, filter_event) -> None:
    try:
        turn = service().start_turn(agent_id, g.principal, chat_input({**body, "stream": True}, channel))
    except ApiError as exc:
        ws.send(json.dumps({"type": "error", "error": {"code": exc.code, "message": exc.message}}))
        return
    for event in pump(turn, idle=0.1, scope=state().db.connection_context):
        if event is not None:
            event = filter_event(event) if filter_event else event
            if event is not None:
                ws.send(json.dumps(event.public(), ensure_ascii=False))
        _check_cancel(ws, turn)


def _check_cancel(ws, turn) -> None:
    frame = ws.receive(timeout=0)
    if frame is None:
        return
    try:
        if json.loads(frame).get("type") == "cancel":
            turn.cancel()
    except (ValueError, AttributeError):
        pass
