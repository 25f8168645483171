"""Reading Server-Sent Events from an httpx streaming response (shared by the adapters).

Lines end only at CR, LF or CRLF, as the SSE specification says. httpx's own
`iter_lines()` follows `str.splitlines()` and would also cut a JSON payload at
U+2028, U+0085 and other characters a model may well produce.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

import httpx

_LINE_END = re.compile(r"\r\n|\r|\n")


def sse_lines(chunks: Iterable[str]) -> Iterator[str]:
    """Lines of an event stream from text chunks, split only at CR, LF or CRLF."""
    buffer = ""
    for chunk in chunks:
        buffer += chunk
        # A trailing CR may be the first half of a CRLF split across chunks: hold it back.
        held = buffer.endswith("\r")
        parts = _LINE_END.split(buffer[:-1] if held else buffer)
        buffer = parts.pop() + ("\r" if held else "")
        yield from parts
    for line in _LINE_END.split(buffer) if buffer else []:
        yield line


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str | None, str]]:
    """(event name, data) for each event of a text/event-stream body."""
    event, data = None, []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[6:] if line[5:6] == " " else line[5:])
    if data:
        yield event, "\n".join(data)


def iter_sse_events(response: httpx.Response) -> Iterator[tuple[str | None, str]]:
    """(event name, data) for each event of a streamed httpx response."""
    return parse_sse(sse_lines(response.iter_text()))


def iter_sse_data(response: httpx.Response) -> Iterator[str]:
    """Only the data of each event."""
    for _, data in iter_sse_events(response):
        yield data
