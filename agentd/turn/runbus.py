"""The bus that carries runs' events and cancels between processes and hosts.

`LocalBus` is no bus at all: a run is seen only by the process driving it.
`RedisBus` (AGENTD_REDIS_URL) keeps each run's events in a Redis Stream
`agentd:run:<run_id>`, entry id `<seq>-0`, so "the events after seq N" is one
XREAD from `N-0`, and a watcher on any process blocks on it for live ones.
The stream is capped (MAXLEN ~ MAX_EVENTS, older entries go first) and
expires RETAIN_SECONDS after the run ends (LIVE_SECONDS while it runs, renewed
as it goes, so a dead process's stream goes away too). A cancel is a PUBLISH
on one channel every process listens to; the process driving that run stops
it, and the run's own `error` event is the answer the canceller waits for.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from agentd.errors import ApiError

log = logging.getLogger("agentd.runs")

CANCEL_CHANNEL = "agentd:runs:cancel"
MAX_EVENTS = 20000
RETAIN_SECONDS = 600
LIVE_SECONDS = 3600
CANCEL_WAIT_SECONDS = 10.0


BUS_RETRY_SECONDS = 5.0   # a watcher rides out a Redis restart this long, then says so
WARN_EVERY_SECONDS = 10.0  # at most one "could not publish" line per this many seconds


def lost_error() -> ApiError:
    return ApiError("the process running this turn went away before it finished",
                    status=500, code="INTERNAL_ERROR")


def bus_lost_error() -> ApiError:
    """Redis is unreachable: the run goes on where it runs; this watcher cannot follow it."""
    return ApiError("the connection to the run's events (Redis) was lost; the run goes on: "
                    "attach again shortly, or read the history when it ends",
                    status=503, code="SERVICE_UNAVAILABLE")


def _key(run_id: str) -> str:
    return f"agentd:run:{run_id}"


def _error_item(exc: ApiError) -> dict:
    return {"type": "error", "error": {"code": exc.code, "message": exc.message}}


class LocalBus:
    """No bus: runs are reachable within this process only."""

    shared = False

    def published(self, run_id: str, seq: int, data: dict) -> None:
        pass

    def ended(self, run_id: str) -> None:
        pass

    def listen(self, on_cancel) -> None:
        pass


class RedisBus:
    """Runs' events through Redis Streams, cancels through Redis pub/sub."""

    shared = True

    def __init__(self, url: str):
        import redis
        self.redis = redis.Redis.from_url(url)
        self._listener: threading.Thread | None = None
        self._warned_at = float("-inf")

    # -- the run's process ----------------------------------------------------------------
    def published(self, run_id: str, seq: int, data: dict) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(_key(run_id), {"e": json.dumps(data, ensure_ascii=False, separators=(",", ":"))},
                      id=f"{seq}-0", maxlen=MAX_EVENTS, approximate=True)
            if seq == 1 or seq % 500 == 0:
                pipe.expire(_key(run_id), LIVE_SECONDS)
            pipe.execute()
        except Exception:  # noqa: BLE001 — watchers elsewhere miss events; the run itself goes on
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_SECONDS:  # not once per streamed token
                self._warned_at = now
                log.warning("could not publish event %d of run %s to Redis", seq, run_id, exc_info=True)

    def ended(self, run_id: str) -> None:
        self.redis.expire(_key(run_id), RETAIN_SECONDS)

    def listen(self, on_cancel) -> None:
        """Serve cancels other processes publish (a daemon thread: a greenlet under gevent)."""
        self._listener = threading.Thread(target=self._listen, args=(on_cancel,), daemon=True,
                                          name="agentd-run-cancels")
        self._listener.start()

    def _listen(self, on_cancel) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CANCEL_CHANNEL)
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        on_cancel(message["data"].decode())
            except Exception:  # noqa: BLE001 — Redis restarting: subscribe again shortly
                log.warning("listening for run cancels failed; retrying", exc_info=True)
                time.sleep(1.0)

    # -- any process ----------------------------------------------------------------------
    def belongs(self, run_id: str, conversation_id: str) -> bool:
        """Whether that run's events are kept and it ran in this conversation (its `start` says)."""
        import redis
        try:
            first = self.redis.xrange(_key(run_id), count=1)
        except redis.RedisError as exc:
            raise bus_lost_error() from exc
        return bool(first) and json.loads(first[0][1][b"e"]).get("conversation_id") == conversation_id

    def follow(self, run_id: str, after: int, idle: float, still_running=None):
        """Events after seq `after` and live ones until `done`/`error`; None after `idle` s silent.

        `still_running(run_id)` is asked when nothing came for `idle` seconds: a run
        whose process died never writes its end, so the watcher ends it. When Redis
        stays unreachable for BUS_RETRY_SECONDS the watcher gets `error`
        SERVICE_UNAVAILABLE (its id the last seq it had, so a resume loses nothing).
        """
        last = f"{max(after, 0)}-0"
        while True:
            found = self._read(run_id, last, idle)
            if found is False:
                yield int(last.split("-")[0]), _error_item(bus_lost_error())
                return
            if not found:
                if still_running is not None and not still_running(run_id) and not self._has_after(run_id, last):
                    yield int(last.split("-")[0]) + 1, _error_item(lost_error())
                    return
                yield None
                continue
            for entry_id, fields in found[0][1]:
                last = entry_id.decode()
                data = json.loads(fields[b"e"])
                yield int(last.split("-")[0]), data
                if data.get("type") in ("done", "error"):
                    return

    def _read(self, run_id: str, last: str, idle: float):
        """One XREAD after `last`; False when Redis stayed unreachable BUS_RETRY_SECONDS."""
        import redis
        deadline = time.monotonic() + BUS_RETRY_SECONDS
        while True:
            try:
                return self.redis.xread({_key(run_id): last}, count=500, block=max(int(idle * 1000), 1))
            except redis.RedisError:
                if time.monotonic() >= deadline:
                    log.warning("lost Redis while following run %s", run_id, exc_info=True)
                    return False
                time.sleep(0.5)

    def _has_after(self, run_id: str, last: str) -> bool:
        return bool(self.redis.xrange(_key(run_id), min=f"({last}", count=1))

    def cancel(self, run_id: str) -> bool:
        """Ask the run's process to cancel it; True once its `error` CANCELLED came back."""
        newest = self.redis.xrevrange(_key(run_id), count=1)
        if newest and json.loads(newest[0][1][b"e"]).get("type") in ("done", "error"):
            return False
        if not self.redis.publish(CANCEL_CHANNEL, run_id):
            return False
        last = newest[0][0].decode() if newest else "0-0"
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while time.monotonic() < deadline:
            found = self.redis.xread({_key(run_id): last}, count=500, block=250)
            for entry_id, fields in (found[0][1] if found else []):
                last = entry_id.decode()
                data = json.loads(fields[b"e"])
                if data.get("type") in ("done", "error"):
                    return (data.get("error") or {}).get("code") == "CANCELLED"
        return False


def make_bus(redis_url: str | None):
    return RedisBus(redis_url) if redis_url else LocalBus()
