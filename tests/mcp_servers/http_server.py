"""A Streamable HTTP MCP server for tests, written with the `mcp` SDK (MCPServer).

`python tests/mcp_servers/http_server.py PORT`: serves /mcp on 127.0.0.1:PORT.
Its tools report the headers each call arrived with, sleep, raise, and return
structured content and an image, so tests can see what agentd sends and makes of it.
"""
import asyncio
import base64
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.utilities.types import Image

server = MCPServer("test-http")

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@server.tool()
def whoami(ctx: Context) -> dict:
    """The Authorization and X-User-Id headers this call carried."""
    headers = ctx.request_context.request.headers
    return {"authorization": headers.get("authorization"), "user": headers.get("x-user-id")}


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "finally"


@server.tool()
async def steps(ctx: Context) -> str:
    """Work in two steps, reporting progress."""
    for step in (1, 2):
        await ctx.report_progress(step, 2, message=f"step {step} of 2")
        await asyncio.sleep(0.05)
    return "both steps done"


@server.tool()
def explode(reason: str) -> str:
    """Always raises."""
    raise RuntimeError(f"exploded: {reason}")


@server.tool()
def weather(city: str) -> dict:
    """Structured weather for a city."""
    return {"city": city, "temperature_c": 21}


@server.tool()
def picture() -> Image:
    """A one-pixel PNG."""
    return Image(data=PNG, format="png")


@server.tool()
def hidden() -> str:
    """A tool the allowlist leaves out."""
    return "should not be offered"


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
