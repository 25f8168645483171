"""MCP servers' tools as agentd Tools for one run: listing, naming, calling, results.

The model sees `<server>__<tool>` (cut to 64 characters with a short hash when
longer or not made of letters, digits, `_` and `-`), with the server's
description and input schema. Each run builds its tools afresh from the
cached listings, bound to that caller's headers, so the tool objects never
carry another user's credentials. Everything that talks to a server runs on
the loop thread (agentd.mcp.runtime) and is bounded by the server's `timeout`.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass

from mcp.shared.exceptions import MCPError

from agentd.mcp import runtime, stdio
from agentd.mcp.client import Hub, describe, headers_key
from agentd.mcp.config import ServerSpec, ServerUnavailable, render_headers, server_specs
from agentd.tools import Tool, ToolContext, ToolError

log = logging.getLogger("agentd.mcp")

NAME_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SEPARATOR = "__"
_hub_lock = threading.Lock()


def public_name(server: str, tool: str) -> str:
    """The name the model sees for one server's tool (provider limit: 64 of [A-Za-z0-9_-])."""
    raw = f"{server}{SEPARATOR}{tool}"
    if NAME_OK.match(raw):
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw)[:55] + "_" + digest


def hub() -> Hub:
    """This process's MCP sessions, created with its loop thread and stopped at exit."""
    thread = runtime.loop_thread()
    with _hub_lock:
        if getattr(thread, "hub", None) is None:
            stdio.install()
            thread.hub = Hub()
            runtime.on_shutdown(thread.hub.close_all)
        return thread.hub


def _media(block) -> str:
    size = len(block.data) * 3 // 4
    return f"[{block.type} ({block.mime_type}, about {size} bytes) returned by the tool; not shown]"


def _block_text(block) -> str | None:
    if block.type == "text":
        return block.text
    if block.type in ("image", "audio"):
        return _media(block)  # never inlined: base64 would fill the context window
    if block.type == "resource_link":
        return f"[{block.name}]({block.uri})"
    if block.type == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        return text if text is not None else f"[resource {resource.uri} ({resource.mime_type or 'binary'})]"
    return None


def result_content(result) -> str:
    """A CallToolResult as the tool message's text; an MCP tool error raises ToolError.

    Text blocks as they are (a server sends its structured content as text too,
    worded for a model); structured content as JSON when no text came with it;
    images and audio as placeholders, resource links as links.
    """
    parts = [text for text in (_block_text(b) for b in result.content) if text is not None]
    has_text = any(block.type == "text" for block in result.content)
    if result.structured_content is not None and not has_text and not result.is_error:
        parts.insert(0, json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text = "\n".join(parts)
    if result.is_error:
        raise ToolError(text or "the tool reported an error")
    return text


@dataclass
class McpTool(Tool):
    """A server's tool, bound to one run's caller (their rendered headers)."""

    spec: ServerSpec = None
    remote_name: str = ""
    headers: dict | None = None

    @property
    def requires_approval(self) -> bool:
        return self.spec.requires_approval

    def call(self, arguments: dict, ctx: ToolContext):
        # The server's progress messages become the run's `status` events, like a tool's ctx.status.
        relay = runtime.Relay(ctx.status)

        async def progress(value: float, total: float | None, message: str | None) -> None:
            if message:
                relay.post(message)

        coro = asyncio.wait_for(hub().call_tool(self.spec, self.headers, self.remote_name, arguments, progress),
                                self.spec.timeout)
        try:
            result = runtime.run(coro, self.spec.timeout + 1, relay)
        except (asyncio.TimeoutError, TimeoutError):
            raise ToolError(f"the MCP server '{self.spec.name}' did not answer within {self.spec.timeout:g} s") from None
        except ServerUnavailable as exc:
            raise ToolError(f"the MCP server '{self.spec.name}' is unavailable ({exc})") from None
        except MCPError as exc:
            raise ToolError(f"the MCP server '{self.spec.name}' refused the call: {exc}") from None
        return result_content(result)


def _make_tool(spec: ServerSpec, remote, headers: dict | None) -> McpTool:
    return McpTool(name=public_name(spec.name, remote.name),
                   description=remote.description or remote.title or remote.name,
                   parameters=remote.input_schema or {"type": "object"}, func=None,
                   timeout=spec.timeout + 2, spec=spec, remote_name=remote.name, headers=headers,
                   # The call only waits (on the loop thread), so it stays in the turn's greenlet;
                   # what a server returns is outside text, framed as data for the model.
                   cooperative=True, untrusted=True)


async def _list_all(specs: list[ServerSpec], headers: dict) -> list:
    async def one(spec):
        return await asyncio.wait_for(hub().list_tools(spec, headers.get(spec.name)), spec.timeout + 0.5)
    return await asyncio.gather(*(one(s) for s in specs), return_exceptions=True)


def _reason(exc: BaseException, spec: ServerSpec) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"did not answer within {spec.timeout:g} s"
    return str(exc) if isinstance(exc, ServerUnavailable) else describe(exc)


def run_tools(block: dict | None, base: ToolContext, taken: set[str]) -> tuple[dict, list[str]]:
    """({name: (Tool, ToolContext)}, names of servers left out) for one run."""
    specs = server_specs(block)
    variables = {"user": {"id": base.user_id}, "context": base.context or {}, "agent": {"id": base.agent_id}}
    headers, usable, missing = {}, [], []
    for spec in specs:
        try:
            headers[spec.name] = render_headers(spec, variables) if spec.transport == "http" else None
            usable.append(spec)
        except ServerUnavailable as exc:
            log.warning("MCP server %s of agent %s left out: %s", spec.name, base.agent_id, exc)
            missing.append(spec.name)
    outcomes = runtime.run(_list_all(usable, headers), max((s.timeout for s in usable), default=0) + 2) if usable else []
    tools: dict = {}
    for spec, outcome in zip(usable, outcomes):
        if isinstance(outcome, BaseException):
            log.warning("MCP server %s of agent %s left out: %s", spec.name, base.agent_id, _reason(outcome, spec))
            missing.append(spec.name)
            continue
        tools.update(_bind(spec, outcome, headers[spec.name], base, taken | set(tools)))
    return tools, missing


def _bind(spec: ServerSpec, listed: list, headers: dict | None, base: ToolContext, taken: set) -> dict:
    caller = headers_key(spec, headers)[:16] if headers else None
    # The result cache keys on ctx.config: a per-caller part keeps users' results apart.
    ctx = ToolContext(**{**base.__dict__, "config": {"mcp_server": spec.name, "caller": caller}})
    bound = {}
    for remote in listed:
        if spec.tools is not None and remote.name not in spec.tools:
            continue
        tool = _make_tool(spec, remote, headers)
        if tool.name in taken or tool.name in bound:
            log.warning("MCP tool %s of server %s clashes with another tool's name; left out", remote.name, spec.name)
            continue
        bound[tool.name] = (tool, ctx)
    return bound
