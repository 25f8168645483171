"""Reading Server-Sent Events from an httpx streaming response (shared by the adapters).

The parsing is httpx-sse's: it splits lines only at CR, LF or CRLF, as the SSE
specification says (httpx's own `iter_lines()` would also cut a JSON payload at
U+2028, U+0085 and other characters a model may well produce).
"""
from __future__ import annotations

from typing import Iterator

import httpx
from httpx_sse import EventSource, SSEError

from agentd.providers.base import ProviderError


def iter_sse_events(response: httpx.Response) -> Iterator[tuple[str | None, str]]:
    """(event name, data) for each event of a streamed httpx response; the name is None when unnamed."""
    try:
        for sse in EventSource(response).iter_sse():
            if sse.data:
                yield (None if sse.event == "message" else sse.event), sse.data
    except SSEError as exc:  # not an event stream at all (e.g. an HTML error page with status 200)
        raise ProviderError(f"the provider did not answer with an event stream: {exc}") from exc


def iter_sse_data(response: httpx.Response) -> Iterator[str]:
    """Only the data of each event."""
    for _, data in iter_sse_events(response):
        yield data
