"""MCP servers as tool sources (the official `mcp` SDK, 2.x); see docs/mcp.md.

- config: the `mcp_servers:` block (checks, per-caller headers)
- runtime: the per-process asyncio loop thread and gevent-friendly waiting
- stdio: the stdio transport's spawn and environment seams
- client: sessions (stdio per process, HTTP per caller's headers), list caching
- tools: the tools of one run, their names and results
The SDK is imported only when an agent has MCP servers (config needs it not).
"""
