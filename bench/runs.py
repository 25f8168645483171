"""Attaching to a running turn: on the same process, and on another one through Redis.

Two agentd servers (gunicorn, as deployed) share one database and one
redis-server started here (AGENTD_REDIS_URL). A slow run (one token a second,
`slow60`) is started on A; meanwhile `GET /api/conversations/{id}/stream` is
timed to its first replayed event (the run's `start`), on A itself and on B
(through Redis), and each live delta is timed as it reaches A's own stream and
a watcher on B (the cross-process lag); then the run is cancelled. Skipped when redis-server is
missing.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import harness


@dataclass
class AttachResult:
    same_process: list[float] = field(default_factory=list)    # s from GET …/stream to the first event
    other_process: list[float] = field(default_factory=list)
    live_lag: list[float] = field(default_factory=list)        # s between A's own delta and B's copy
    skipped: str | None = None


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = harness.free_port()
    workdir.mkdir(parents=True, exist_ok=True)   # redis-server refuses a --dir that does not exist
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis
    client = redis.Redis(host="127.0.0.1", port=port)
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            client.ping()
            client.close()
            return proc, f"redis://127.0.0.1:{port}"
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def first_event_seconds(client: httpx.Client, conversation: str) -> float:
    """Time from sending GET …/stream to holding its first event."""
    start = time.perf_counter()
    with client.stream("GET", f"/api/conversations/{conversation}/stream") as response:
        if response.status_code != 200:
            raise RuntimeError(f"attach answered {response.status_code}")
        for line in response.iter_lines():
            if line.startswith("data:"):
                return time.perf_counter() - start
    raise RuntimeError("the attach stream ended without an event")


def _arrivals(url: str, method: str, path: str, out: dict, ready: threading.Event | None = None,
              **kwargs) -> None:
    """seq -> arrival time of each event of a stream (its `id:` lines), until it ends."""
    with httpx.Client(base_url=url, timeout=120) as client, client.stream(method, path, **kwargs) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and '"type":"start"' in line:
                out["conversation"] = line.split('"conversation_id":"', 1)[1].split('"', 1)[0]
                if ready is not None:
                    ready.set()
            elif line.startswith("id:"):
                out[int(line.rsplit(":", 1)[1])] = time.perf_counter()


def measure(work: Path, upstream_url: str, attaches: int, workers: int | None, log=print) -> AttachResult:
    started = start_redis(work)
    if started is None:
        return AttachResult(skipped="redis-server is not installed")
    redis_proc, redis_url = started
    env = {"AGENTD_REDIS_URL": redis_url}
    database = f"sqlite:///{work / 'runs.db'}"
    a = harness.start_agentd(work / "a", database, upstream_url, workers, env)
    b = harness.start_agentd(work / "b", database, upstream_url, workers, env)
    result = AttachResult()
    try:
        own: dict = {}
        ready = threading.Event()
        runner = threading.Thread(target=_arrivals, args=(a.url, "POST", "/api/agents/slow60/chat", own, ready),
                                  kwargs={"json": {"message": "hello", "stream": True}}, daemon=True)
        runner.start()
        if not ready.wait(30):
            raise RuntimeError("the slow run did not start")
        conversation = own["conversation"]
        watched: dict = {}
        watcher = threading.Thread(target=_arrivals, args=(b.url, "GET", f"/api/conversations/{conversation}/stream",
                                                           watched), daemon=True)
        watcher.start()
        log(f"runs: {attaches} attaches on the same process and on another one (Redis)")
        try:
            for _ in range(attaches):
                result.same_process.append(first_event_seconds(a.client, conversation))
                result.other_process.append(first_event_seconds(b.client, conversation))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; server logs:\n{a.log.read_text()[-1500:]}\n{b.log.read_text()[-3000:]}")
        time.sleep(3.5)  # a few live deltas reach both
        a.client.post(f"/api/conversations/{conversation}/cancel")
        runner.join(30)
        watcher.join(30)
        # Events that arrived live on both (not the ones B replayed after the fact).
        result.live_lag = [watched[seq] - own[seq] for seq in own
                           if isinstance(seq, int) and seq in watched and watched[seq] > own[seq] - 0.5 and seq > 2]
    finally:
        a.stop()
        b.stop()
        redis_proc.terminate()
        redis_proc.wait(10)
    return result
