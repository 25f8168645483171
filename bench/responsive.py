"""Is a gevent worker still responsive while tools burn CPU?  `python -m bench.responsive`

agentd under gunicorn (gunicorn.conf.py, one worker) and the bench upstream.
One turn's model asks for eight parallel calls of a plugin tool that burns
CPU in pure Python for BURN_SECONDS. While they run, one client polls
`/healthz` back to back and another runs streamed 50-token turns one after
the other; the same two clients run once more with nothing burning, for
comparison. Prints a Markdown table (latencies of /healthz, time to the first
delta and to `done` of the other streams). Goal (the abuse-limits contract):
/healthz p99 under 200 ms during the burn.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.harness import start_agentd, start_upstream

BURN_SECONDS = 10.0
CALLS = 8
BURN_PLUGIN = '''
"""Bench plugin: a tool that burns CPU in pure Python and never yields to gevent."""
import time

from agentd import hookimpl


def burn() -> str:
    """Burn CPU for a while."""
    end, n = time.perf_counter() + {seconds}, 0
    while time.perf_counter() < end:
        n += sum(i * i for i in range(300))
    return str(n)


@hookimpl
def register_tools(register):
    register(burn)
'''


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def poll_healthz(url: str, stop: threading.Event, out: list[float], errors: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = client.get("/healthz")
            out.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors.append(str(response.status_code))


def stream_turns(url: str, stop: threading.Event, first: list[float], done: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            started, seen_first = time.perf_counter(), False
            with client.stream("POST", "/api/agents/fast/chat",
                               json={"message": "hello", "stream": True}) as response:
                for line in response.iter_lines():
                    if line.startswith("data:") and not seen_first and '"delta"' in line:
                        first.append(time.perf_counter() - started)
                        seen_first = True
            done.append(time.perf_counter() - started)


def measure(url: str, burn: bool) -> dict:
    stop = threading.Event()
    health, errors, first, done = [], [], [], []
    workers = [threading.Thread(target=poll_healthz, args=(url, stop, health, errors)),
               threading.Thread(target=stream_turns, args=(url, stop, first, done))]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    if burn:
        with httpx.Client(base_url=url, timeout=120) as client:
            reply = client.post("/api/agents/burner/chat", json={"message": "burn"})
        if reply.status_code != 200:
            raise RuntimeError(f"the burning turn failed: {reply.text[:500]}")
    else:
        time.sleep(BURN_SECONDS)
    stop.set()
    for worker in workers:
        worker.join()
    return {"seconds": time.perf_counter() - started, "health": health, "errors": errors,
            "first": first, "done": done}


def row(name: str, values: list[float], extra: str = "") -> str:
    if not values:
        return f"| {name} | none |  |  |  |"
    ms = [v * 1000 for v in values]
    return (f"| {name} | {len(ms)} | {statistics.median(ms):.1f} ms | {percentile(ms, 0.99):.1f} ms "
            f"| {max(ms):.1f} ms{extra} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--tool-threads", type=int, help="AGENTD_TOOL_THREADS for the server")
    args = parser.parse_args(argv)
    upstream = start_upstream()
    with tempfile.TemporaryDirectory(prefix="agentd-bench-responsive-") as tmp:
        workdir = Path(tmp)
        (workdir / "plugins").mkdir()
        (workdir / "plugins" / "burn.py").write_text(BURN_PLUGIN.replace("{seconds}", str(BURN_SECONDS)))
        (workdir / "agents").mkdir()
        (workdir / "agents" / "burner.yaml").write_text(
            f'name: Burner\ndescription: eight CPU-burning tool calls\n'
            f'model: {{provider: openai, name: "t1-c{CALLS}", base_url: "{upstream.url}", retries: 0}}\n'
            f'tools: [burn]\ntool_timeout: 120\n')
        env = {"AGENTD_TOOL_THREADS": str(args.tool_threads)} if args.tool_threads else {}
        server = start_agentd(workdir, f"sqlite:///{workdir / 'bench.db'}", upstream.url, workers=1,
                              extra_env=env)
        try:
            quiet = measure(server.url, burn=False)
            busy = measure(server.url, burn=True)
        finally:
            server.stop()
            upstream.stop()
    print("| measurement | count | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    print(row("/healthz, nothing burning", quiet["health"]))
    print(row(f"/healthz, {CALLS} CPU-burning tool calls running", busy["health"],
              f"; {len(busy['errors'])} errors"))
    print(row("other stream, first delta, nothing burning", quiet["first"]))
    print(row(f"other stream, first delta, {CALLS} burning", busy["first"]))
    print(row("other stream, to `done`, nothing burning", quiet["done"]))
    print(row(f"other stream, to `done`, {CALLS} burning", busy["done"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"quiet": quiet, "busy": busy}))


if __name__ == "__main__":
    main()
