"""Framing a turn's events as Server-Sent Events or WebSocket frames.

The turn runs in its own worker thread (a greenlet under gevent) feeding a
queue, so the response can send `: ping` while the model is silent and a
cancelled or vanished client stops the turn at its next event.
"""
from __future__ import annotations

import contextlib
import json
import queue
import threading
from typing import Iterator

from agentd.vocab import Event

PING_SECONDS = 15.0
_END = object()


def pump(turn, idle: float = PING_SECONDS, scope=contextlib.nullcontext) -> Iterator[Event | None]:
    """The turn's events from a worker; None after `idle` seconds of silence.

    `scope()` wraps the worker's run (the database connection of its thread).
    """
    inbox: queue.Queue = queue.Queue()

    def work():
        try:
            with scope():
                for event in turn.events():
                    inbox.put(event)
                    if turn.cancelled:
                        break
        finally:
            inbox.put(_END)

    worker = threading.Thread(target=work, daemon=True, name=f"turn-{turn.conversation_id}")
    worker.start()
    try:
        while True:
            try:
                item = inbox.get(timeout=idle)
            except queue.Empty:
                yield None
                continue
            if item is _END:
                return
            yield item
    finally:
        turn.cancel()


def sse_frame(event: Event) -> str:
    data = json.dumps(event.public(), ensure_ascii=False, separators=(",", ":"))
    return f"event: {event.type}\ndata: {data}\n\n"


def sse_stream(turn, filter_event=None, scope=contextlib.nullcontext) -> Iterator[str]:
    """SSE text for a turn; `filter_event` may drop or reshape events (the widget's)."""
    for event in pump(turn, scope=scope):
        if event is None:
            yield ": ping\n\n"
            continue
        event = filter_event(event) if filter_event else event
        if event is not None:
            yield sse_frame(event)


SSE_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
