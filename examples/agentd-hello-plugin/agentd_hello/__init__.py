"""agentd-hello-plugin: the smallest installable agentd plugin.

The `agentd` entry point in pyproject.toml names this module; agentd imports it
and calls its hook implementations like those of any plugin file.
"""
from agentd import ToolContext, ToolError, hookimpl

CONFIG_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"greeting": {"type": "string", "minLength": 1, "default": "Hello"}},
}


def hello(name: str, ctx: ToolContext, excited: bool = False) -> str:
    """Greet someone by name."""
    if not name.strip():
        raise ToolError("tell me whom to greet")
    greeting = (ctx.config or {}).get("greeting", "Hello")
    return f"{greeting}, {name.strip()}{'!' if excited else '.'}"


@hookimpl
def register_tools(register):
    register(hello, config_schema=CONFIG_SCHEMA, status_message="Saying hello…")
