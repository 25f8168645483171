"""The conversation routes of docs/api.md: list, read (paged), rename, delete, truncate,
and a conversation's run: attach to its stream, cancel it.

Ownership is checked in the store (`store.owned`) on every route: another
user's conversation is a 403 that names nothing of it.
"""
from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context

from agentd.api.streaming import SSE_HEADERS, connection_releaser, sse_stream
from agentd.api.validation import int_arg, json_body
from agentd.errors import InvalidRequest
from agentd.store import conversations as store
from agentd.store.messages import run_is_live, running

bp = Blueprint("conversations", __name__)


def _state():
    return current_app.extensions["agentd"]


def _owned(conversation_id: str):
    return store.owned(conversation_id, g.principal.user_id, g.principal.agents)


def _paging(default: int = 50) -> tuple[int, int]:
    return int_arg(request.args, "limit", default, 1, 100), int_arg(request.args, "offset", 0, 0)


def _channel() -> str | None:
    channel = request.args.get("channel") or None
    if channel is not None and channel not in store.CHANNELS:
        raise InvalidRequest(f"channel: must be one of {', '.join(store.CHANNELS)}")
    return channel


def _title(body: dict) -> str:
    title = body.get("title")
    if not isinstance(title, str) or not title.strip():
        raise InvalidRequest("title: required, a non-empty string")
    title = title.strip()
    if len(title) > store.TITLE_MAX:
        raise InvalidRequest(f"title: at most {store.TITLE_MAX} characters")
    return title


def _keep(body: dict) -> int:
    keep = body.get("keep")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
        raise InvalidRequest("keep: required, an integer of at least 0")
    return keep


@bp.get("/api/agents/<agent_id>/conversations")
def list_conversations(agent_id):
    _state().chat.agent(agent_id, g.principal)  # 404 for an unknown agent or one outside the key
    limit, offset = _paging()
    rows, total = store.list_conversations(agent_id, g.principal.user_id, limit, offset, _channel())
    return jsonify({"conversations": rows, "total": total})


@bp.get("/api/conversations/<conversation_id>")
def get_conversation(conversation_id):
    conversation = _owned(conversation_id)
    limit, offset = _paging()
    return jsonify(store.messages_page(conversation, limit, offset))


@bp.patch("/api/conversations/<conversation_id>")
def rename_conversation(conversation_id):
    title = _title(json_body(request))
    conversation = store.rename(_owned(conversation_id), title)
    return jsonify(store.describe(conversation))


@bp.delete("/api/conversations/<conversation_id>")
def delete_conversation(conversation_id):
    conversation = _owned(conversation_id)
    store.delete(conversation, _state().config.turn_lease_seconds)
    return jsonify({"success": True})


@bp.post("/api/conversations/<conversation_id>/truncate")
def truncate_conversation(conversation_id):
    keep = _keep(json_body(request))
    conversation = _owned(conversation_id)
    kept, deleted = store.truncate(conversation, keep, _state().config.turn_lease_seconds)
    return jsonify({"success": True, "conversation_id": conversation.id, "kept": kept, "deleted": deleted})


def _resume_point() -> tuple[str | None, int]:
    """(run id, seq) to resume after: `?after=<seq>`, or `Last-Event-ID: <run_id>:<seq>`."""
    after = int_arg(request.args, "after", None, 0)
    header = request.headers.get("Last-Event-ID")
    if not header:
        return None, after or 0
    run_id, _, seq = header.strip().rpartition(":")
    if not run_id.startswith("run_") or not seq.isdigit():
        raise InvalidRequest("Last-Event-ID: expected '<run_id>:<seq>' as sent in the stream's id lines")
    return run_id, after if after is not None else int(seq)


def attach(conversation_id: str, filter_event=None):
    """The conversation's running run as SSE, replayed after the resume point; 204 when none runs."""
    conversation = _owned(conversation_id)
    run_id, after = _resume_point()
    runs, now = _state().runs, running(conversation)
    watched = runs.watch(conversation.id, now, after, run_id, still_running=_live_check(conversation.id))
    if watched is None and run_id is not None and now is not None:
        watched = runs.watch(conversation.id, now, 0, None, still_running=_live_check(conversation.id))
    if watched is None:
        return Response(status=204)
    events = sse_stream(*watched, filter_event, release=connection_releaser(_state().db))
    return Response(stream_with_context(events), mimetype="text/event-stream", headers=SSE_HEADERS)


def _live_check(conversation_id: str):
    database = _state().db

    def still_running(run_id: str) -> bool:
        with database.connection_context():
            return run_is_live(conversation_id, run_id)
    return still_running


@bp.get("/api/conversations/<conversation_id>/stream")
def stream_conversation(conversation_id):
    return attach(conversation_id)


def cancel(conversation_id: str):
    """Cancel the conversation's run, wherever it runs."""
    conversation = _owned(conversation_id)
    run_id = _state().runs.cancel(conversation.id, running(conversation))
    return jsonify({"cancelled": True, "run_id": run_id} if run_id else {"cancelled": False})


@bp.post("/api/conversations/<conversation_id>/cancel")
def cancel_conversation(conversation_id):
    return cancel(conversation_id)
