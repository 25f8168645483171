"""`python -m bench [--quick] [--postgres URL]`: agentd's own cost against the floor, one table.

Starts the fast fake upstream and agentd under gunicorn (docs/deploy.md) on
127.0.0.1, measures, prints one Markdown table and writes it to
bench/results/latest.md. Every loop is bounded in count and time; nothing
leaves the loopback interface. See bench/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import harness, history, protocols, report, runs, turns

# (rounds, calls per round, seconds at 16 clients, open-stream levels, history size, pages)
@dataclass(frozen=True)
class Scale:
    rounds: int
    per_round: int
    seconds: float
    streams: tuple[tuple[int, int], ...]     # (count, seconds each)
    conversations: int
    per_conversation: int
    pages: int


QUICK = Scale(rounds=3, per_round=20, seconds=4, streams=((100, 10),), conversations=1000,
              per_conversation=100, pages=200)
FULL = Scale(rounds=8, per_round=50, seconds=10, streams=((100, 20), (500, 20), (1000, 60)),
             conversations=10_000, per_conversation=100, pages=1000)
RAMP_PER_SECOND = 100   # the goal: accept at least 100 new streams per second


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (about two minutes)")
    parser.add_argument("--postgres", default=os.environ.get("AGENTD_BENCH_POSTGRES_URL"),
                        help="admin URL of a PostgreSQL server for the history benchmark "
                             "(a throwaway database is created and dropped); default "
                             "$AGENTD_BENCH_POSTGRES_URL")
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn workers (default: what gunicorn.conf.py says)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: turns,concurrency,protocols,streams,runs,history")
    parser.add_argument("--out", default=str(harness.REPO / "bench" / "results" / "latest.md"))
    return parser.parse_args(argv)


def run_turns(args, scale: Scale, upstream, work: Path, rows: list) -> None:
    server = harness.start_agentd(work / "turns", f"sqlite:///{work / 'turns' / 'agentd.db'}",
                                  upstream.url, args.workers)
    try:
        log(f"turns: {scale.rounds} interleaved rounds of {scale.per_round} calls of each kind")
        samples = turns.run_rounds(server, upstream.url, scale.rounds, scale.per_round, log)
        rows += report.turn_rows(samples)
        writes = {"non-streamed": turns.count_writes(upstream.url, work / "trace1", "fast", False),
                  "streamed, 1 token": turns.count_writes(upstream.url, work / "trace2", "one", True),
                  "streamed, 50 tokens": turns.count_writes(upstream.url, work / "trace3", "fast", True),
                  "one tool round": turns.count_writes(upstream.url, work / "trace4", "tool", False)}
        rows += report.write_rows(writes)
        if "concurrency" not in args.skip:
            log(f"concurrency: 16 clients for {scale.seconds:.0f} s each (floor, turns, streams)")
            rows += report.concurrency_rows(turns.concurrent_turns(server, upstream.url, 16, scale.seconds))
    finally:
        server.stop()


def run_streams(args, scale: Scale, upstream, work: Path, rows: list) -> None:
    results = []
    for count, seconds in scale.streams:
        # A fresh server per level, so one level's leftovers cannot hurt the next.
        server = harness.start_agentd(work / f"streams{count}", f"sqlite:///{work / f'streams{count}' / 'a.db'}",
                                      upstream.url, args.workers)
        try:
            log(f"open streams: {count} × {seconds} s at {RAMP_PER_SECOND}/s, "
                f"workers {len(server.workers())}")
            results.append(turns.open_streams(server, count, seconds, RAMP_PER_SECOND, f"slow{seconds}"))
        finally:
            server.stop()
    rows += report.stream_rows(results)


def run_protocols(args, scale: Scale, upstream, work: Path, rows: list) -> None:
    server = harness.start_agentd(work / "protocols", f"sqlite:///{work / 'protocols' / 'agentd.db'}",
                                  upstream.url, args.workers)
    try:
        rows += protocols.rows(protocols.run_rounds(server, upstream.url, scale.rounds, scale.per_round, log))
    finally:
        server.stop()


def run_runs(args, scale: Scale, upstream, work: Path, rows: list) -> None:
    rows += report.attach_rows(runs.measure(work / "runs", upstream.url, scale.per_round, args.workers, log))


def run_history(args, scale: Scale, upstream, work: Path, rows: list) -> None:
    results, skipped = [], []
    size = scale.conversations * scale.per_conversation
    log(f"history: {size:,} messages in {scale.conversations:,} conversations, {scale.pages} pages")
    results.append(history.run_history("sqlite", f"sqlite:///{work / 'history.db'}", work, upstream.url,
                                       scale.conversations, scale.per_conversation, scale.pages, log))
    if args.postgres:
        with history.postgres_database(args.postgres) as url:
            results.append(history.run_history("postgresql", url, work, upstream.url, scale.conversations,
                                               scale.per_conversation, scale.pages, log))
    else:
        skipped.append("PostgreSQL (no --postgres URL or AGENTD_BENCH_POSTGRES_URL)")
    rows += report.history_rows(results, skipped)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    scale = QUICK if args.quick else FULL
    started = time.monotonic()
    rows: list[report.Row] = []
    upstream = harness.start_upstream()
    log(f"fake upstream: {upstream.module} on {upstream.url}; agentd: {' '.join(harness.gunicorn_command(0, args.workers)[2:])}")
    try:
        with tempfile.TemporaryDirectory(prefix="agentd-bench-") as tmp:
            work = Path(tmp)
            parts = [("turns", run_turns), ("protocols", run_protocols), ("streams", run_streams),
                     ("runs", run_runs),
                     ("history", run_history)]
            for name, part in parts:
                if name not in args.skip:
                    part(args, scale, upstream, work, rows)
    finally:
        upstream.stop()
    text = (f"agentd benchmark ({'quick' if args.quick else 'full'} run, "
            f"{time.monotonic() - started:.0f} s): {report.machine()}\n\n{report.table(rows)}\n")
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
