"""Streaming through agentd: time to first delta against the upstream itself, and open streams held.

    .venv/bin/python -m bench.streams [--samples 40] [--levels 100,500,1000] [--seconds 10]

Starts bench/fake_upstream.py and agentd under gunicorn exactly as deployed
(`gunicorn -c gunicorn.conf.py wsgi:app`, one gevent worker unless --workers),
on 127.0.0.1, SQLite in a temporary folder. Prints:

- time to first delta: median over `samples` interleaved pairs, a streamed turn
  through agentd (request sent → first `delta` event) against the same stream
  straight from the upstream (request sent → first content chunk), and their ratio;
- open streams: for each level, that many streams of one token per second for
  `seconds` seconds, opened at `ramp` per second, all open at once at the peak;
  how many ended with `done`, how many with an error or a broken connection.

Not a test: nothing is asserted. The functions are importable (bench/__main__
builds its table on them): `start_upstream`, `start_agentd`, `ttfd_pairs`,
`hold_streams`, `measure`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import httpx
from gevent import socket as gsocket

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# -- processes ------------------------------------------------------------------------
@dataclass
class Process:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with contextlib.closing(gsocket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start:\n{log.read_text()[-2000:]}")


def start_upstream(workdir: Path) -> Process:
    """bench/fake_upstream.py in its own process."""
    port, log = _free_port(), workdir / "upstream.log"
    proc = subprocess.Popen([PYTHON, "-m", "bench.fake_upstream", "--port", str(port)], cwd=REPO,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    _wait_ready(f"http://127.0.0.1:{port}/", proc, log)
    return Process(proc, port, log)


def agents_yaml(upstream_url: str, stream_seconds: int) -> dict[str, str]:
    def agent(model: str) -> str:
        return textwrap.dedent(f"""\
            name: Bench {model}
            description: streaming benchmark agent
            model: {{provider: openai, name: "{model}", base_url: "{upstream_url}", retries: 0}}
            """)
    return {"quick": agent("t20"), "slow": agent(f"t{stream_seconds}-i1")}


def start_agentd(workdir: Path, upstream_url: str, stream_seconds: int = 10, workers: int = 1,
                 extra_env: dict | None = None) -> Process:
    """agentd under gunicorn with gunicorn.conf.py, SQLite in `workdir`."""
    agents = workdir / "agents"
    agents.mkdir(exist_ok=True)
    for agent_id, text in agents_yaml(upstream_url, stream_seconds).items():
        (agents / f"{agent_id}.yaml").write_text(text)
    port, log = _free_port(), workdir / "agentd.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env.update({"AGENTD_DATABASE_URL": f"sqlite:///{workdir / 'agentd.db'}", "AGENTD_AGENTS_DIR": str(agents),
                "AGENTD_HOST": "127.0.0.1", "AGENTD_PORT": str(port), "AGENTD_WORKERS": str(workers),
                "AGENTD_LOG_LEVEL": "WARNING", "AGENTD_ENTRY_POINTS": "false", **(extra_env or {})})
    proc = subprocess.Popen([PYTHON, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--access-logfile",
                             "/dev/null", "wsgi:app"], cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    _wait_ready(f"http://127.0.0.1:{port}/healthz", proc, log)
    return Process(proc, port, log)


# -- a raw streaming client (greenlets: thousands of streams from one process) ----------------
AGENTD_DELTA = b'"type":"delta"'
UPSTREAM_DELTA = b'"content":"'
ENDINGS = (b'"type":"done"', b'"type":"error"')


def _request(port: int, path: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nConnection: close\r\nContent-Length: {len(payload)}\r\n\r\n"
            ).encode() + payload


@dataclass
class StreamResult:
    first_delta: float | None = None   # seconds from sending the request
    ended: str = "open"                # done | error | broken | timeout | open
    deltas: int = 0


def run_stream(port: int, path: str, body: dict, delta_marker: bytes, until_end: bool,
               deadline: float) -> StreamResult:
    """Send one request; read to the first delta (or to the end when `until_end`)."""
    result = StreamResult()
    sock = gsocket.create_connection(("127.0.0.1", port), timeout=deadline)
    try:
        started = time.perf_counter()
        sock.sendall(_request(port, path, body))
        buffer = b""
        while True:
            data = sock.recv(65536)
            if not data:
                result.ended = "broken"
                return result
            if not buffer and not data.startswith(b"HTTP/1.1 200"):
                result.ended = "refused " + data[9:12].decode("latin-1")
                return result
            buffer = buffer[-64:] + data
            count = data.count(delta_marker)
            if count and result.first_delta is None:
                result.first_delta = time.perf_counter() - started
            result.deltas += count
            if not until_end and result.first_delta is not None:
                return result
            for ending in ENDINGS:
                if ending in buffer:
                    result.ended = ending.split(b'"')[-2].decode()
                    return result
    except (OSError, gsocket.timeout):
        result.ended = "timeout" if result.ended == "open" else result.ended
        return result
    finally:
        sock.close()


def ttfd_pairs(agentd_port: int, upstream_port: int, samples: int) -> tuple[list[float], list[float]]:
    """Interleaved first-delta times (seconds): through agentd, and straight from the upstream."""
    through, direct = [], []
    body = {"model": "t20", "stream": True, "messages": [{"role": "user", "content": "bench"}]}
    for _ in range(samples):
        up = run_stream(upstream_port, "/v1/chat/completions", body, UPSTREAM_DELTA, False, 30.0)
        ag = run_stream(agentd_port, "/api/agents/quick/chat", {"message": "bench", "stream": True},
                        AGENTD_DELTA, False, 30.0)
        if up.first_delta is not None and ag.first_delta is not None:
            direct.append(up.first_delta)
            through.append(ag.first_delta)
    return through, direct


@dataclass
class HoldResult:
    level: int
    done: int = 0
    failed: dict = field(default_factory=dict)
    peak_open: int = 0
    ttfd_p50: float | None = None

    def line(self) -> str:
        failures = ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) or "none"
        ttfd = f"{self.ttfd_p50 * 1000:.0f} ms" if self.ttfd_p50 is not None else "-"
        return (f"{self.level:>5} streams: {self.done} done, failures: {failures}; "
                f"peak open {self.peak_open}; first delta p50 {ttfd}")


def hold_streams(agentd_port: int, level: int, seconds: int, ramp: float = 100.0) -> HoldResult:
    """`level` streams of `seconds` one-per-second tokens, opened at `ramp`/s; bounded in time."""
    result = HoldResult(level)
    open_now = [0]
    deadline = seconds + level / ramp + 30.0

    def one() -> StreamResult:
        open_now[0] += 1
        result.peak_open = max(result.peak_open, open_now[0])
        try:
            return run_stream(agentd_port, "/api/agents/slow/chat", {"message": "hold", "stream": True},
                              AGENTD_DELTA, True, deadline)
        finally:
            open_now[0] -= 1

    greenlets = []
    for _ in range(level):
        greenlets.append(gevent.spawn(one))
        gevent.sleep(1.0 / ramp)
    gevent.joinall(greenlets, timeout=deadline)
    outcomes = [g.value if g.successful() else StreamResult(ended="exception") for g in greenlets]
    for outcome in outcomes:
        if outcome.ended == "done":
            result.done += 1
        else:
            result.failed[outcome.ended] = result.failed.get(outcome.ended, 0) + 1
    firsts = sorted(o.first_delta for o in outcomes if o.first_delta is not None)
    result.ttfd_p50 = statistics.median(firsts) if firsts else None
    return result


def measure(samples: int = 40, levels=(100, 500, 1000), seconds: int = 10, workers: int = 1,
            out=sys.stdout) -> dict:
    """Run both benchmarks against fresh processes; print and return the figures."""
    with tempfile.TemporaryDirectory(prefix="agentd-bench-streams-") as tmp:
        workdir = Path(tmp)
        upstream = start_upstream(workdir)
        agentd = None
        try:
            agentd = start_agentd(workdir, f"{upstream.url}/v1", seconds, workers)
            run_stream(agentd.port, "/api/agents/quick/chat", {"message": "warm", "stream": True},
                       AGENTD_DELTA, True, 30.0)
            through, direct = ttfd_pairs(agentd.port, upstream.port, samples)
            figures = {"ttfd_agentd_ms": statistics.median(through) * 1000,
                       "ttfd_direct_ms": statistics.median(direct) * 1000, "samples": len(through)}
            figures["ttfd_ratio"] = figures["ttfd_agentd_ms"] / figures["ttfd_direct_ms"]
            out.write(f"time to first delta (median of {len(through)}): agentd "
                      f"{figures['ttfd_agentd_ms']:.2f} ms, upstream direct {figures['ttfd_direct_ms']:.2f} ms, "
                      f"ratio {figures['ttfd_ratio']:.1f}x\n")
            out.flush()
            figures["levels"] = {}
            for level in levels:
                held = hold_streams(agentd.port, level, seconds)
                figures["levels"][level] = held
                out.write(held.line() + "\n")
                out.flush()
            return figures
        finally:
            if agentd:
                agentd.stop()
            upstream.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="agentd streaming benchmark (not a test)")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--levels", default="100,500,1000")
    parser.add_argument("--seconds", type=int, default=10, help="length of each held stream (1 token/s)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x]
    measure(args.samples, levels, args.seconds, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
