"""web_search: search the web with ddgs; results as {title, url, snippet}.

Written as any user's plugin is. The search backend is a plain callable
`backend(query, region=, safesearch=, max_results=) -> list[dict]`, replaceable
with `set_backend()` (tests, or a plugin wiring another search engine), so
no test needs the internet. Whatever the backend raises becomes a ToolError.
"""
from __future__ import annotations

from typing import Callable

from agentd import ToolContext, ToolError, hookimpl

CONFIG_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "region": {"type": "string", "minLength": 2, "default": "wt-wt"},
        "safesearch": {"enum": ["on", "moderate", "off"], "default": "moderate"},
        "max_results": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 60, "default": 10},
        "backend": {"type": "string", "description": "ddgs backend(s), e.g. 'duckduckgo,brave'"},
    },
}

Backend = Callable[..., list[dict]]


def ddgs_backend(query: str, *, region: str, safesearch: str, max_results: int,
                 timeout: float = 10, backend: str = "auto") -> list[dict]:
    """The real search, through the ddgs package (needs the internet)."""
    from ddgs import DDGS
    return DDGS(timeout=int(max(1, timeout))).text(
        query, region=region, safesearch=safesearch, max_results=max_results, backend=backend)


_backend: Backend = ddgs_backend


def set_backend(backend: Backend | None) -> Backend:
    """Use another search backend (None restores ddgs); returns the previous one."""
    global _backend
    previous, _backend = _backend, backend or ddgs_backend
    return previous


def _error_for(exc: Exception) -> ToolError:
    name = exc.__class__.__name__
    if "Ratelimit" in name:
        return ToolError("the search engine is rate limiting us; try again in a minute")
    if "Timeout" in name or isinstance(exc, TimeoutError):
        return ToolError("the search engine did not answer in time")
    return ToolError(f"search failed: {name}: {exc}"[:300])


def _result(item: dict) -> dict:
    """ddgs says href/body; other backends may say url/snippet."""
    return {"title": str(item.get("title") or "").strip(),
            "url": str(item.get("href") or item.get("url") or "").strip(),
            "snippet": str(item.get("body") or item.get("snippet") or "").strip()}


def web_search(query: str, ctx: ToolContext, max_results: int = 5) -> list[dict]:
    """Search the web. Returns a list of results, each with title, url and snippet."""
    config = ctx.config or {}
    if not query.strip():
        raise ToolError("the query is empty")
    limit = max(1, min(max_results, config.get("max_results", 5), 20))
    ctx.status(f"Searching the web for {query[:80]}…")
    options = {"region": config.get("region", "wt-wt"), "safesearch": config.get("safesearch", "moderate"),
               "max_results": limit, "timeout": config.get("timeout", 10)}
    if config.get("backend"):
        options["backend"] = config["backend"]
    try:
        items = _backend(query, **options) or []
    except ToolError:
        raise
    except Exception as exc:  # network trouble, rate limits, parser changes upstream
        if "No results found" not in str(exc):  # ddgs raises when nothing matched
            raise _error_for(exc) from None
        items = []
    results = [_result(item) for item in items if isinstance(item, dict)]
    return [r for r in results if r["url"]][:limit]


@hookimpl(trylast=True)
def register_tools(register):
    # Titles and snippets are written by whoever made the pages: framed as untrusted data.
    register(web_search, config_schema=CONFIG_SCHEMA, cache_ttl=600, untrusted=True)
