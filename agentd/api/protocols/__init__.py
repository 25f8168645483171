"""Other clients' protocols, each a thin projection of the one chat path (see base.py).

OpenAI Chat Completions and Responses (`/v1/…`), AG-UI (`…/agui`), the AI SDK
UI message stream (`…/ui-chat`) and agents as MCP tools (`/mcp`).
"""
from __future__ import annotations

from flask import Flask

PROTECTED_PREFIXES = ("/v1/", "/mcp")  # behind a key like /api/ (see agentd.api.authenticate)


def register(app: Flask) -> None:
    from agentd.api.protocols import agui, mcp_server, openai, responses, ui_stream

    for module in (openai, responses, agui, ui_stream, mcp_server):
        app.register_blueprint(module.bp)
    app.after_request(openai.reshape_errors)
