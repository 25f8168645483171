"""The conversation routes of docs/api.md: list, read (paged), rename, delete, truncate.

Ownership is checked in the store (`store.owned`) on every route: another
user's conversation is a 403 that names nothing of it.
"""
from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from agentd.api.validation import int_arg, json_body
from agentd.errors import InvalidRequest
from agentd.store import conversations as store

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
