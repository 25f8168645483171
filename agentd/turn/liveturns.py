"""The turns running in this process: their lease heartbeat, and ending them at shutdown.

A turn holds its conversation's lease in the database for `turn_lease_seconds`.
One background thread (a greenlet under gevent) renews the leases of every
live turn at a third of that (at most every CHECKPOINT_SECONDS), in one UPDATE
per lease length and tick, so a long turn keeps its conversation while the
lease of a process that died runs out soon after, and recovery can mark its
rows. The same tick stores each stream's text so far in one transaction:
never a write per delta, and a `kill -9` loses at most one tick of text.

At shutdown the server calls `abort_all`: every live turn stores what it has
produced and its client gets an `error` event, instead of being cut mid-word.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from agentd.store.database import connection
from agentd.store.turns import renew_leases

log = logging.getLogger("agentd.turns")
CHECKPOINT_SECONDS = 5.0


class LiveTurns:
    """A registry of running turns; one per process (`live_turns`)."""

    def __init__(self):
        self._turns: dict[int, tuple[object, float]] = {}   # id(turn) -> (turn, renew_at)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.closing = False  # set at shutdown: no new turns should start

    def add(self, turn) -> None:
        with self._lock:
            self._turns[id(turn)] = (turn, time.monotonic() + _interval(turn))
            if self._thread is None or not self._thread.is_alive():
                # Started lazily: after a fork (gunicorn) only the worker runs it.
                self._thread = threading.Thread(target=self._run, daemon=True, name="agentd-lease")
                self._thread.start()
        self._wake.set()

    def discard(self, turn) -> None:
        with self._lock:
            self._turns.pop(id(turn), None)

    def snapshot(self) -> list:
        with self._lock:
            return [turn for turn, _ in self._turns.values()]

    def __len__(self) -> int:
        return len(self._turns)

    def abort_all(self, exc) -> int:
        """End every live turn with `exc` as its error event; returns how many were ended."""
        self.closing = True
        ended = 0
        with connection():
            for turn in self.snapshot():
                try:
                    ended += turn.abort(exc) is not None
                except Exception:  # noqa: BLE001 — one turn's failure must not keep others running
                    log.exception("could not end turn of %s", getattr(turn, "conversation_id", "?"))
        return ended

    # -- the heartbeat -------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=self._sleep())
            self._wake.clear()
            try:
                self._renew_due()
            except Exception:  # noqa: BLE001 — a database hiccup; the next tick retries
                log.exception("renewing turn leases failed")

    def _sleep(self) -> float:
        with self._lock:
            due = [renew_at for _, renew_at in self._turns.values()]
        return max(min(due) - time.monotonic(), 0.05) if due else 60.0

    def _renew_due(self) -> None:
        now = time.monotonic()
        groups: dict[int, list[str]] = defaultdict(list)
        checkpoints = []
        with self._lock:
            due = [(key, turn) for key, (turn, renew_at) in self._turns.items() if renew_at <= now]
            for key, turn in due:
                self._turns[key] = (turn, now + _interval(turn))
        for _, turn in due:
            groups[_lease(turn)].append(turn.token)
            checkpoint = turn.recorder.checkpoint()
            if checkpoint is not None:
                checkpoints.append(checkpoint)
        if groups:
            renew_leases(groups, checkpoints)


def _lease(turn) -> int:
    return int(turn.service.state.config.turn_lease_seconds)


def _interval(turn) -> float:
    # A third of the lease keeps it alive through two missed ticks; at most
    # CHECKPOINT_SECONDS so a crash loses little streamed text.
    return max(min(_lease(turn) / 3.0, CHECKPOINT_SECONDS), 0.2)


live_turns = LiveTurns()
