"""Plugin discovery with pluggy: the default plugins, the checkout's plugins/, AGENTD_PLUGINS_DIR,
and entry points.

Loading is explicit (`load_plugins`), never at import. Built-in providers and
tools are the modules in `agentd.default_plugins.DEFAULT_PLUGINS`, registered
through the same hooks as anyone else's (the way simonw/llm loads its defaults).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pluggy

from agentd import hookspecs
from agentd.tools import Tool, Toolset, tool_from_function

log = logging.getLogger("agentd.plugins")

# The checkout's user plugin folder (the example plugin lives there); absent in an installed package.
REPO_PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"


class PluginError(Exception):
    """A plugin could not be loaded or registered something invalid."""


@dataclass
class Registry:
    """What the plugins registered: tools, toolsets and provider factories by name."""

    tools: dict[str, Tool | Toolset] = field(default_factory=dict)
    providers: dict[str, Callable] = field(default_factory=dict)
    manager: pluggy.PluginManager | None = None

    def add_tool(self, obj, **options) -> None:
        item = obj if isinstance(obj, (Tool, Toolset)) else tool_from_function(obj, **options)
        # Hook results arrive with installed plugins first; keep the first so they win.
        self.tools.setdefault(item.name, item)

    def add_provider(self, name: str, factory: Callable) -> None:
        self.providers.setdefault(name, factory)


def repo_plugins_dir() -> Path | None:
    """The checkout's plugins/ folder, when agentd runs from a checkout."""
    return REPO_PLUGINS_DIR if REPO_PLUGINS_DIR.is_dir() else None


def _load_module_file(path: Path):
    name = f"agentd_plugin_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise PluginError(f"plugin {path} failed to load: {exc}") from exc
    return module


def plugin_files(dirs: list[Path]) -> list[Path]:
    """Every *.py plugin file in the given folders, in a stable order."""
    files = []
    for folder in dirs:
        if folder and folder.is_dir():
            files += sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    return files


def make_manager(extra_dirs: list[str] | None = None, entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with built-ins, folder plugins and entry-point plugins registered."""
    from agentd.default_plugins import DEFAULT_PLUGINS

    pm = pluggy.PluginManager("agentd")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    dirs = [repo_plugins_dir()] + [Path(d) for d in (extra_dirs or []) if d]
    for path in plugin_files(dirs):
        if pm.get_plugin(str(path)) is None:
            pm.register(_load_module_file(path), name=str(path))
    if entry_points:
        pm.load_setuptools_entrypoints("agentd")
    return pm


def load_plugins(extra_dirs: list[str] | None = None, entry_points: bool = True) -> Registry:
    """Discover every plugin and collect what it registers."""
    registry = Registry(manager=make_manager(extra_dirs, entry_points))
    registry.manager.hook.register_tools(register=registry.add_tool)
    registry.manager.hook.register_providers(register=registry.add_provider)
    log.info("plugins loaded: %d tools, %d providers", len(registry.tools), len(registry.providers))
    return registry


def split_path_list(value: str | None) -> list[str]:
    """Folders from an os.pathsep-separated setting."""
    return [p for p in (value or "").split(os.pathsep) if p.strip()]
