"""The HTTP layer: blueprints, authentication per request, error shapes. Nothing imports it."""
from __future__ import annotations

import logging

from flask import Flask, current_app, g, jsonify, request
from flask_sock import Sock

from agentd.api.errors import register_error_handlers
from agentd.auth import any_key_exists, bearer_principal

log = logging.getLogger("agentd.api")

OPEN_PATHS = ("/healthz", "/metrics", "/widget.js", "/api/openapi.json", "/")
sock = Sock()


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or not path.startswith("/api/")


def authenticate():
    """Pick the user for /api/ routes: a bearer key, another authenticator, or open local mode."""
    state = current_app.extensions["agentd"]
    if _is_open(request.path) or request.method == "OPTIONS":
        return None
    for authenticator in state.authenticators:
        principal = authenticator(request)
        if principal is not None:
            g.principal = principal
            return None
    g.principal = bearer_principal(request.headers.get("Authorization"), not any_key_exists())
    return None


def healthz():
    state = current_app.extensions["agentd"]
    try:
        state.db.execute_sql("SELECT 1")
        database = "ok"
    except Exception:
        database = "error"
    status = 200 if database == "ok" else 503
    return jsonify({"status": "ok" if status == 200 else "degraded", "database": database,
                    "agents": len(state.agents)}), status


def register_api(app: Flask) -> None:
    from agentd.api import chat, conversations

    register_error_handlers(app)
    app.before_request(authenticate)
    from agentd.api import widget
    app.register_blueprint(widget.bp)
    app.add_url_rule("/healthz", "healthz", healthz)
    from agentd.api import openapi
    openapi.register(app)
    app.register_blueprint(chat.bp)
    app.register_blueprint(conversations.bp)
    sock.init_app(app)

    @sock.route("/api/agents/<agent_id>/ws")
    def agent_socket(ws, agent_id):
        chat.websocket_session(ws, agent_id)
