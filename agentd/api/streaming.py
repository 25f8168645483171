"""Framing a turn's events as Server-Sent Events or WebSocket frames.

The turn runs in its own worker thread (a greenlet under gevent) feeding a
queue, so the response can send `: ping` while the model is silent and a
cancelled or vanished client stops the turn at its next event. A turn ended
from outside (a WebSocket cancel, the server shutting down: `Turn.abort`)
stores its partial answer at once and pushes its `error` event into the same
queue, so the client hears about it even while the model is silent.
"""
from __future__ import annotations

import contextlib
import json
import queue
import threading
from typing import Iterator

from agentd.errors import ApiError
from agentd.turn.liveturns import live_turns
from agentd.vocab import Event

PING_SECONDS = 15.0
_END = object()


def shutting_down_error() -> ApiError:
    return ApiError("the server is shutting down; the answer so far was stored",
                    status=503, code="SERVICE_UNAVAILABLE")


def cancelled_error() -> ApiError:
    return ApiError("the turn was cancelled; the answer so far was stored",
                    status=409, code="CANCELLED")


def pump(turn, idle: float = PING_SECONDS, scope=contextlib.nullcontext,
         release=None) -> Iterator[Event | None]:
    """The turn's events from a worker; None after `idle` seconds of silence.

    `scope()` wraps the worker's run; `release()`, called after each event and
    at the end, closes the worker's database connection (opened on demand by
    each query) so it is not held between events: a stream spends its life
    waiting for tokens, and a thousand of them must not hold a thousand pooled
    connections (deltas never touch the database, so a connection is taken
    again only at the start, at tool steps and at the end).
    Leaving the iterator early (client gone) cancels the turn: the worker stops
    at its next event, stores the partial answer and closes the provider call.
    """
    inbox: queue.Queue = queue.Queue()

    def work():
        try:
            with scope(), contextlib.closing(turn.events()) as events:
                for event in events:
                    if release is not None:
                        release()
                    inbox.put(event)
                    if turn.cancelled:
                        break  # closing() runs the turn's finally in this thread, inside scope()
        finally:
            if release is not None:
                release()
            inbox.put(_END)

    def aborted(event: Event) -> None:
        inbox.put(event)
        inbox.put(_END)

    turn.listeners.append(aborted)
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


def connection_releaser(database):
    """A `release` for pump: close this thread's connection unless a transaction holds it."""
    def release() -> None:
        if not database.is_closed() and not database.in_transaction():
            database.close()
    return release


def sse_frame(event: Event) -> str:
    data = json.dumps(event.public(), ensure_ascii=False, separators=(",", ":"))
    return f"event: {event.type}\ndata: {data}\n\n"


def sse_stream(turn, filter_event=None, scope=contextlib.nullcontext, release=None) -> Iterator[str]:
    """SSE text for a turn; `filter_event` may drop or reshape events (the widget's)."""
    if release is not None:
        release()  # the request's own connection is not needed while the stream runs
    for event in pump(turn, scope=scope, release=release):
        if event is None:
            yield ": ping\n\n"
            continue
        event = filter_event(event) if filter_event else event
        if event is not None:
            yield sse_frame(event)


SSE_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


# -- WebSocket ------------------------------------------------------------------------
WS_POLL_SECONDS = 0.1   # how often a running turn looks for a `cancel` frame
WS_IDLE_SECONDS = 1.0   # how often an idle socket looks whether the server is shutting down


def error_frame(code: str, message: str) -> str:
    return json.dumps({"type": "error", "error": {"code": code, "message": message}})


def ws_next_message(ws) -> dict | None:
    """The next `message` frame of an idle socket; None when it closed or the server stops."""
    while not live_turns.closing:
        frame = ws.receive(timeout=WS_IDLE_SECONDS)
        if frame is None:
            if not getattr(ws, "connected", True):
                return None
            continue
        body = _parse_frame(ws, frame)
        if body is not None and body.get("type") == "message":
            return body
        # a cancel with no running turn, or an unknown frame: nothing to do
    return None


def ws_stream(ws, turn, filter_event=None, scope=contextlib.nullcontext, release=None) -> None:
    """Send a turn's events as text frames, answering frames that arrive meanwhile."""
    if release is not None:
        release()  # the socket's own connection is not needed while the turn streams
    for event in pump(turn, idle=WS_POLL_SECONDS, scope=scope, release=release):
        if event is not None:
            event = filter_event(event) if filter_event else event
            if event is not None:
                ws.send(json.dumps(event.public(), ensure_ascii=False))
        _ws_incoming(ws, turn)


def _ws_incoming(ws, turn) -> None:
    """Frames received while a turn runs: `cancel` ends it, another `message` is refused."""
    while True:
        frame = ws.receive(timeout=0)
        if frame is None:
            return
        body = _parse_frame(ws, frame)
        if body is None:
            continue
        if body.get("type") == "cancel":
            turn.abort(cancelled_error())  # its error event arrives through the pump
        elif body.get("type") == "message":
            ws.send(error_frame("CONVERSATION_BUSY",
                                "A turn is already running on this socket; wait for it or cancel it"))


def _parse_frame(ws, frame) -> dict | None:
    try:
        body = json.loads(frame)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        ws.send(error_frame("INVALID_REQUEST", "frame: malformed JSON"))
        return None
    if not isinstance(body, dict):
        ws.send(error_frame("INVALID_REQUEST", "frame: expected a JSON object"))
        return None
    return body


def abort_live_turns() -> int:
    """End every turn of this process with an `error` event (server shutdown)."""
    return live_turns.abort_all(shutting_down_error())
