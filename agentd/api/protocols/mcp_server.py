"""Agents as an MCP server: `POST /mcp` (Streamable HTTP, stateless, JSON responses).

Every agent the caller's key may use is a tool named by the agent id, input
`{message, conversation_id?}`; the result is the final answer's text (never
the reasoning) with `structuredContent` `{conversation_id, usage}`. A failed
turn is a tool result with `isError` (the calling model should see it), an
unknown tool or bad arguments a JSON-RPC error.

How the official SDK is driven. Its server is ASGI on asyncio (anyio), while
agentd serves Flask, under gevent in production, where an asyncio loop
cannot wait on a turn: every greenlet of a worker shares one OS thread, and
asyncio allows one running loop per thread. So each request drives the SDK's
stateless JSON transport (`StreamableHTTPSessionManager`, a fresh one per
request around one low-level `Server`) to completion with nothing but
in-memory work: under gevent in a real thread of the hub's threadpool,
otherwise in the request's own thread. A `tools/call` takes two passes: the
first lets the SDK parse, negotiate and validate the request and records the
call its handler was asked for; the turn then runs here, in the request's
greenlet, through the same chat path as every route; the second pass answers
it. The turn runs only for a request the SDK accepted.

Origin: a browser page on another site must not drive a local agent (DNS
rebinding), so a request carrying an `Origin` other than this server's own is
refused with 403, as the MCP transport specification requires.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import mcp_types as types
from flask import Blueprint, Response, g, request
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError

from agentd import __version__
from agentd.api.protocols.base import drive, final_of, refuse_widget_sessions, state
from agentd.errors import ApiError, Forbidden
from agentd.vocab import ChatInput

bp = Blueprint("mcp_server", __name__)
bp.before_request(refuse_widget_sessions)

INPUT_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["message"],
    "properties": {"message": {"type": "string", "minLength": 1, "description": "The user's message"},
                   "conversation_id": {"type": "string",
                                       "description": "Continue this conversation (from an earlier result)"}}}
OUTPUT_SCHEMA = {
    "type": "object", "required": ["conversation_id", "usage"],
    "properties": {"conversation_id": {"type": "string"},
                   "usage": {"type": "object", "properties": {
                       "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
                       "total_tokens": {"type": "integer"}}}}}


@dataclass
class _Exchange:
    """One HTTP request's dealings with the SDK: the tools offered, the call asked for, its result."""

    tools: list[types.Tool]
    call: tuple[str, dict] | None = None
    result: types.CallToolResult | None = None
    names: set = field(default_factory=set)


def _tools() -> list[types.Tool]:
    allowed = g.principal.agents
    return [types.Tool(name=agent.id, title=agent.name, description=agent.setting("description") or agent.name,
                       input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA)
            for agent in state().agents.values() if allowed is None or agent.id in allowed]


def _arguments(exchange: _Exchange, name: str, arguments: dict | None) -> dict:
    """The call's arguments, or the JSON-RPC error the SDK sends for bad ones."""
    if name not in exchange.names:
        raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")
    arguments = arguments or {}
    message, conversation_id = arguments.get("message"), arguments.get("conversation_id")
    if not isinstance(message, str) or not message.strip():
        raise MCPError(types.INVALID_PARAMS, "message: required, a non-empty string")
    if conversation_id is not None and not isinstance(conversation_id, str):
        raise MCPError(types.INVALID_PARAMS, "conversation_id: must be a string")
    extra = set(arguments) - {"message", "conversation_id"}
    if extra:
        raise MCPError(types.INVALID_PARAMS, f"{sorted(extra)[0]}: unknown argument")
    return arguments


def _server(exchange: _Exchange) -> Server:
    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=exchange.tools)

    async def call_tool(ctx, params) -> types.CallToolResult:
        arguments = _arguments(exchange, params.name, params.arguments)
        if exchange.result is not None:
            return exchange.result
        exchange.call = (params.name, arguments)  # first pass: the turn runs outside the loop
        return types.CallToolResult(content=[], is_error=True)

    return Server("agentd", version=__version__, description="agentd's agents, each as a tool",
                  on_list_tools=list_tools, on_call_tool=call_tool)


# -- driving the SDK's ASGI transport from a WSGI request --------------------------------

def _scope(body: bytes) -> dict:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
    environ = request.environ  # the server's own name and port: a Host header may say anything
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
            "scheme": request.scheme, "path": request.path, "raw_path": request.path.encode(),
            "query_string": request.query_string, "root_path": "", "headers": headers,
            "client": (request.remote_addr or "", 0),
            "server": (environ.get("SERVER_NAME", ""), int(environ.get("SERVER_PORT") or 80))}


async def _asgi_exchange(exchange: _Exchange, scope: dict, body: bytes) -> tuple[int, list, bytes]:
    manager = StreamableHTTPSessionManager(_server(exchange), json_response=True, stateless=True)
    sent = {"status": 500, "headers": [], "body": b""}
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves mid-request here

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"], sent["headers"] = message["status"], message.get("headers", [])
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    async with manager.run():
        await manager.handle_request(scope, receive, send)
    return sent["status"], sent["headers"], sent["body"]


def _run(coroutine_factory):
    """Run an in-memory asyncio job to completion without blocking other greenlets."""
    try:
        from gevent import get_hub, monkey
        patched = monkey.is_module_patched("threading")
    except ImportError:
        patched = False
    if patched:
        return get_hub().threadpool.apply(asyncio.run, (coroutine_factory(),))
    return asyncio.run(coroutine_factory())


def _answer(agent_id: str, arguments: dict) -> types.CallToolResult:
    """Run the agent's turn through the one chat path; a failure is an `isError` result."""
    inp = ChatInput(message=arguments["message"], conversation_id=arguments.get("conversation_id"),
                    channel="mcp")
    try:
        turn = state().chat.start_turn(agent_id, g.principal, inp)
        final = final_of(drive(turn))
    except ApiError as exc:
        return types.CallToolResult(content=[types.TextContent(text=f"{exc.code}: {exc.message}")],
                                    is_error=True)
    return types.CallToolResult(content=[types.TextContent(text=final.get("content") or "")],
                                structured_content={"conversation_id": final["conversation_id"],
                                                    "usage": final.get("usage")})


def _check_origin() -> None:
    origin = request.headers.get("Origin")
    if origin is not None and origin != request.host_url.rstrip("/"):
        raise Forbidden("Origin: requests from other sites' pages are refused")


@bp.post("/mcp")
def mcp_endpoint():
    _check_origin()
    body = request.get_data(cache=True)
    tools = _tools()
    exchange = _Exchange(tools=tools, names={t.name for t in tools})
    scope = _scope(body)
    status, headers, payload = _run(lambda: _asgi_exchange(exchange, scope, body))
    if exchange.call is not None:
        exchange.result = _answer(*exchange.call)
        status, headers, payload = _run(lambda: _asgi_exchange(exchange, scope, body))
    return _response(status, headers, payload)


def _response(status: int, headers: list, payload: bytes) -> Response:
    """The SDK's answer; its few plain-text refusals (bad media type…) as JSON-RPC errors."""
    named = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
    if status >= 400 and not named.get("content-type", "").startswith("application/json"):
        text = payload.decode("utf-8", "replace").strip() or "Invalid request"
        error = {"jsonrpc": "2.0", "id": None, "error": {"code": types.INVALID_REQUEST, "message": text}}
        return Response(json.dumps(error), status=status, mimetype="application/json")
    response = Response(payload, status=status)
    for name, value in named.items():
        if name not in ("content-length", "transfer-encoding"):
            response.headers[name] = value
    return response
