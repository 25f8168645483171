"""Runs: a turn owned by the server, not by the connection that started it.

A streamed turn is driven by a worker of its own (a greenlet under gevent, a
thread under the development server) that stores what each event carries and
appends the public events, numbered `seq` 1, 2, 3…, to the run's buffer.
Clients are *watchers*: the one that started the run and any that attach
later (`GET /api/conversations/{id}/stream`) read the same buffer from any
`seq`, each at its own pace, so a client going away costs the run nothing
(unless the agent says `runs: {on_disconnect: stop}`). A non-streamed turn is
a run too, driven by its own request.

With a shared bus (agentd.turn.runbus, Redis) every event is also published
there, so a watcher or a cancel on another process or host reaches the run.
A finished run stays readable for RETAIN_SECONDS, so a client that lost the
end of a stream can still fetch it by `Last-Event-ID`.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections import deque
from typing import Iterator

from agentd.errors import ApiError
from agentd.store.database import connection
from agentd.turn.runbus import LocalBus, lost_error
from agentd.vocab import Event

log = logging.getLogger("agentd.runs")

RETAIN_SECONDS = 600.0          # a finished run's events stay readable this long…
RETAIN_RUNS = 500               # …for this many runs at most (memory; Redis keeps them all)
PING_SECONDS = 15.0
TERMINAL = frozenset({"done", "error"})
YIELD_EVENTS = 3                # the driver lets its watchers run after each of the first events

Item = tuple[int, dict]         # (seq, the event's public form)


def new_run_id() -> str:
    return "run_" + secrets.token_urlsafe(12)


def cancelled_error() -> ApiError:
    return ApiError("the turn was cancelled; the answer so far was stored", status=409, code="CANCELLED")


def shutting_down_error() -> ApiError:
    return ApiError("the server is shutting down; the answer so far was stored",
                    status=503, code="SERVICE_UNAVAILABLE")


def left_error() -> ApiError:
    return ApiError("the client that started the run went away; the answer so far was stored",
                    status=409, code="CANCELLED")


class Run:
    """One turn's numbered events, its watchers and its driver."""

    def __init__(self, turn, bus, on_end=None):
        self.turn = turn
        self.id = turn.conversation.run_id or new_run_id()
        self.conversation_id = turn.conversation_id
        self.bus = bus
        self.events: list[dict] = []       # event seq is its index + 1
        self.ended = False
        self.ended_at: float | None = None
        self.abort_error: ApiError | None = None
        # Watchers waiting for the next event, each on an Event of its own. Not a Condition:
        # under gevent its notify checks ownership with a failing non-blocking acquire,
        # which yields to the hub on every event.
        self._lock = threading.Lock()
        self._waiting: list[threading.Event] = []
        self._on_end = on_end
        self._settled: tuple | None = None  # (final message or None,) once the end is known
        self._end_callbacks: list = []
        turn.listeners.append(self._aborted)

    # -- the producing side -----------------------------------------------------------
    def publish(self, event: Event) -> int | None:
        """Number an event and hand it to the watchers; None once the run has ended."""
        if event.type in TERMINAL:
            self._settle(event)  # before any watcher sees the end (see when_ended)
        data = event.public()
        if event.type == "start":
            data["run_id"] = self.id
        with self._lock:  # also keeps the bus in seq order
            if self.ended:
                return None
            self.events.append(data)
            seq = len(self.events)
            self.ended = event.type in TERMINAL
            woke = bool(self._waiting)
            for wake in self._waiting:
                wake.set()
            self._waiting.clear()
            self.bus.published(self.id, seq, data)
        if woke and seq <= YIELD_EVENTS:
            # Let the watchers send it now: under gevent the driver would otherwise go on
            # through every chunk already buffered before any watcher ran (time to first
            # delta). Later events go in batches: a hub trip per delta costs more than it saves.
            time.sleep(0)
        return seq

    def drive(self, scope=contextlib.nullcontext, release=None) -> Iterator[Event]:
        """Run the turn here, publishing its events; yields them too (a non-streamed request)."""
        terminal = None
        try:
            with scope(), contextlib.closing(self.turn.events()) as events:
                for event in events:
                    if release is not None:
                        release()
                    if event.type in TERMINAL:
                        terminal = event  # told once the turn has stored its end (below)
                        continue
                    self.publish(event)
                    yield event
                    if self.turn.cancelled:
                        break  # closing() runs the turn's finally here, inside scope()
            # The turn's own `finally` has run: what a client reads after `done` or `error`
            # (the history, the conversation's `running`) is already final.
            if terminal is not None:
                self.publish(terminal)
                yield terminal
        finally:
            if release is not None:
                release()
            self._end()

    def start(self, scope=contextlib.nullcontext, release=None) -> "Run":
        """Drive the run in a worker of its own: it goes on whoever watches."""
        def work():
            for _ in self.drive(scope, release):
                pass
        threading.Thread(target=work, daemon=True, name=f"run-{self.id}").start()
        return self

    def _aborted(self, event: Event) -> None:
        """Turn.abort (a cancel, the server shutting down) stored the partial; tell the watchers."""
        self.abort_error = event.payload
        self.publish(event)

    def _end(self) -> None:
        if not self.ended:
            # Stopped without done or error (its client left with `on_disconnect: stop`).
            exc = self.abort_error or left_error()
            self.publish(Event("error", {"error": {"code": exc.code, "message": exc.message}}, payload=exc))
        self.ended_at = time.monotonic()
        try:
            self.bus.ended(self.id)
        except Exception:  # noqa: BLE001 — the bus is best effort; local watchers have it all
            log.exception("could not mark run %s ended on the bus", self.id)
        if self._on_end is not None:
            self._on_end(self)

    def when_ended(self, callback) -> None:
        """Call `callback(final)` once, when the run ends: `final` is the `done` message (with
        its usage), or None when the run ended otherwise. It runs before any watcher sees the
        end, so what it records is in place when a client reads `done` (now, if it has ended).
        """
        with self._lock:
            if self._settled is None:
                self._end_callbacks.append(callback)
                return
            final = self._settled[0]
        self._call_end(callback, final)

    def _settle(self, terminal: Event) -> None:
        final = None
        if terminal.type == "done":
            final = {**terminal.data["message"], "usage": terminal.data.get("usage")}
        with self._lock:
            if self._settled is not None or self.ended:
                return
            self._settled = (final,)
            callbacks, self._end_callbacks = self._end_callbacks, []
        for callback in callbacks:
            self._call_end(callback, final)

    def _call_end(self, callback, final: dict | None) -> None:
        try:
            callback(final)
        except Exception:  # noqa: BLE001 — one callback's failure must not stop the others
            log.exception("an end callback of run %s failed", self.id)

    # -- the watching side --------------------------------------------------------------
    def follow(self, after: int = 0, idle: float = PING_SECONDS) -> Iterator[Item | None]:
        """Events after seq `after`, then live ones until the end; None after `idle` s of silence."""
        seq = max(after, 0)
        wake = threading.Event()  # this watcher's, set by publish when it waits
        while True:
            batch, ended = self._after(seq, idle, wake)
            if not batch:
                if ended:
                    return
                yield None
                continue
            for data in batch:
                seq += 1
                yield seq, data
            if ended and seq >= len(self.events):
                return

    def _after(self, seq: int, idle: float, wake: threading.Event) -> tuple[list[dict], bool]:
        """The events after `seq` (waiting up to `idle` s for one), and whether the run ended."""
        with self._lock:
            if len(self.events) > seq or self.ended:
                return self.events[seq:], self.ended
            wake.clear()
            self._waiting.append(wake)
        wake.wait(idle)
        with self._lock:
            if wake in self._waiting:
                self._waiting.remove(wake)  # timed out: the next publish need not wake it
            return self.events[seq:], self.ended

    def cancel(self, reason: str = "the run was cancelled") -> bool:
        """Stop the run now: its partial answer is stored, watchers get `error` CANCELLED."""
        turn = self.turn
        if turn is None or self.ended:
            return False
        turn.recorder.end_reason = reason
        return turn.abort(cancelled_error()) is not None

    def leave(self) -> None:
        """The client that started the run went away and the agent says `on_disconnect: stop`."""
        turn = self.turn
        if turn is not None and not self.ended:
            turn.cancel()  # the worker stops at its next event and stores the partial


class RunService:
    """The runs of this process, and the bus that reaches the others'; one per app."""

    def __init__(self, bus=None, retain: float = RETAIN_SECONDS, retain_runs: int = RETAIN_RUNS):
        self.bus = bus or LocalBus()
        self.retain, self.retain_runs = retain, retain_runs
        self._runs: dict[str, Run] = {}            # run id -> run (live, or ended within `retain`)
        self._by_conversation: dict[str, Run] = {}  # conversation id -> its live run
        self._ended: deque = deque()
        self._lock = threading.Lock()
        self.bus.listen(self._cancel_requested)

    def begin(self, turn) -> Run:
        run = Run(turn, self.bus, on_end=self._ended_run)
        with self._lock:
            self._prune()
            self._runs[run.id] = run
            self._by_conversation[run.conversation_id] = run
        return run

    def _ended_run(self, run: Run) -> None:
        with self._lock:
            if self._by_conversation.get(run.conversation_id) is run:
                del self._by_conversation[run.conversation_id]
            self._ended.append(run)
        run.turn = None  # the turn's memory goes; its events stay for late readers

    def _prune(self) -> None:
        cutoff = time.monotonic() - self.retain
        while self._ended and (self._ended[0].ended_at < cutoff or len(self._ended) > self.retain_runs):
            self._runs.pop(self._ended.popleft().id, None)

    def local(self, run_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def live_in(self, conversation_id: str) -> Run | None:
        with self._lock:
            run = self._by_conversation.get(conversation_id)
        return run if run is not None and not run.ended else None

    # -- attach --------------------------------------------------------------------------
    def watch(self, conversation_id: str, running: dict | None, after: int = 0,
              run_id: str | None = None, idle: float = PING_SECONDS, still_running=None):
        """(run id, events after `after`) of the conversation's run, or None when none runs.

        `running` is what the database says runs there (any process); `run_id`, a run a
        client names by `Last-Event-ID`, may also have ended within the retention time.
        `still_running(run_id)` tells a remote watcher whether the owner is alive.
        """
        wanted = run_id or (running or {}).get("run_id")
        local = self.local(wanted) if wanted else self.live_in(conversation_id)
        if local is not None and local.conversation_id == conversation_id:
            if run_id is None and local.ended:
                return None
            return local.id, local.follow(after, idle)
        if not wanted or not self.bus.shared:
            return None
        if run_id is not None and (running or {}).get("run_id") != run_id \
                and not self.bus.belongs(run_id, conversation_id):
            return None  # not this conversation's run (or no longer kept)
        if run_id is None and running is None:
            return None
        return wanted, self.bus.follow(wanted, after, idle, still_running)

    # -- cancel --------------------------------------------------------------------------
    def cancel(self, conversation_id: str, running: dict | None) -> str | None:
        """Cancel the conversation's run wherever it runs; its id, or None when none ran."""
        local = self.live_in(conversation_id)
        if local is not None:
            return local.id if local.cancel() else None
        if running is None or not self.bus.shared:
            return None
        return running["run_id"] if self.bus.cancel(running["run_id"]) else None

    def _cancel_requested(self, run_id: str) -> bool:
        """Another process asked (through the bus) to cancel a run; True if it was ours."""
        run = self.local(run_id)
        if run is None:
            return False
        with connection():  # the bus's listener thread holds no connection
            return run.cancel()


__all__ = ["Run", "RunService", "new_run_id", "cancelled_error", "shutting_down_error", "lost_error"]
