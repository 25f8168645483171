"""Agents as an MCP server: `POST /mcp` (placeholder until the SDK bridge lands)."""
from flask import Blueprint

bp = Blueprint("mcp_server", __name__)
