"""The operator's JSON routes under /api/admin: usage, every user's conversations, a trace.

Only admin principals (an admin key, or the local user in open local mode) get
past `before_request`; everyone else gets 403 FORBIDDEN, whatever the route.
"""
from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from agentd.api.validation import int_arg
from agentd.errors import Forbidden
from agentd.operators import conversations, usage

bp = Blueprint("admin", __name__, url_prefix="/api/admin")


@bp.before_request
def _admins_only():
    principal = g.get("principal")
    if principal is None or not getattr(principal, "admin", False):
        raise Forbidden("This route needs an admin key")


@bp.get("/usage")
def usage_route():
    args = request.args
    return jsonify(usage.usage_report(args.get("group_by", "day"), args.get("from"), args.get("to"),
                                      args.get("agent") or None))


@bp.get("/conversations")
def conversations_route():
    args = request.args
    return jsonify(conversations.list_all(agent=args.get("agent") or None, user=args.get("user") or None,
                                          q=args.get("q") or None, limit=int_arg(args, "limit", 50, 1, 100),
                                          before=args.get("before") or None))


@bp.get("/conversations/<conversation_id>")
def conversation_route(conversation_id):
    return jsonify(conversations.detail(conversation_id))
