"""Agents and chat routes of docs/api.md: list agents, send (JSON, SSE, WebSocket), history, clear."""
from __future__ import annotations


from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context

from agentd.policies import idempotency
from agentd.api.streaming import (SSE_HEADERS, connection_releaser, error_frame, shutting_down_error,
                                  sse_stream, stop_on_leave, ws_next_message, ws_stream)
from agentd.api.validation import chat_input, int_arg, json_body
from agentd.errors import ApiError, InvalidRequest
from agentd.store import messages as store
from agentd.store.database import unavailable_error

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


def run_to_completion(run) -> dict:
    """Drive a non-streamed run in this request; the final message, or the run's error raised.

    The request does not notice a client that left, so the run finishes and stores.
    """
    for event in run.drive():
        if event.type == "done":
            answer = {**event.data["message"], "usage": event.data["usage"]}
            if "approvals" in event.data:  # the run paused: the calls waiting for a person
                answer["approvals"] = event.data["approvals"]
            return answer
        if event.type == "error":
            raise event.payload
    # Only a run ended from outside (a cancel, server shutdown) stops without done or error.
    raise run.abort_error or shutting_down_error()


def start_run(turn):
    """The turn as a run of this process, driven by a worker of its own.

    The request's own database connection goes back to the pool first: the
    worker takes one as it starts, and the response needs none while it streams.
    """
    release = connection_releaser(state().db)
    release()
    run = state().runs.begin(turn)
    idempotency.bind_run(run)  # a claimed Idempotency-Key follows the run, not this connection
    return run.start(release=release)


def send_message(agent_id: str, body: dict, channel: str, filter_event=None):
    """Start a turn and answer it as JSON or as an SSE stream."""
    inp = chat_input(body, channel=channel)
    return answer_turn(service().start_turn(agent_id, g.principal, inp), filter_event)


def answer_turn(turn, filter_event=None):
    """A started turn's answer: JSON once it ends, or its run's events as SSE."""
    if not turn.inp.stream:
        return jsonify(run_to_completion(state().runs.begin(turn)))
    run = start_run(turn)
    events = sse_stream(run.id, run.follow(), filter_event, release=connection_releaser(state().db),
                        on_leave=run.leave if stop_on_leave(turn.agent) else None)
    return Response(stream_with_context(events), mimetype="text/event-stream", headers=SSE_HEADERS)


@bp.post("/api/agents/<agent_id>/chat")
def post_chat(agent_id):
    body = json_body(request)
    service().agent(agent_id, g.principal)  # before a replay: a key limited to other agents gets 404
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
    deleted = store.clear_messages(agent_id, g.principal.user_id, conversation_id,
                                   state().config.turn_lease_seconds)
    return jsonify({"success": True, "deleted": deleted})


def websocket_session(ws, agent_id: str, channel: str = "ws", filter_event=None) -> None:
    """Serve turns over one socket, one at a time; `{"type": "cancel"}` stops the running one."""
    try:
        service().agent(agent_id, g.principal)
    except ApiError as exc:
        ws.send(error_frame(exc.code, exc.message))
        return
    while True:
        body = ws_next_message(ws, state().config.ws_idle_timeout)
        if body is None:
            return  # the socket closed, or the server is shutting down
        if body.get("type") == "decision":
            _ws_decision(ws, agent_id, body, channel, filter_event)
        else:
            _ws_turn(ws, agent_id, body, channel, filter_event)


def _ws_decision(ws, agent_id, body, channel, filter_event) -> None:
    """A person's decision on a held tool call; the resumed run streams on this socket."""
    from agentd.api.approvals import ws_decision
    turn = ws_decision(ws, agent_id, body, channel, filter_event)
    if turn is None:
        return
    connection_releaser(state().db)()
    run = start_run(turn)
    ws_stream(ws, run, filter_event, on_leave=run.leave if stop_on_leave(turn.agent) else None)


def _drop_connection() -> None:
    try:
        state().db.close()  # the pool discards a connection that broke
    except Exception:  # noqa: BLE001 — it is broken anyway; the next message connects afresh
        pass


def _ws_turn(ws, agent_id, body, channel, filter_event) -> None:
    try:
        turn = service().start_turn(agent_id, g.principal, chat_input({**body, "stream": True}, channel))
    except ApiError as exc:
        ws.send(error_frame(exc.code, exc.message))
        return
    except Exception as exc:
        unavailable = unavailable_error(exc)  # the database is away: say so, keep the socket
        if unavailable is None:
            raise
        ws.send(error_frame(unavailable.code, unavailable.message))
        _drop_connection()  # a broken connection must not be this socket's next one
        return
    run = start_run(turn)
    ws_stream(ws, run, filter_event, on_leave=run.leave if stop_on_leave(turn.agent) else None)
