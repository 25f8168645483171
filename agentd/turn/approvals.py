"""Tool calls held for a person's decision: which calls, what the person is asked, and
the results of a decided step when its run resumes.

A call is held when a `needs_approval` hook says so, or, when no hook has an
opinion, when the agent's YAML marks the tool `requires_approval: true` (an MCP
server's tools carry the same flag on the Tool). The question shown is the
entry's `approval_message`, a template over the call's `args` rendered in the
same sandbox as system prompts, or "Run <tool>?"; it never leaks arguments
unless the agent's author put them there.
"""
from __future__ import annotations

import json
import logging
from typing import Iterator

from agentd.store import approvals as approvals_store
from agentd.tools import ToolError, validate_arguments
from agentd.templating import compile_template, render_compiled
from agentd.turn.toolrun import run_tool_calls
from agentd.vocab import Event, ToolCall, ToolResult

log = logging.getLogger("agentd.turn.approvals")

MESSAGE_CHARS = 2000


def ttl_seconds(agent) -> int:
    return int((agent.setting("approvals") or {}).get("ttl", approvals_store.DEFAULT_TTL))


def _flagged(agent, tool) -> tuple[bool, str | None]:
    """(requires_approval, approval_message): the agent's entry for the tool, or the Tool
    itself (a tool source such as an MCP server marked `requires_approval` flags its tools)."""
    bound = agent.tools.get(tool.name)
    own = bool(getattr(tool, "requires_approval", False)), getattr(tool, "approval_message", None)
    if bound is None or bound.tool is not tool:
        return own
    return bound.requires_approval or own[0], bound.approval_message or own[1]


def needs_approval(hook, agent, tools: dict, call: ToolCall) -> bool:
    """Whether this call waits for a person. A call that cannot run (unknown tool, bad
    arguments) is not held: it fails at once, as it would anyway."""
    if call.name not in tools:
        return False
    tool, ctx = tools[call.name]
    try:
        arguments = validate_arguments(tool, call.arguments)
    except ToolError:
        return False
    try:
        decided = hook.needs_approval(tool=tool, arguments=arguments, context=ctx)
    except Exception:  # noqa: BLE001 — a failing policy must not let a risky call through
        log.exception("a needs_approval hook failed; holding the call for approval")
        return True
    return _flagged(agent, tool)[0] if decided is None else bool(decided)


def question(agent, tools: dict, call: ToolCall) -> str:
    """What the person is asked about this call."""
    tool = tools[call.name][0] if call.name in tools else None
    template = _flagged(agent, tool)[1] if tool is not None else None
    default = f"Run {call.name}?"
    if not template:
        return default
    try:
        args = json.loads(call.arguments or "{}")
    except (ValueError, RecursionError):
        args = {}
    try:
        text = render_compiled(compile_template(template),
                               {"args": args if isinstance(args, dict) else {}, "tool": call.name})
    except Exception:  # noqa: BLE001 — a template error, its budget, or the sandbox refusing: ask plainly
        log.warning("approval_message of %s failed to render; using the default", call.name)
        return default
    return text.strip()[:MESSAGE_CHARS] or default


def pending_rows(turn, tools: dict, held: list[ToolCall], step_id: int) -> list[dict]:
    """The approval rows for a step's held calls (the store stamps their times)."""
    return [{"id": approvals_store.new_approval_id(), "conversation": turn.conversation_id,
             "agent_id": turn.agent.id, "user_id": turn.principal.user_id, "step_id": step_id,
             "run_id": getattr(turn, "run_id", None) or turn.conversation.run_id,
             # The id comes from the model: cut to the column, as the recorder cuts results' ids.
             "tool_call_id": call.id[:255], "tool_name": call.name, "arguments": call.arguments,
             "message": question(turn.agent, tools, call), "status": "pending"} for call in held]


def required_event(row) -> Event:
    data = approvals_store.public(row)
    data.pop("status", None)
    return Event("approval_required", {"approval": data})


def decided_results(rows, tools: dict, settings, hooks) -> Iterator[Event]:
    """A resumed step's results: denied and expired calls as error results, approved
    ones run with exactly the arguments stored (and shown) when the step paused."""
    for row in rows:
        text = approvals_store.result_text(row)
        if text is not None:
            result = ToolResult(row.tool_call_id, row.tool_name, text, is_error=True)
            yield Event("tool_result", {"tool_call_id": result.tool_call_id, "name": result.name,
                                        "content": result.content, "is_error": True}, payload=result)
    approved = [ToolCall(row.tool_call_id, row.tool_name, row.arguments)
                for row in rows if approvals_store.result_text(row) is None]
    if approved:
        yield from run_tool_calls(approved, tools, settings, hooks)
