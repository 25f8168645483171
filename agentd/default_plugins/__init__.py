"""The tools and providers that ship with agentd, registered through the same hooks as a user's plugin.

`DEFAULT_PLUGINS` names the modules; `agentd.plugins` registers each of them
before any user plugin, with `trylast` implementations so installed plugins win.
"""
DEFAULT_PLUGINS = (
    "agentd.default_plugins.providers",
    "agentd.default_plugins.web_search",
    "agentd.default_plugins.web_fetch",
    "agentd.default_plugins.db_lookup",
    "agentd.default_plugins.mcp",
)
