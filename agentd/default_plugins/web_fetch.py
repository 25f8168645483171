"""web_fetch: the readable text of one public web page.

Written as any user's plugin is. Every connection goes through
`agentd.tools.netguard` (no private addresses, each redirect hop re-checked, the
checked address is the one connected to); the body is read as a capped
stream and decompressed by hand so a gzip bomb stops at `max_bytes`; the text
comes from trafilatura run on those capped bytes (never its own fetcher) and is
marked as untrusted data, because a web page is the classic prompt-injection
carrier.
"""
from __future__ import annotations

import re
import time
import zlib
from urllib.parse import urljoin

import httpx

from agentd import ToolContext, ToolError, frame_untrusted, hookimpl
from agentd.tools import netguard, offload

MAX_REDIRECTS = 5
USER_AGENT = "agentd-web-fetch/0.1 (+https://github.com/agentd)"
TEXT_TYPES = ("text/", "application/xhtml+xml", "application/xml", "application/json",
              "application/rss+xml", "application/atom+xml", "application/ld+json")
REDIRECTS = (301, 302, 303, 307, 308)

CONFIG_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "allow_private_networks": {"type": "boolean", "default": False},
        "allowed_hosts": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "blocked_hosts": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "allowed_ports": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 65535},
                          "minItems": 1},
        "max_bytes": {"type": "integer", "minimum": 1024, "maximum": 50_000_000},
        "max_chars": {"type": "integer", "minimum": 100, "maximum": 1_000_000},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 120},
        "connect_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
        "read_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 120},
        "urls": {"enum": ["any", "seen"], "default": "any"},
    },
}
DEFAULTS = {"max_bytes": 2_000_000, "max_chars": 20_000, "timeout": 20.0,
            "connect_timeout": 5.0, "read_timeout": 10.0}


def _policy(config: dict) -> netguard.Policy:
    return netguard.Policy(
        allow_private_networks=bool(config.get("allow_private_networks", False)),
        allowed_hosts=list(config.get("allowed_hosts") or []),
        blocked_hosts=list(config.get("blocked_hosts") or []),
        allowed_ports=list(config.get("allowed_ports") or [80, 443]))


def _parse_url(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw.strip())
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ToolError(f"invalid URL: {exc}") from None
    if not url.scheme:
        raise ToolError("the URL needs a scheme: http:// or https://")
    return url


class _CappedBody:
    """Decoded bytes from a raw stream, stopping at `limit` decoded (and raw) bytes."""

    def __init__(self, encoding: str, limit: int):
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._decoder = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            # wbits 47 accepts gzip and zlib headers; raw deflate is retried below.
            self._decoder = zlib.decompressobj(47)
        else:
            raise ToolError(f"unsupported content encoding {encoding!r}")
        self._deflate_raw = encoding == "deflate"
        self.limit, self.data, self.raw_seen, self.truncated = limit, bytearray(), 0, False

    def _decode(self, chunk: bytes) -> bytes:
        room = self.limit - len(self.data) + 1
        try:
            return self._decoder.decompress(chunk, room)
        except zlib.error:
            if not (self._deflate_raw and not self.data):
                raise ToolError("the response body is not valid compressed data") from None
            self._decoder, self._deflate_raw = zlib.decompressobj(-zlib.MAX_WBITS), False
            return self._decoder.decompress(chunk, room)

    def feed(self, chunk: bytes) -> bool:
        """Add a raw chunk; False once the cap is reached (stop reading)."""
        self.raw_seen += len(chunk)
        # max_length bounds each decompress call, so one small chunk cannot
        # expand to gigabytes in memory before we get to count it.
        out = chunk if self._decoder is None else self._decode(chunk)
        self.data += out
        if len(self.data) > self.limit or self.raw_seen > self.limit:
            del self.data[self.limit:]
            self.truncated = True
            return False
        return True


def _content_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _check_content_type(response: httpx.Response) -> None:
    kind = _content_type(response)
    if kind and not kind.startswith(TEXT_TYPES):
        raise ToolError(f"refused to read a {kind} response: web_fetch reads text and HTML pages only")


def _read_capped(response: httpx.Response, limit: int, deadline: float) -> _CappedBody:
    body = _CappedBody(response.headers.get("content-encoding", ""), limit)
    for chunk in response.iter_raw():
        if not body.feed(chunk):
            break
        if time.monotonic() > deadline:
            raise ToolError("the page took too long to download")
    return body


def _open(url: httpx.URL, config: dict, deadline: float, policy: netguard.Policy):
    """One hop: a fresh guarded client (no connection reuse across host names)."""
    timeout = httpx.Timeout(connect=config["connect_timeout"], read=config["read_timeout"],
                            write=config["read_timeout"], pool=config["connect_timeout"])
    transport = netguard.GuardedTransport(policy, max(0.01, deadline - time.monotonic()))
    client = httpx.Client(transport=transport, timeout=timeout, trust_env=False,
                          follow_redirects=False,
                          headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate",
                                   "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5"})
    try:
        response = client.send(client.build_request("GET", url), stream=True)
    except BaseException:
        client.close()
        raise
    return client, response


def _next_url(response: httpx.Response, url: httpx.URL) -> httpx.URL:
    location = response.headers.get("location")
    if not location:
        raise ToolError(f"HTTP {response.status_code} redirect without a Location header")
    return _parse_url(urljoin(str(url), location))


def _fetch(url: httpx.URL, config: dict, ctx: ToolContext) -> tuple[httpx.URL, str, _CappedBody]:
    """Follow redirects by hand, re-checking every hop; return final URL, content type, body."""
    policy, deadline = _policy(config), time.monotonic() + config["timeout"]
    for hop in range(MAX_REDIRECTS + 1):
        netguard.check_url(url, policy)
        ctx.status(f"Fetching {url.host}…")
        client, response = _open(url, config, deadline, policy)
        try:
            if response.status_code in REDIRECTS:
                url = _next_url(response, url)
                continue
            if response.status_code >= 400:
                raise ToolError(f"HTTP {response.status_code} from {url}")
            _check_content_type(response)
            return url, _content_type(response), _read_capped(response, config["max_bytes"], deadline)
        finally:
            response.close()
            client.close()
    raise ToolError(f"too many redirects (more than {MAX_REDIRECTS})")


def _title(html: bytes) -> str | None:
    import lxml.html
    try:
        title = lxml.html.fromstring(html).findtext(".//title")
    except Exception:  # unparseable markup has no title; the text may still be useful
        return None
    return " ".join(title.split()) if title else None


def _extract(data: bytes, kind: str, url: str) -> tuple[str | None, str]:
    """Title and readable text; HTML through trafilatura, plain text as it is."""
    if kind and "html" not in kind and "xml" not in kind:
        return None, data.decode("utf-8", errors="replace")
    import trafilatura
    text = trafilatura.extract(data, url=url, include_comments=False, include_tables=True)
    if not text:  # short pages have no "main content"; keep their visible text anyway
        text = trafilatura.html2txt(data.decode("utf-8", errors="replace"))
    return _title(data), text or ""


def _wrap(url: str, text: str) -> str:
    return frame_untrusted(f"fetched from {url}", text)


def web_fetch(url: str, ctx: ToolContext) -> dict:
    """Fetch one web page (http or https) and return its readable text, title and final URL."""
    config = {**DEFAULTS, **(ctx.config or {})}
    deadline = time.monotonic() + config["timeout"]
    try:
        final, kind, body = _fetch(_parse_url(url), config, ctx)
    except netguard.BlockedError as exc:
        raise ToolError(f"refused: {exc}") from None
    except httpx.TimeoutException:
        raise ToolError("the page took too long to answer") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"could not fetch the page: {exc.__class__.__name__}: {exc}") from None
    # Parsing and extraction are CPU work (seconds on a big page): off the gevent hub,
    # within what is left of the fetch's own time limit.
    try:
        title, text = offload.run(_extract, bytes(body.data), kind, str(final),
                                  timeout=max(deadline - time.monotonic(), 1.0))
    except offload.Expired:
        raise ToolError("extracting the page's text took too long") from None
    limit = config["max_chars"]
    truncated = body.truncated or len(text) > limit
    return {"url": str(final), "title": title, "truncated": truncated,
            "content": _wrap(str(final), text[:limit])}


# -------------------------------------------------------------- urls: seen
_URL_IN_TEXT = re.compile(r"""https?://[^\s<>"'`\\]+""", re.IGNORECASE)


def _canonical(raw: str) -> str | None:
    """A URL as compared for `urls: seen`: scheme and host lower-case, no fragment, path at least '/'."""
    try:
        url = httpx.URL(raw.strip().rstrip(".,;:!?)]}"))
    except (httpx.InvalidURL, ValueError, TypeError):
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    return str(url.copy_with(fragment=None, path=url.path or "/"))


def seen_urls(texts) -> set[str]:
    """Every http(s) URL written in these texts, canonical."""
    found = set()
    for text in texts:
        for match in _URL_IN_TEXT.findall(text or ""):
            canonical = _canonical(match)
            if canonical:
                found.add(canonical)
    return found


@hookimpl(trylast=True)
def before_tool_call(tool, arguments, context):
    """`urls: seen`: fetch only a URL the user wrote or an earlier tool result contained.

    A hook, because it must run before the tool-result cache is consulted: a page
    cached for another conversation must not reach one that never named it.
    """
    if tool.func is not web_fetch or (context.config or {}).get("urls", "any") != "seen":
        return None
    wanted = _canonical(str(arguments.get("url") or ""))
    if wanted is None or wanted not in seen_urls(context.transcript()):
        raise ToolError("refused: this agent fetches only URLs that appeared in the conversation "
                        "(the user's messages or earlier tool results)")
    return None


@hookimpl(trylast=True)
def register_tools(register):
    # No tool timeout of its own: the agent's tool_timeout applies, and the
    # configured `timeout` (20 s by default) ends the fetch before it.
    # Cooperative: its network waits are gevent's; the CPU part goes through offload itself.
    register(web_fetch, config_schema=CONFIG_SCHEMA, cache_ttl=300, status_message="Reading a web page…",
             cooperative=True)
