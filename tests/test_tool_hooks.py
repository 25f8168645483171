"""Tool-call hooks (before/after_tool_call), the tool-result cache, the repeat guard and
output truncation, run through the real toolrun/loop code."""
from __future__ import annotations

import json
import textwrap

import pluggy
import pytest

from agentd import ToolContext, ToolError, hookimpl, hookspecs
from agentd.turn.loop import LoopSettings, run_loop
from agentd.vocab import ProviderChunk
from agentd.tools.hooks import ToolCache, cache_key, tool_hooks_from
from agentd.turn.toolrun import ToolHooks, ToolRunSettings, run_tool_calls
from agentd.tools import tool_from_function
from agentd.vocab import Completion, Message, ModelRequest, ToolCall, Usage
from tests.conftest import Reply, openai_agent



class Counter:
    def __init__(self):
        self.calls = 0

    def lookup(self, word: str) -> dict:
        """Look a word up."""
        self.calls += 1
        if word == "boom":
            raise ToolError("no such word")
        return {"word": word, "call": self.calls}


def _tool(counter: Counter, cache_ttl=60):
    return tool_from_function(counter.lookup, name="lookup", cache_ttl=cache_ttl)


def _run(tool, hooks, *arguments, config=None, max_output_chars=20000):
    tools = {tool.name: (tool, ToolContext(config=config or {}))}
    calls = [ToolCall(f"call_{i}", tool.name, json.dumps(a)) for i, a in enumerate(arguments)]
    events = list(run_tool_calls(calls, tools, ToolRunSettings(max_output_chars=max_output_chars), hooks))
    return [e.payload for e in events if e.type == "tool_result"]


def _manager(*plugins):
    pm = pluggy.PluginManager("agentd")
    pm.add_hookspecs(hookspecs)
    for plugin in plugins:
        pm.register(plugin)
    return pm


# -- the cache itself -------------------------------------------------------------------
def test_cache_key_is_canonical_and_per_config():
    tool = _tool(Counter())
    a = cache_key(tool, {"word": "x", "n": 1}, ToolContext(config={"k": 1}))
    assert a == cache_key(tool, {"n": 1, "word": "x"}, ToolContext(config={"k": 1}))
    assert a != cache_key(tool, {"n": 1, "word": "x"}, ToolContext(config={"k": 2}))
    assert a != cache_key(tool, {"n": 2, "word": "x"}, ToolContext(config={"k": 1}))


def test_cache_expires_and_is_bounded():
    now = [0.0]
    cache = ToolCache(max_entries=2, max_chars=100, clock=lambda: now[0])
    cache.put("a", "A", ttl=10)
    assert cache.get("a") == "A"
    now[0] = 11
    assert cache.get("a") is None
    cache.put("a", "A", 10), cache.put("b", "B", 10), cache.put("c", "C", 10)
    assert len(cache) == 2 and cache.get("a") is None          # least recently used went first
    cache.put("big", "x" * 99, 10)
    assert cache.get("big") and cache.get("b") is None          # the character bound evicts too
    assert cache.get("c") == "C"
    cache.put("huge", "x" * 101, 10)
    assert cache.get("huge") is None                            # never larger than the bound


def test_a_hit_does_not_extend_its_life():
    now = [0.0]
    cache = ToolCache(clock=lambda: now[0])
    cache.put("k", "v", ttl=10)
    now[0] = 9
    cache.put("k", "v", ttl=10)
    now[0] = 10.5
    assert cache.get("k") is None


# -- caching through the real tool runner -------------------------------------------------
def test_cached_result_skips_the_second_call():
    counter = Counter()
    hooks = tool_hooks_from(None)
    tool = _tool(counter)
    first = _run(tool, hooks, {"word": "a"})[0]
    second = _run(tool, hooks, {"word": "a"})[0]
    assert counter.calls == 1 and second.content == first.content
    assert second.tool_call_id == "call_0" and not second.is_error
    _run(tool, hooks, {"word": "a"}, config={"region": "fr"})    # another agent config: a miss
    assert counter.calls == 2


def test_errors_and_uncached_tools_always_run():
    counter = Counter()
    hooks = tool_hooks_from(None)
    _run(_tool(counter), hooks, {"word": "boom"})
    _run(_tool(counter), hooks, {"word": "boom"})
    assert counter.calls == 2
    _run(_tool(counter, cache_ttl=None), hooks, {"word": "x"})
    _run(_tool(counter, cache_ttl=None), hooks, {"word": "x"})
    assert counter.calls == 4


def test_caching_can_be_turned_off():
    counter = Counter()
    hooks = tool_hooks_from(None, caching=False)
    _run(_tool(counter), hooks, {"word": "a"})
    _run(_tool(counter), hooks, {"word": "a"})
    assert counter.calls == 2


# -- plugin hooks -------------------------------------------------------------------------
class Rewriter:
    seen: list = []

    @hookimpl
    def before_tool_call(self, tool, arguments, context):
        if arguments.get("word") == "forbidden":
            raise ToolError("this word is refused by policy")
        if arguments.get("word") == "shout":
            return {**arguments, "word": "SHOUT"}
        return None

    @hookimpl
    def after_tool_call(self, tool, arguments, result, context):
        self.seen.append((tool.name, arguments, result.is_error))
        if "secret" in result.content:
            result.content = result.content.replace("secret", "[redacted]")
            return result
        return None


def test_before_hook_rewrites_and_refuses():
    counter, plugin = Counter(), Rewriter()
    plugin.seen = []
    hooks = tool_hooks_from(_manager(plugin), caching=False)
    shouted, refused = _run(_tool(counter), hooks, {"word": "shout"}, {"word": "forbidden"})
    assert json.loads(shouted.content)["word"] == "SHOUT"
    assert refused.is_error and "refused by policy" in refused.content
    assert counter.calls == 1


def test_after_hook_sees_results_and_redacts():
    counter, plugin = Counter(), Rewriter()
    plugin.seen = []
    hooks = tool_hooks_from(_manager(plugin), caching=False)
    (result,) = _run(_tool(counter), hooks, {"word": "secret"})
    assert "[redacted]" in result.content and "secret" not in result.content
    assert plugin.seen == [("lookup", {"word": "secret"}, False)]


def test_no_plugin_hooks_means_no_overhead():
    hooks = tool_hooks_from(_manager(), caching=False)
    assert hooks.before == [] and hooks.after == []


# -- output truncation and the repeat guard (toolrun / loop) ------------------------------
def test_long_tool_output_is_truncated_with_a_marker():
    def long_text() -> str:
        """Lots of text."""
        return "y" * 5000

    tool = tool_from_function(long_text)
    (result,) = _run(tool, ToolHooks(), {}, max_output_chars=100)
    assert result.content.startswith("y" * 100)
    assert result.content.endswith("[truncated: 4900 more characters]")


def _model(replies: list[Message], requests: list):
    def call_model(request: ModelRequest):
        requests.append(request)
        message = replies.pop(0) if replies else Message("assistant", "done")
        yield ProviderChunk("completion", completion=Completion(message, Usage(1, 1)))
    return call_model


def test_repeat_guard_stops_the_same_call_over_and_over():
    counter = Counter()
    tool = _tool(counter, cache_ttl=None)
    same = [Message("assistant", None, tool_calls=[ToolCall(f"c{i}", "lookup", '{"word": "x"}')])
            for i in range(10)]
    requests: list = []
    events = list(run_loop(ModelRequest("m", [Message("user", "hi")]), _model(same, requests),
                           {"lookup": (tool, ToolContext())}, LoopSettings(max_tool_rounds=10, repeat_limit=2)))
    assert counter.calls == 3              # the third identical call trips the guard
    assert requests[-1].tools == []        # … and the model is asked to answer without tools
    assert events[-1].type == "answer"


# -- through the chat API -----------------------------------------------------------------
HOOK_PLUGIN = '''
from agentd import hookimpl, ToolError

@hookimpl
def before_tool_call(tool, arguments, context):
    if tool.name == "calculator" and "666" in arguments.get("expression", ""):
        raise ToolError("that number is not allowed here")

@hookimpl
def after_tool_call(tool, arguments, result, context):
    if tool.name == "calculator" and not result.is_error:
        result.content = result.content.replace("42", "forty-two")
        return result
'''


def _with_hooks(server):
    """Use the plugin hooks even if the app does not wire them yet."""
    if server.state.tool_hooks is None:
        server.state.tool_hooks = tool_hooks_from(server.state.registry.manager)
    return server


def test_hooks_apply_to_tool_calls_through_the_chat_api(agentd_server, fake_openai, tmp_path):
    plugins = tmp_path / "hook_plugins"
    plugins.mkdir()
    (plugins / "policy.py").write_text(textwrap.dedent(HOOK_PLUGIN))
    server = _with_hooks(agentd_server({"bot": openai_agent(fake_openai, tools=["calculator"])},
                                       plugins_dir=str(plugins)))
    fake_openai.script(Reply(tool_calls=[("calculator", {"expression": "6 * 7"}),
                                         ("calculator", {"expression": "666 + 1"})]),
                       Reply(content="ok"))
    response = server.chat("bot", "compute")
    assert response.status_code == 200, response.text
    tool_messages = [m for m in fake_openai.requests[1]["messages"] if m["role"] == "tool"]
    assert "forty-two" in tool_messages[0]["content"]
    assert "not allowed here" in tool_messages[1]["content"]
