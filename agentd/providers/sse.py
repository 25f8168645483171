"""Reading Server-Sent Events from an httpx streaming response (shared by the adapters)."""
from __future__ import annotations

from typing import Iterator

import httpx


def iter_sse_events(response: httpx.Response) -> Iterator[tuple[str | None, str]]:
    """(event name, data) for each event of a text/event-stream body."""
    event, data = None, []
    for line in response.iter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
    if data:
        yield event, "\n".join(data)


def iter_sse_data(response: httpx.Response) -> Iterator[str]:
    """Only the data of each event."""
    for _, data in iter_sse_events(response):
        yield data
