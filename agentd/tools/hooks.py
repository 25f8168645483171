"""The pluggy tool-call hooks and the tool-result cache, as the ToolHooks the loop runs.

`tool_hooks_from(manager)` is what the chat service calls once per app:
- `before_tool_call` implementations may replace the arguments or refuse the
  call (ToolError); `after_tool_call` ones may replace the result.
- Results of tools with a `cache_ttl` (web_search, web_fetch) are kept in
  process memory, keyed by tool name + the agent's config for the tool + the
  canonical arguments, so two agents with different limits never share an
  answer. Errors are never cached. The cache is bounded (LRU by entries and
  by characters) because results can be large pages.
A cached answer is served through `ToolHooks.lookup`, and still passes through
the after hooks, so an auditing plugin sees every call.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from agentd.tools import Tool, ToolContext, ToolError
from agentd.vocab import ToolResult


@dataclass
class ToolHooks:
    """Plugin hooks around each call: `before(tool, args, ctx)` may return new args or raise
    ToolError to refuse; `after(tool, args, result, ctx)` may return a replaced ToolResult."""

    before: list[Callable] = field(default_factory=list)
    after: list[Callable] = field(default_factory=list)
    lookup: list[Callable] = field(default_factory=list)  # (tool, args, ctx) -> cached content or None


def cache_key(tool: Tool, arguments: dict, ctx: ToolContext) -> str:
    """Tool name + per-agent config + arguments, canonical JSON, hashed."""
    canonical = json.dumps([tool.name, ctx.config or {}, arguments], sort_keys=True,
                           separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ToolCache:
    """An in-process LRU of tool results with per-entry expiry; thread-safe."""

    def __init__(self, max_entries: int = 1024, max_chars: int = 20_000_000, clock=time.monotonic):
        self.max_entries, self.max_chars, self.clock = max_entries, max_chars, clock
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] <= self.clock():
                if item is not None:
                    self._drop(key)
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: str, content: str, ttl: float) -> None:
        if ttl <= 0 or len(content) > self.max_chars:
            return
        with self._lock:
            if key in self._items:
                if self._items[key][0] > self.clock():
                    return  # a hit passing through the after hooks must not extend its life
                self._drop(key)
            self._items[key] = (self.clock() + ttl, content)
            self._chars += len(content)
            while len(self._items) > self.max_entries or self._chars > self.max_chars:
                self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        _, content = self._items.pop(key)
        self._chars -= len(content)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._chars = 0


def caching_hooks(cache: ToolCache) -> tuple[Any, Any]:
    """(lookup, store): lookup(tool, args, ctx) -> cached content or None; store is an after hook."""
    def lookup(tool: Tool, arguments: dict, ctx: ToolContext) -> str | None:
        return cache.get(cache_key(tool, arguments, ctx)) if tool.cache_ttl else None

    def store(tool: Tool, arguments: dict, result: ToolResult, ctx: ToolContext) -> None:
        if tool.cache_ttl and not result.is_error:
            cache.put(cache_key(tool, arguments, ctx), result.content, float(tool.cache_ttl))

    return lookup, store


def _first(results: list) -> Any:
    return next((r for r in results if r is not None), None)


def plugin_hooks(manager) -> tuple[list, list]:
    """The before/after callables for the pluggy hooks, only if some plugin implements them."""
    before, after = [], []
    if manager is not None and manager.hook.before_tool_call.get_hookimpls():
        def call_before(tool, arguments, ctx):
            # Installed plugins answer first; the first one returning arguments wins.
            replaced = _first(manager.hook.before_tool_call(tool=tool, arguments=arguments, context=ctx))
            if replaced is not None and not isinstance(replaced, dict):
                raise ToolError("a before_tool_call plugin returned something other than arguments")
            return replaced
        before.append(call_before)
    if manager is not None and manager.hook.after_tool_call.get_hookimpls():
        def call_after(tool, arguments, result, ctx):
            replaced = _first(manager.hook.after_tool_call(tool=tool, arguments=arguments,
                                                           result=result, context=ctx))
            return replaced if isinstance(replaced, ToolResult) else None
        after.append(call_after)
    return before, after


def tool_hooks_from(manager, cache: ToolCache | None = None, caching: bool = True) -> ToolHooks:
    """The ToolHooks for an app: plugin hooks around each call, and the result cache."""
    before, after = plugin_hooks(manager)
    hooks = ToolHooks(before=before, after=after)
    if caching:
        hooks.cache = cache if cache is not None else ToolCache()
        lookup, store = caching_hooks(hooks.cache)
        # The raw result is cached before plugins redact it; plugins run again on a hit.
        hooks.after.insert(0, store)
        hooks.lookup = [lookup]
    return hooks
