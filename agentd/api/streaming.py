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
import time
from typing import Iterator

from wsproto.events import CloseConnection, TextMessage
from wsproto.frame_protocol import CloseReason

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


def ws_next_message(ws, idle_timeout: float | None = None) -> dict | None:
    """The next `message` frame of an idle socket; None when it closed, idled out or the server stops.

    A socket that sends nothing for `idle_timeout` seconds between turns is closed:
    an open socket costs a greenlet and a file descriptor, and a client that went
    quiet without closing would otherwise hold them forever.
    """
    quiet_since = time.monotonic()
    while not live_turns.closing:
        frame = ws.receive(timeout=WS_IDLE_SECONDS)
        if frame is None:
            if not getattr(ws, "connected", True):
                return None
            if idle_timeout and time.monotonic() - quiet_since >= idle_timeout:
                _close_idle(ws, idle_timeout)
                return None
            continue
        quiet_since = time.monotonic()
        body = _parse_frame(ws, frame)
        if body is not None and body.get("type") == "message":
            return body
        # a cancel with no running turn, or an unknown frame: nothing to do
    return None


def _close_idle(ws, idle_timeout: float) -> None:
    with contextlib.suppress(Exception):  # the client may have gone at the same moment
        ws.close(reason=CloseReason.NORMAL_CLOSURE, message=f"idle for {idle_timeout:g} s")


class _TooBigNotice:
    """simple-websocket's connection, telling the client why before closing a too-big frame.

    simple-websocket stops reading a message at `max_message_size` and closes
    with 1009; API.md also wants an `error` frame first, so it is sent just
    before that close frame (same wsproto connection, so framing stays right).
    """

    def __init__(self, connection):
        self._connection = connection

    def __getattr__(self, name):
        return getattr(self._connection, name)

    def send(self, event):
        if isinstance(event, CloseConnection) and event.code == CloseReason.MESSAGE_TOO_BIG:
            notice = error_frame("PAYLOAD_TOO_LARGE", "frame: larger than the body limit; closing")
            return self._connection.send(TextMessage(data=notice)) + self._connection.send(event)
        return self._connection.send(event)


def _reader_thread(target):
    """simple-websocket's `thread_class`: wrap the connection before its reader starts."""
    server = getattr(target, "__self__", None)
    if server is not None and not isinstance(server.ws, _TooBigNotice):
        server.ws = _TooBigNotice(server.ws)
    return threading.Thread(target=target, daemon=True)


def ws_server_options(max_bytes: int) -> dict:
    """flask-sock's SOCK_SERVER_OPTIONS: frames over `max_bytes` are refused while arriving."""
    return {"max_message_size": max_bytes, "thread_class": _reader_thread}


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
        body = json.loads(frame, parse_constant=_no_constant)
    except _NotANumber as exc:
        ws.send(error_frame("INVALID_REQUEST", f"frame: {exc}"))
        return None
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        ws.send(error_frame("INVALID_REQUEST", "frame: malformed JSON"))
        return None
    if not isinstance(body, dict):
        ws.send(error_frame("INVALID_REQUEST", "frame: expected a JSON object"))
        return None
    return body


class _NotANumber(Exception):
    pass


def _no_constant(name: str):
    # Python's json accepts NaN and ±Infinity; JSON does not.
    raise _NotANumber(f"{name} is not a JSON number")


def abort_live_turns() -> int:
    """End every turn of this process with an `error` event (server shutdown)."""
    return live_turns.abort_all(shutting_down_error())
