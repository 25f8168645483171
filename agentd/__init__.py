"""agentd: a self-hosted agent platform. The public plugin API is what this module exports."""
from agentd.hookspecs import hookimpl
from agentd.tools import Tool, ToolContext, ToolError, Toolset, frame_untrusted
from agentd.vocab import Verdict

__version__ = "0.1.0"
__all__ = ["hookimpl", "Tool", "ToolContext", "ToolError", "Toolset", "Verdict", "frame_untrusted",
           "__version__"]


def create_app(config=None):
    """Build the Flask application (imported lazily so plugins can import agentd cheaply)."""
    from agentd.app import create_app as _create_app
    return _create_app(config)
