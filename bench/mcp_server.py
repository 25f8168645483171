"""The MCP server the MCP benchmark calls: one `add` tool, over stdio or Streamable HTTP.

`python bench/mcp_server.py stdio [TTL_MS]` or `python bench/mcp_server.py http PORT`.
With TTL_MS its tools/list results say how long a client may cache them.
"""
import sys

from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer

TTL = int(sys.argv[2]) if sys.argv[1] == "stdio" and len(sys.argv) > 2 else 0
server = MCPServer("bench", cache_hints={"tools/list": CacheHint(ttl_ms=TTL)} if TTL else None)


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    if sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
