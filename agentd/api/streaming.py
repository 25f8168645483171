"""Framing a run's events as Server-Sent Events or WebSocket frames.

A turn is a run (agentd.turn.runs) driven by a worker of its own; a response
here is one of its watchers, reading the run's numbered events (`id:
<run_id>:<seq>` on each SSE event) and sending `: ping` while the model is
silent. A client that goes away leaves the run going, unless the agent says
`runs: {on_disconnect: stop}` (then it stops at its next event and stores its
partial answer). A run ended from outside (a cancel, the server shutting
down: `Turn.abort`) stores its partial answer at once and its `error` event
reaches every watcher, even while the model is silent.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Iterator

from wsproto.events import CloseConnection, TextMessage
from wsproto.frame_protocol import CloseReason

from agentd.turn.liveturns import live_turns
from agentd.turn.runs import PING_SECONDS, cancelled_error, shutting_down_error  # noqa: F401 (re-exported)
from agentd.vocab import Event


def stop_on_leave(agent) -> bool:
    """Whether the agent's runs stop when the client that started them goes away."""
    return (agent.setting("runs", {}) or {}).get("on_disconnect", "continue") == "stop"


def as_event(data: dict) -> Event:
    """An event of a run's buffer (its public form) as an Event, for filters."""
    return Event(data["type"], {k: v for k, v in data.items() if k != "type"})


def connection_releaser(database):
    """Close this thread's connection unless a transaction holds it (between a run's events).

    A stream spends its life waiting for tokens, and a thousand of them must not
    hold a thousand pooled connections: deltas never touch the database, so a
    connection is taken again only at the start, at tool steps and at the end.
    """
    def release() -> None:
        if not database.is_closed() and not database.in_transaction():
            database.close()
    return release


def sse_frame(event: Event, event_id: str | None = None) -> str:
    return data_frame(event.public(), event_id)


def data_frame(data: dict, event_id: str | None = None) -> str:
    """One SSE event for an event's public form; the `id:` line lets a client resume after it."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    tail = f"id: {event_id}\n" if event_id else ""
    return f"event: {data['type']}\ndata: {text}\n{tail}\n"


def sse_stream(run_id: str, items, filter_event=None, release=None, on_leave=None) -> Iterator[str]:
    """SSE text for a run's events (`items`: (seq, event) or None when idle).

    `filter_event` may drop or reshape events (the widget's); `on_leave()` runs
    when the client goes away before the run's end.
    """
    if release is not None:
        release()  # the request's own connection is not needed while the stream runs
    finished = False
    try:
        for item in items:
            if release is not None:
                release()
            if item is None:
                yield ": ping\n\n"
                continue
            seq, data = item
            if filter_event is None:
                yield data_frame(data, f"{run_id}:{seq}")
                continue
            event = filter_event(as_event(data))
            if event is not None:
                yield sse_frame(event, f"{run_id}:{seq}")
        finished = True
    finally:
        if hasattr(items, "close"):
            items.close()
        if not finished and on_leave is not None:
            on_leave()


SSE_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


# -- WebSocket ------------------------------------------------------------------------
WS_POLL_SECONDS = 0.1   # how often a running turn looks for a `cancel` frame
WS_IDLE_SECONDS = 1.0   # how often an idle socket looks whether the server is shutting down


def error_frame(code: str, message: str) -> str:
    return json.dumps({"type": "error", "error": {"code": code, "message": message}})


def ws_next_message(ws, idle_timeout: float | None = None) -> dict | None:
    """The next `message` (or approval `decision`) frame of an idle socket; None when it
    closed, idled out or the server stops.

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
        if body is not None and body.get("type") in ("message", "decision"):
            return body
        # a cancel with no running turn, or an unknown frame: nothing to do
    return None


def _close_idle(ws, idle_timeout: float) -> None:
    with contextlib.suppress(Exception):  # the client may have gone at the same moment
        ws.close(reason=CloseReason.NORMAL_CLOSURE, message=f"idle for {idle_timeout:g} s")


class _TooBigNotice:
    """simple-websocket's connection, telling the client why before closing a too-big frame.

    simple-websocket stops reading a message at `max_message_size` and closes
    with 1009; docs/api.md promises an `error` frame first, so it is sent just
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


def ws_stream(ws, run, filter_event=None, on_leave=None) -> None:
    """Send a run's events as text frames, answering frames that arrive meanwhile."""
    finished = False
    try:
        ended = False
        for item in run.follow(0, idle=WS_POLL_SECONDS):
            if item is not None:
                event = as_event(item[1])
                ended = event.type in ("done", "error")
                event = filter_event(event) if filter_event else event
                if event is not None:
                    ws.send(json.dumps(event.public(), ensure_ascii=False))
            if not ended:
                # After the last event a frame belongs to the socket's next turn: a client
                # that sends it at once must not be told this turn is still running.
                _ws_incoming(ws, run)
        finished = True
    finally:
        if not finished and on_leave is not None:
            on_leave()


def _ws_incoming(ws, run) -> None:
    """Frames received while a turn runs: `cancel` ends it, another `message` is refused."""
    while True:
        frame = ws.receive(timeout=0)
        if frame is None:
            return
        body = _parse_frame(ws, frame)
        if body is None:
            continue
        if body.get("type") == "cancel":
            run.cancel("the run was cancelled")  # its error event arrives through follow()
        elif body.get("type") in ("message", "decision"):
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
