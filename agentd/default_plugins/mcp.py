"""MCP servers as tool sources: an agent's `mcp_servers:` become tools of each run (docs/mcp.md).

A built-in plugin like the others: one `run_tools` implementation. The SDK is
imported on the first run of an agent that has servers, never at start-up.
"""
from __future__ import annotations

import logging

from agentd import hookimpl

log = logging.getLogger("agentd.mcp")

NOTE = ("The tools of these MCP servers are unavailable right now: {names}. "
        "Answer without them, and say so if the user needs them.")


@hookimpl(trylast=True)
def run_tools(run, tool_context):
    block = run.agent.setting("mcp_servers")
    if not block:
        return None
    from agentd.mcp.tools import run_tools as mcp_run_tools
    try:
        tools, missing = mcp_run_tools(block, tool_context, set(run.agent.tools))
    except Exception:  # never a failed turn: the model answers without these tools
        log.exception("MCP tools unavailable for agent %s", run.agent.id)
        tools, missing = {}, list(block)
    if missing:
        run.system_notes.append(NOTE.format(names=", ".join(missing)))
    return tools
