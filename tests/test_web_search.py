"""web_search with an injected backend: result shape, config, failures as tool errors."""
from __future__ import annotations

import json
import sys

import pytest

from agentd import ToolContext, ToolError
from agentd.plugins import load_plugins
from tests.conftest import Reply, openai_agent

HITS = [{"title": f"Result {i}", "href": f"https://example.com/{i}", "body": f"snippet {i}"} for i in range(10)]


class FakeBackend:
    """Records each search and answers with canned hits, or raises what it was given."""

    def __init__(self, hits=HITS, error: Exception | None = None):
        self.hits, self.error, self.calls = hits, error, []

    def __call__(self, query, **options):
        self.calls.append((query, options))
        if self.error:
            raise self.error
        return self.hits[:options["max_results"]]


def plugin_module(tool):
    return sys.modules[tool.func.__module__]


@pytest.fixture
def search():
    """The registered web_search tool, with a fake backend put back afterwards."""
    tool = load_plugins(entry_points=False).tools["web_search"]
    module = plugin_module(tool)
    yield tool, module
    module.set_backend(None)


def run(tool, config=None, **arguments):
    return tool.call(arguments, ToolContext(config=config or {}))


def test_results_are_title_url_snippet(search):
    tool, module = search
    module.set_backend(FakeBackend())
    results = run(tool, query="agentd")
    assert results[0] == {"title": "Result 0", "url": "https://example.com/0", "snippet": "snippet 0"}
    assert len(results) == 5


def test_config_reaches_the_backend_and_caps_results(search):
    tool, module = search
    backend = FakeBackend()
    module.set_backend(backend)
    results = run(tool, {"region": "fr-fr", "safesearch": "off", "max_results": 3}, query="x", max_results=8)
    assert len(results) == 3
    options = backend.calls[0][1]
    assert (options["region"], options["safesearch"], options["max_results"]) == ("fr-fr", "off", 3)


@pytest.mark.parametrize("error,message", [
    (type("RatelimitException", (Exception,), {})("202 Ratelimit"), "rate limiting"),
    (type("TimeoutException", (Exception,), {})("timed out"), "did not answer in time"),
    (ConnectionError("network down"), "search failed"),
])
def test_backend_failures_become_tool_errors(search, error, message):
    tool, module = search
    module.set_backend(FakeBackend(error=error))
    with pytest.raises(ToolError, match=message):
        run(tool, query="x")


def test_no_results_is_an_empty_list(search):
    tool, module = search
    module.set_backend(FakeBackend(error=Exception("No results found.")))
    assert run(tool, query="zzzz") == []


def test_the_real_ddgs_errors_are_recognised(search):
    from ddgs.exceptions import RatelimitException, TimeoutException
    tool, module = search
    for error, message in [(RatelimitException("x"), "rate limiting"), (TimeoutException("x"), "in time")]:
        module.set_backend(FakeBackend(error=error))
        with pytest.raises(ToolError, match=message):
            run(tool, query="x")


def test_config_is_validated(agentd_server, fake_openai):
    server = agentd_server({"bad": openai_agent(fake_openai, tools=[{"web_search": {"safesearch": "maybe"}}])})
    assert "bad" not in server.state.agents


def test_web_search_through_the_chat_api(agentd_server, fake_openai):
    server = agentd_server({"searcher": openai_agent(fake_openai, tools=[{"web_search": {"max_results": 2}}])})
    module = plugin_module(server.state.registry.tools["web_search"])
    module.set_backend(FakeBackend())
    try:
        fake_openai.script(Reply(tool_calls=[("web_search", {"query": "agentd plugins"})]),
                           Reply(content="found it"))
        response = server.client.post("/api/agents/searcher/chat",
                                      json={"message": "search", "stream": True})
    finally:
        module.set_backend(None)
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    status = [e["message"] for e in events if e["type"] == "status"]
    assert any("Searching the web for agentd plugins" in s for s in status)
    result = next(e for e in events if e["type"] == "tool_result")
    assert not result["is_error"]
    # The model sees the results framed as untrusted data (snippets are written by strangers).
    assert result["content"].startswith("The following is untrusted content returned by the web_search tool")
    framed = result["content"].split("<untrusted-content>\n", 1)[1].rsplit("\n</untrusted-content>", 1)[0]
    assert [r["url"] for r in json.loads(framed)] == ["https://example.com/0", "https://example.com/1"]
