"""The OpenAI-compatible route against the native one, in the same run: what the projection costs.

    .venv/bin/python -m bench.protocols [--rounds 5] [--per-round 40]

Starts the fast fake upstream and agentd under gunicorn (bench/harness.py), then
runs interleaved rounds of: the direct call to the upstream (the floor),
`POST /api/agents/fast/chat`, and `POST /v1/chat/completions` with
`model: fast`, non-streamed and streamed (time to the first content). Reports
medians, each route's overhead over the floor, and the /v1 overhead as a share
of the native overhead (goal: within 10 %). Not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import harness, report, turns
from bench.report import Row, ms, verdict
from bench.turns import median

MESSAGES = [{"role": "user", "content": "hello"}]


def openai_turn(client: httpx.Client, agent: str = "fast") -> float:
    start = time.perf_counter()
    response = client.post("/v1/chat/completions", json={"model": agent, "messages": MESSAGES})
    if response.status_code != 200:
        raise RuntimeError(f"/v1 turn failed: {response.status_code} {response.text[:200]}")
    response.json()
    return time.perf_counter() - start


def openai_stream(client: httpx.Client, agent: str = "fast") -> float:
    """Time to the first chunk carrying content (the role-only first chunk does not count)."""
    start = time.perf_counter()
    first = None
    with client.stream("POST", "/v1/chat/completions",
                       json={"model": agent, "messages": MESSAGES, "stream": True}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"/v1 stream failed: {response.status_code}")
        for line in response.iter_lines():
            if first is None and line.startswith("data: {") and '"content":"' in line \
                    and '"content":""' not in line:
                first = time.perf_counter() - start
    return first if first is not None else float("nan")


@dataclass
class Samples:
    floor: list[float] = field(default_factory=list)
    native: list[float] = field(default_factory=list)
    openai: list[float] = field(default_factory=list)
    floor_ttfd: list[float] = field(default_factory=list)
    native_ttfd: list[float] = field(default_factory=list)
    openai_ttfd: list[float] = field(default_factory=list)


def run_rounds(server, upstream: str, rounds: int, per_round: int, log=print) -> Samples:
    samples, direct, client = Samples(), httpx.Client(timeout=30.0), server.client
    for _ in range(3):  # warm both routes and the connections
        turns.direct_call(direct, upstream), turns.agentd_turn(client), openai_turn(client)
    for number in range(rounds):
        log(f"protocols: round {number + 1}/{rounds}")
        for _ in range(per_round):  # interleaved call by call: a busy moment hits every kind alike
            samples.floor.append(turns.direct_call(direct, upstream))
            samples.native.append(turns.agentd_turn(client))
            samples.openai.append(openai_turn(client))
            samples.floor_ttfd.append(turns.direct_stream(direct, upstream)[0])
            samples.native_ttfd.append(turns.agentd_stream(client)[0])
            samples.openai_ttfd.append(openai_stream(client))
    direct.close()
    return samples


def _share(route: list[float], native: list[float], floor: list[float]) -> tuple[float, float, float]:
    """(native overhead, /v1 overhead, /v1 overhead as a share of the native one − 1)."""
    base = median(floor)
    native_over, route_over = median(native) - base, median(route) - base
    return native_over, route_over, route_over / native_over - 1


def rows(s: Samples) -> list[Row]:
    out = []
    for label, route, native, floor in (
            ("non-streamed turn", s.openai, s.native, s.floor),
            ("time to first delta", s.openai_ttfd, s.native_ttfd, s.floor_ttfd)):
        native_over, route_over, extra = _share(route, native, floor)
        out.append(Row(f"{label}, p50: /v1/chat/completions vs native", f"{ms(median(route))} vs "
                       f"{ms(median(native))}", ms(median(floor)), f"×{median(route) / median(native):.2f}"))
        out.append(Row(f"{label}: overhead over the floor, /v1 vs native", f"{ms(route_over)} vs "
                       f"{ms(native_over)} ({extra:+.0%})", "", "", "/v1 within 10 % of native",
                       verdict(extra <= 0.10)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.protocols", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=40)
    args = parser.parse_args(argv)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    upstream = harness.start_upstream()
    try:
        with tempfile.TemporaryDirectory(prefix="agentd-bench-") as tmp:
            server = harness.start_agentd(Path(tmp), f"sqlite:///{Path(tmp) / 'agentd.db'}", upstream.url)
            try:
                samples = run_rounds(server, upstream.url, args.rounds, args.per_round, log)
            finally:
                server.stop()
    finally:
        upstream.stop()
    print(f"agentd protocols benchmark: {report.machine()}\n\n{report.table(rows(samples))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
