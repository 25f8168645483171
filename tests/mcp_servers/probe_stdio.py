"""A stdio MCP server for tests, written with the `mcp` SDK: it reports what it can see.

Run as `python tests/mcp_servers/probe_stdio.py`; `--die` exits at once (a server that fails to start);
`--ttl MS` lets clients cache its tool list that long (the SDK's default is 0: immediately stale).
"""
import os
import sys

from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer

TTL = int(sys.argv[sys.argv.index("--ttl") + 1]) if "--ttl" in sys.argv else 0
server = MCPServer("probe", cache_hints={"tools/list": CacheHint(ttl_ms=TTL)} if TTL else None)
lists = [0]
_list_tools = server.list_tools


async def counted_list_tools():
    lists[0] += 1
    return await _list_tools()


server.list_tools = counted_list_tools  # the handler looks it up on the instance


@server.tool()
def list_count() -> int:
    """How many times this server answered tools/list."""
    return lists[0]


@server.tool()
def environment() -> dict:
    """The names of the environment variables this process received."""
    return {"names": sorted(os.environ), "FOO": os.environ.get("FOO")}


@server.tool()
def pid() -> int:
    """This server process's id."""
    return os.getpid()


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(name="a_deliberately_long_tool_name_that_goes_past_the_sixty_four_character_limit")
def long_named(text: str) -> str:
    """Echo text back, from a tool whose name is too long for providers."""
    return f"long: {text}"


if __name__ == "__main__":
    if "--die" in sys.argv:
        sys.exit(3)
    server.run("stdio")
