"""agentd: a self-hosted agent platform. The public plugin API is what this module exports."""
from agentd.hookspecs import hookimpl
from agentd.tools import Tool, ToolContext, ToolError, Toolset

__version__ = "0.1.0"
__all__ = ["hookimpl", "Tool", "ToolContext", "ToolError", "Toolset", "Verdict", "__version__"]


def create_app(config=None):
    """Build the Flask application (imported lazily so plugins can import agentd cheaply)."""
    from agentd.app import create_app as _create_app
    return _create_app(config)


def __getattr__(name):
    # Verdict lives with the guardrails, which import storage: load them only when asked for.
    if name == "Verdict":
        from agentd.policies.guardrails import Verdict
        return Verdict
    raise AttributeError(f"module 'agentd' has no attribute {name!r}")
