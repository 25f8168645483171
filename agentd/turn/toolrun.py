"""Running one step's tool calls: concurrently, each validated and timed out, errors as data.

No Flask or peewee here. Progress (`status`) and results come back as events
in the order the calls were made, while status lines flow as they happen.
"""
from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Iterator

from agentd.tools import (Tool, ToolContext, ToolError, frame_untrusted, offload, result_text,
                          validate_arguments)
from agentd.tools.hooks import ToolHooks
from agentd.vocab import Event, ToolCall, ToolResult

log = logging.getLogger("agentd.tools")

# Each call's orchestration (validation, hooks, waiting): a greenlet under gevent's
# patching. The tool function itself runs in agentd.tools.offload's pool unless it
# is cooperative, so CPU work and C calls never hold the hub.
_pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="agentd-tool")


@dataclass
class ToolRunSettings:
    timeout: float = 30.0
    max_output_chars: int = 20000
    max_parallel: int = 8  # calls of one model step that run; the rest get TOO_MANY


TOO_MANY = "too many tool calls in one step"


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[truncated: {len(text) - limit} more characters]"


def _error(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(call.id, call.name, f"Error: {message}", is_error=True)


def _call(tool: Tool, arguments: dict, ctx: ToolContext, deadline: float):
    """The tool function, off the hub unless it is cooperative, within what is left of its time."""
    if tool.cooperative:
        return tool.call(arguments, ctx)
    ctx = replace(ctx, status=offload.hub_callback(ctx.status))
    try:
        return offload.run(tool.call, arguments, ctx, timeout=deadline - time.monotonic())
    except offload.Expired:
        raise ToolError("the tool timed out") from None


def _execute(tool: Tool, call: ToolCall, ctx: ToolContext, hooks: ToolHooks, deadline: float) -> ToolResult:
    """Validate, call hooks and the tool; every failure becomes an error result."""
    try:
        arguments = validate_arguments(tool, call.arguments)
        for before in hooks.before:
            arguments = before(tool, arguments, ctx) or arguments
        cached = next((c for c in (look(tool, arguments, ctx) for look in hooks.lookup) if c is not None), None)
        if cached is not None:
            result = ToolResult(call.id, call.name, cached)
        else:
            result = ToolResult(call.id, call.name, _model_text(tool, _call(tool, arguments, ctx, deadline)))
    except ToolError as exc:
        return _error(call, str(exc))
    except Exception as exc:  # a tool's bug is the model's information, never a 500
        log.warning("tool %s raised %s", call.name, exc.__class__.__name__, exc_info=True)
        return _error(call, f"{exc.__class__.__name__}: {exc}")
    for after in hooks.after:
        result = after(tool, arguments, result, ctx) or result
    return result


def _model_text(tool: Tool, value) -> str:
    text = result_text(value)
    return frame_untrusted(f"returned by the {tool.name} tool", text) if tool.untrusted else text


def run_tool_calls(calls: list[ToolCall], tools: dict[str, tuple[Tool, ToolContext]],
                   settings: ToolRunSettings, hooks: ToolHooks | None = None) -> Iterator[Event]:
    """Run calls concurrently; yield `status` events as they come, then one `tool_result` each."""
    hooks = hooks or ToolHooks()
    inbox: queue.Queue = queue.Queue()
    results: dict[int, ToolResult] = {}
    pending, started = {}, {}
    for index, call in enumerate(calls):
        if index >= settings.max_parallel:
            # Each call may hold a thread and a connection: one step cannot ask for hundreds.
            results[index] = _error(call, TOO_MANY)
            continue
        if call.name not in tools:
            results[index] = _error(call, f"unknown tool '{call.name[:100]}'")
            continue
        tool, ctx = tools[call.name]
        ctx = replace(ctx, status=lambda message, name=call.name: inbox.put(("status", message, name)))
        if tool.status_message:
            inbox.put(("status", tool.status_message, call.name))
        timeout = tool.timeout or settings.timeout
        pending[index] = time.monotonic() + timeout
        started[index] = time.monotonic()
        _pool.submit(_worker, index, tool, call, ctx, hooks, inbox, pending[index])
    yield from _collect(calls, pending, results, inbox)
    for index in range(len(calls)):
        result = results[index]
        if result.duration_ms is None:  # timed out, or refused before it ran
            result.duration_ms = round((time.monotonic() - started[index]) * 1000) if index in started else 0
        result.content = _truncate(result.content, settings.max_output_chars)
        yield Event("tool_result", {"tool_call_id": result.tool_call_id, "name": result.name,
                                    "content": result.content, "is_error": result.is_error},
                    payload=result)


def _worker(index, tool, call, ctx, hooks, inbox, deadline) -> None:
    if time.monotonic() >= deadline:
        return  # timed out while queued (the collector reported it): never starts late
    started = time.monotonic()
    result = _execute(tool, call, ctx, hooks, deadline)
    result.duration_ms = round((time.monotonic() - started) * 1000)  # the trace's tool time
    inbox.put(("result", index, result))


def _collect(calls, pending, results, inbox) -> Iterator[Event]:
    """Wait for the workers until each finished or hit its deadline."""
    while pending:
        wait = max(0.0, min(pending.values()) - time.monotonic())
        try:
            item = inbox.get(timeout=wait)
        except queue.Empty:
            now = time.monotonic()
            for index in [i for i, deadline in pending.items() if deadline <= now]:
                del pending[index]
                results[index] = _error(calls[index], "the tool timed out")
            continue
        if item[0] == "status":
            yield _status(item)
        elif item[1] in pending:
            del pending[item[1]]
            results[item[1]] = item[2]
    while not inbox.empty():  # status lines that raced with the last result
        item = inbox.get_nowait()
        if item[0] == "status":
            yield _status(item)


def _status(item) -> Event:
    """A tool's progress line; `tool` names the tool (the widget hides lines that quote arguments)."""
    return Event("status", {"message": str(item[1])[:200], "tool": item[2]})
