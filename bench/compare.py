"""`python -m bench.compare --baseline REV`: an older tree and this one, served side by side, interleaved.

Checks REV out into a temporary git worktree, serves it and this checkout with
gunicorn (each tree's own gunicorn.conf.py, one worker, its own SQLite file) on
one fake upstream (bench/harness.py), and measures both in alternating order
round after round, so a busy moment of the machine hits both alike. Prints one
Markdown table of medians over rounds, with the range of the per-round ratios
(the round-to-round spread). Not a test: nothing is asserted. See bench/README.md.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import harness, turns

CLIENTS = 16
SIDES = ("baseline", "current")
# Written into each server's plugin folder: the worker records which agentd package it imported.
WHERE_PLUGIN = '''"""Bench plugin: records the agentd package this worker imported (bench/compare.py)."""
from pathlib import Path
import agentd
(Path(__file__).resolve().parent.parent / "agentd-file.txt").write_text(agentd.__file__)
'''
# (key, label, decimals); the keys are what measure_* return.
METRICS = [
    ("c1_start", "concurrency 1, streamed 50 tokens: time to `start` p50 (ms)", 2),
    ("c1_ttfd", "concurrency 1, streamed 50 tokens: time to first delta p50 (ms)", 2),
    ("c1_done", "concurrency 1, streamed 50 tokens: time to `done` p50 (ms)", 2),
    ("c1_turn", "concurrency 1, non-streamed turn p50 (ms)", 2),
    ("c1_cpu_stream", "concurrency 1, worker CPU per streamed turn (ms)", 2),
    ("c1_cpu_turn", "concurrency 1, worker CPU per non-streamed turn (ms)", 2),
    ("c16_turns", f"{CLIENTS} clients, non-streamed turns/s", 1),
    ("c16_streams", f"{CLIENTS} clients, streamed turns/s", 1),
    ("c16_ttfd_p50", f"{CLIENTS} clients, streamed: time to first delta p50 (ms)", 1),
    ("c16_ttfd_p99", f"{CLIENTS} clients, streamed: time to first delta p99 (ms)", 1),
    ("c16_cpu_turn", f"{CLIENTS} clients, worker CPU per non-streamed turn (ms)", 2),
    ("c16_cpu_stream", f"{CLIENTS} clients, worker CPU per streamed turn (ms)", 2),
    ("errors", "errors (sum over rounds)", 0),
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(harness.REPO), *args], check=True,
                          capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def detached_tree(rev: str):
    """REV checked out in a temporary detached worktree, removed at the end."""
    tmp = Path(tempfile.mkdtemp(prefix="agentd-compare-"))
    tree = tmp / "tree"
    git("worktree", "add", "--detach", str(tree), rev)
    try:
        yield tree
    finally:
        git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)


# -- which Python serves the baseline ----------------------------------------------------------
def unmet_pins(requirements: Path) -> list[str]:
    """The `name==version` lines of a requirements file this venv does not satisfy exactly."""
    specs = [line.split("#", 1)[0].strip() for line in requirements.read_text().splitlines()]
    pins = [[part.strip() for part in spec.split("==", 1)] for spec in specs if "==" in spec]
    return [f"{name}=={version}" for name, version in pins
            if installed_version(name.split("[", 1)[0]) != version]


def installed_version(name: str) -> str | None:
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version(name)
    return None


def python_for(tree: Path) -> str:
    """This venv's Python when it has every pin of the tree; else a venv of the tree's own
    requirements, cached under the temp folder by their hash (built once)."""
    requirements = tree / "requirements.txt"
    unmet = unmet_pins(requirements)
    if not unmet:
        return harness.PYTHON
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"agentd-compare-venv-{digest}"
    python = venv / "bin" / "python"
    if not (venv / "ready").exists():
        log(f"baseline needs {', '.join(unmet[:5])}{' …' if len(unmet) > 5 else ''}: building {venv}")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
        (venv / "ready").touch()
    return str(python)


# -- the two servers ---------------------------------------------------------------------------
@dataclass
class Side:
    name: str
    server: harness.Agentd


def start_side(name: str, tree: Path, upstream: harness.Upstream, work: Path) -> Side:
    """gunicorn serving `tree`'s agentd (cwd and PYTHONPATH = the tree), checked from the worker."""
    workdir = work / name
    (workdir / "plugins").mkdir(parents=True)
    (workdir / "plugins" / "bench_where.py").write_text(WHERE_PLUGIN)
    python = python_for(tree)
    server = harness.start_agentd(workdir, f"sqlite:///{workdir / 'agentd.db'}", upstream.url, 1,
                                  {"PYTHONPATH": str(tree)}, tree=tree, python=python)
    where = Path((workdir / "agentd-file.txt").read_text()).resolve()
    if not where.is_relative_to(tree.resolve()):
        server.stop()
        raise RuntimeError(f"{name}: the worker imported {where}, not {tree}'s agentd")
    log(f"{name}: {tree} served by {python}; the worker's agentd is {where}")
    return Side(name, server)


def warm(side: Side) -> None:
    for _ in range(20):
        turns.agentd_turn(side.server.client)
        turns.stream_times(side.server.client)


# -- measurements (each returns metric key -> value) -----------------------------------------------
def measure_single(side: Side, calls: int) -> dict[str, float]:
    client, cpu = side.server.client, side.server.cpu_seconds
    cpu0 = cpu()
    streams = [turns.stream_times(client) for _ in range(calls)]
    cpu1 = cpu()
    plain = [turns.agentd_turn(client) for _ in range(calls)]
    cpu2 = cpu()
    return {"c1_cpu_stream": (cpu1 - cpu0) / calls * 1000, "c1_cpu_turn": (cpu2 - cpu1) / calls * 1000,
            "c1_start": turns.median([s[0] for s in streams]) * 1000,
            "c1_ttfd": turns.median([s[1] for s in streams]) * 1000,
            "c1_done": turns.median([s[2] for s in streams]) * 1000,
            "c1_turn": turns.median(plain) * 1000}


def _clients(side: Side):
    return lambda: httpx.Client(base_url=side.server.url, timeout=60.0)


def measure_plain16(side: Side, seconds: float) -> dict[str, float]:
    """Non-streamed turns from CLIENTS threads, one connection each."""
    result = turns.throughput(_clients(side), turns.agentd_turn, CLIENTS, seconds, side.server)
    return {"c16_turns": result.per_second, "errors": result.errors,
            "c16_cpu_turn": result.server_cpu / max(result.ok, 1) * 1000}


def measure_stream16(side: Side, seconds: float) -> dict[str, float]:
    firsts: list[float] = []

    def call(client):
        times = turns.stream_times(client)
        firsts.append(times[1])   # list.append is atomic: safe from the client threads
        return times[2]

    result = turns.throughput(_clients(side), call, CLIENTS, seconds, side.server)
    return {"c16_streams": result.per_second, "errors": result.errors,
            "c16_cpu_stream": result.server_cpu / max(result.ok, 1) * 1000,
            "c16_ttfd_p50": turns.percentile(firsts, 50) * 1000,
            "c16_ttfd_p99": turns.percentile(firsts, 99) * 1000}


def run_rounds(sides: list[Side], rounds: int, calls: int, seconds: float) -> dict[str, list[dict]]:
    """Every phase for both sides, in alternating order; per side, one dict of metrics per round."""
    results = {side.name: [] for side in sides}
    phases = [lambda s: measure_single(s, calls), lambda s: measure_plain16(s, seconds),
              lambda s: measure_stream16(s, seconds)]
    for number in range(rounds):
        order = sides if number % 2 == 0 else sides[::-1]
        merged = {side.name: {"errors": 0} for side in sides}
        for phase in phases:
            for side in order:
                figures = phase(side)
                merged[side.name]["errors"] += figures.pop("errors", 0)
                merged[side.name].update(figures)
        for name, figures in merged.items():
            results[name].append(figures)
        log(f"  round {number + 1}/{rounds} ({order[0].name} first): " + "; ".join(
            f"{n} ttfd16 {f['c16_ttfd_p50']:.1f} ms, {f['c16_turns']:.0f}/{f['c16_streams']:.0f} turns/s"
            for n, f in merged.items()))
    return results


# -- the table ------------------------------------------------------------------------------------
def table(results: dict[str, list[dict]]) -> str:
    lines = ["| metric | baseline | current | ratio current/baseline | per-round ratios (min–max) |",
             "|---|---|---|---|---|"]
    base, cur = results["baseline"], results["current"]
    for key, label, decimals in METRICS:
        if key == "errors":
            lines.append(f"| {label} | {sum(r[key] for r in base)} | {sum(r[key] for r in cur)} | | |")
            continue
        b, c = turns.median([r[key] for r in base]), turns.median([r[key] for r in cur])
        ratios = [rc[key] / rb[key] for rb, rc in zip(base, cur) if rb[key]]
        spread = f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "-"
        ratio = f"{c / b:.2f}" if b else "-"
        lines.append(f"| {label} | {b:.{decimals}f} | {c:.{decimals}f} | {ratio} | {spread} |")
    return "\n".join(lines)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def header(args, baseline_commit: str, load_before: str) -> str:
    if args.current:
        current = f"{args.current} ({git('rev-parse', '--short', args.current)})"
    else:
        current = git("rev-parse", "--short", "HEAD") + (" (uncommitted changes)" if git("status", "--porcelain") else "")
    return (f"bench.compare: baseline {args.baseline} ({baseline_commit}) vs current {current}; "
            f"{args.rounds} rounds × ({args.calls} streamed + {args.calls} non-streamed turns, "
            f"{args.seconds:.0f} s × 2 at {CLIENTS} clients); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"load average before {load_before}, after {load_average()}; {os.cpu_count()} CPUs")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare against (e.g. main~3)")
    parser.add_argument("--current", default=None,
                        help="serve this revision as 'current' instead of this checkout (to bisect a change)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=30, help="turns of each kind per round at concurrency 1")
    parser.add_argument("--seconds", type=float, default=4.0, help=f"seconds of each {CLIENTS}-client batch")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    baseline_commit = git("rev-parse", "--short", args.baseline)
    load_before = load_average()
    upstream = harness.start_upstream()
    sides: list[Side] = []
    try:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentd-compare-")))
            base = stack.enter_context(detached_tree(args.baseline))
            current = stack.enter_context(detached_tree(args.current)) if args.current else harness.REPO
            try:
                for name, tree in (("baseline", base), ("current", current)):
                    sides.append(start_side(name, tree, upstream, tmp))   # appended: stopped if the next fails
                    warm(sides[-1])
                results = run_rounds(sides, args.rounds, args.calls, args.seconds)
            finally:
                for side in sides:
                    side.server.stop()
    finally:
        upstream.stop()
    print(f"{header(args, baseline_commit, load_before)}\n\n{table(results)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
