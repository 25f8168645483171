"""Turns through agentd against the floor (the same calls made straight to the fake upstream).

Every figure comes from interleaved rounds: each round runs a batch of every
kind of call, so a slow moment of the machine hits all of them alike. Latency
percentiles pool the samples of all rounds; CPU figures are per-round ratios
(worker CPU from /proc before/after a batch) whose median is reported.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass, field

import httpx

from bench.harness import Agentd

SYSTEM = "You are a benchmark."


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- single calls ------------------------------------------------------------------------
def _direct_body(model: str, stream: bool, messages: list | None = None, tools: bool = False) -> dict:
    body = {"model": model, "stream": stream, "messages": messages or [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if tools:
        body["tools"] = [{"type": "function", "function": {
            "name": "noop", "description": "Return a fixed word.",
            "parameters": {"type": "object", "properties": {}}}}]
    return body


def direct_call(client: httpx.Client, upstream: str, model: str = "t50") -> float:
    start = time.perf_counter()
    response = client.post(f"{upstream}/chat/completions", json=_direct_body(model, False))
    response.raise_for_status()
    response.json()
    return time.perf_counter() - start


def direct_stream(client: httpx.Client, upstream: str, model: str = "t50") -> tuple[float, float]:
    """(time to the first content delta, time to the end) of a direct stream."""
    start = time.perf_counter()
    first = None
    with client.stream("POST", f"{upstream}/chat/completions", json=_direct_body(model, True)) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and '"content"' in line:
                first = time.perf_counter() - start
    return first, time.perf_counter() - start


def direct_tool_pair(client: httpx.Client, upstream: str) -> float:
    """Two direct calls, as a tool round needs: one answered with a tool call, one after its result."""
    start = time.perf_counter()
    first = client.post(f"{upstream}/chat/completions", json=_direct_body("t50", False, tools=True)).json()
    call = first["choices"][0]["message"]["tool_calls"][0]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "ok"}]
    client.post(f"{upstream}/chat/completions", json=_direct_body("t50", False, messages, tools=True)).json()
    return time.perf_counter() - start


def agentd_turn(client: httpx.Client, agent: str = "fast") -> float:
    start = time.perf_counter()
    response = client.post(f"/api/agents/{agent}/chat", json={"message": "hello"})
    if response.status_code != 200:
        raise RuntimeError(f"turn failed: {response.status_code} {response.text[:200]}")
    response.json()
    return time.perf_counter() - start


def agentd_stream(client: httpx.Client, agent: str = "fast") -> tuple[float, float]:
    """(time to the first delta event, time to `done`) of a streamed turn."""
    return stream_times(client, agent)[1:]


def stream_times(client: httpx.Client, agent: str = "fast") -> tuple[float, float, float]:
    """(time to the `start` event, to the first delta event, to `done`) of a streamed turn."""
    start = time.perf_counter()
    started = first = None
    done = False
    with client.stream("POST", f"/api/agents/{agent}/chat",
                       json={"message": "hello", "stream": True}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream failed: {response.status_code}")
        for line in response.iter_lines():
            if started is None and line.startswith('data: {"type":"start"'):
                started = time.perf_counter() - start
            elif first is None and line.startswith('data: {"type":"delta"'):
                first = time.perf_counter() - start
            elif line.startswith('data: {"type":"done"'):
                done = True
            elif line.startswith('data: {"type":"error"'):
                raise RuntimeError(f"stream error: {line[:200]}")
    if not done:
        raise RuntimeError("stream ended without done")
    nan = float("nan")
    return (started if started is not None else nan, first if first is not None else nan,
            time.perf_counter() - start)


# -- interleaved rounds --------------------------------------------------------------------
@dataclass
class TurnSamples:
    floor_call: list[float] = field(default_factory=list)
    turn: list[float] = field(default_factory=list)
    floor_ttfd: list[float] = field(default_factory=list)
    floor_stream_total: list[float] = field(default_factory=list)
    ttfd: list[float] = field(default_factory=list)
    stream_total: list[float] = field(default_factory=list)
    floor_tool: list[float] = field(default_factory=list)
    tool_turn: list[float] = field(default_factory=list)
    cpu_turn: list[float] = field(default_factory=list)        # per round: worker CPU s / turn
    cpu_stream50: list[float] = field(default_factory=list)    # per round: CPU s / 50-token streamed turn
    cpu_stream1: list[float] = field(default_factory=list)     # per round: CPU s / 1-token streamed turn
    writes_stream50: list[float] = field(default_factory=list)  # write syscalls / streamed turn
    writes_stream1: list[float] = field(default_factory=list)


def _measured(server: Agentd, count: int, call) -> tuple[list[float], float, float]:
    """Run `call` count times; (results, worker CPU s per call, write syscalls per call)."""
    cpu0, writes0 = server.cpu_seconds(), server.write_syscalls()
    results = [call() for _ in range(count)]
    cpu1, writes1 = server.cpu_seconds(), server.write_syscalls()
    return results, (cpu1 - cpu0) / count, (writes1 - writes0) / count


def run_rounds(server: Agentd, upstream: str, rounds: int, per_round: int, log=print) -> TurnSamples:
    """Concurrency 1: every kind of call in each round, the same client setup for all."""
    samples = TurnSamples()
    direct = httpx.Client(timeout=30.0)
    client = server.client
    # Warm both paths (connections, imports, caches) before anything counts.
    for _ in range(20):
        direct_call(direct, upstream), agentd_turn(client), agentd_stream(client), direct_stream(direct, upstream)
    for number in range(rounds):
        samples.floor_call += [direct_call(direct, upstream) for _ in range(per_round)]
        turns, cpu, _ = _measured(server, per_round, lambda: agentd_turn(client))
        samples.turn += turns
        samples.cpu_turn.append(cpu)
        for ttfd, total in (direct_stream(direct, upstream) for _ in range(per_round)):
            samples.floor_ttfd.append(ttfd)
            samples.floor_stream_total.append(total)
        streams, cpu, writes = _measured(server, per_round, lambda: agentd_stream(client, "fast"))
        samples.ttfd += [s[0] for s in streams]
        samples.stream_total += [s[1] for s in streams]
        samples.cpu_stream50.append(cpu)
        samples.writes_stream50.append(writes)
        _, cpu, writes = _measured(server, per_round, lambda: agentd_stream(client, "one"))
        samples.cpu_stream1.append(cpu)
        samples.writes_stream1.append(writes)
        samples.floor_tool += [direct_tool_pair(direct, upstream) for _ in range(per_round)]
        samples.tool_turn += [agentd_turn(client, "tool") for _ in range(per_round)]
        log(f"  round {number + 1}/{rounds}: turn p50 {median(samples.turn) * 1000:.2f} ms, "
            f"floor {median(samples.floor_call) * 1000:.2f} ms")
    direct.close()
    return samples


# -- throughput at N concurrent clients ---------------------------------------------------------
@dataclass
class Throughput:
    clients: int
    seconds: float
    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def throughput(make_client, call, clients: int, seconds: float, server: Agentd | None = None) -> Throughput:
    """`clients` threads, each with its own connection, calling `call(client)` for `seconds`."""
    result = Throughput(clients, seconds)
    lock = threading.Lock()
    stop_at = [0.0]
    barrier = threading.Barrier(clients + 1)

    def worker():
        client = make_client()
        barrier.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                try:
                    elapsed = call(client)
                    with lock:
                        result.ok += 1
                        result.latencies.append(elapsed if isinstance(elapsed, float) else elapsed[1])
                except Exception as exc:   # an error is a result here, counted and shown
                    with lock:
                        result.errors += 1
                        result.first_error = result.first_error or repr(exc)[:200]
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    cpu0 = server.cpu_seconds() if server else 0.0
    start = time.perf_counter()
    stop_at[0] = start + seconds
    barrier.wait()
    for thread in threads:
        thread.join(seconds + 120)
    result.seconds = time.perf_counter() - start
    if server:
        result.server_cpu = server.cpu_seconds() - cpu0
    return result


def concurrent_turns(server: Agentd, upstream: str, clients: int, seconds: float) -> dict[str, Throughput]:
    def agentd_client():
        return httpx.Client(base_url=server.url, timeout=60.0)

    def direct_client():
        return httpx.Client(timeout=60.0)

    return {
        "floor": throughput(direct_client, lambda c: direct_call(c, upstream), clients, seconds),
        "turn": throughput(agentd_client, agentd_turn, clients, seconds, server),
        "stream": throughput(agentd_client, agentd_stream, clients, seconds, server),
    }


# -- many open streams held by one server ----------------------------------------------------
# Stand-in until bench/streams.py (issue #3) lands: raw asyncio sockets, so a thousand
# client streams cost the client little CPU next to the server on the same machine.
@dataclass
class OpenStreams:
    count: int
    seconds_each: int
    ramp_per_second: float
    done: int = 0
    errors: int = 0
    ttfd: list[float] = field(default_factory=list)      # request sent -> first delta
    accept: list[float] = field(default_factory=list)    # request sent -> `start` event
    wall: float = 0.0
    server_cpu: float = 0.0
    deltas: int = 0
    first_error: str = ""


async def _one_stream(port: int, agent: str, result: OpenStreams, timeout: float) -> None:
    import asyncio
    body = json.dumps({"message": "hello", "stream": True}).encode()
    head = (f"POST /api/agents/{agent}/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    start = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            writer.write(head + body)
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(status.decode(errors="replace").strip())
            first = True
            async for line in reader:
                if line.startswith(b'data: {"type":"start"'):
                    result.accept.append(time.perf_counter() - start)
                elif line.startswith(b'data: {"type":"delta"'):
                    result.deltas += 1
                    if first:
                        result.ttfd.append(time.perf_counter() - start)
                        first = False
                elif line.startswith(b'data: {"type":"done"'):
                    result.done += 1
                    return
                elif line.startswith(b'data: {"type":"error"'):
                    raise RuntimeError(line.decode()[:200])
            raise RuntimeError("stream closed before done")
    except Exception as exc:   # counted: the figure is "how many streams failed"
        result.errors += 1
        result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if writer is not None:
            writer.close()


def open_streams(server: Agentd, count: int, seconds_each: int, ramp_per_second: float,
                 agent: str = "slow") -> OpenStreams:
    """`count` streams of `seconds_each` one-token-per-second deltas, opened at `ramp_per_second`."""
    import asyncio
    result = OpenStreams(count, seconds_each, ramp_per_second)
    timeout = seconds_each + count / ramp_per_second + 30   # bounded whatever happens

    async def run():
        tasks = []
        for number in range(count):
            tasks.append(asyncio.create_task(_one_stream(server.port, agent, result, timeout)))
            await asyncio.sleep(1 / ramp_per_second)
        await asyncio.gather(*tasks)

    cpu0 = server.cpu_seconds()
    start = time.perf_counter()
    asyncio.run(run())
    result.wall = time.perf_counter() - start
    result.server_cpu = server.cpu_seconds() - cpu0
    return result


# -- what a turn writes -------------------------------------------------------------------------
@dataclass
class WriteCount:
    statements: int = 0      # INSERT/UPDATE/DELETE
    transactions: int = 0    # write transactions: explicit ones holding a write, plus lone writes


def count_writes(upstream: str, workdir, agent: str, stream: bool, turns: int = 5) -> WriteCount:
    """Trace every SQL statement of `turns` turns in-process (SQLite), counting writes."""
    from bench.harness import TOOL_PLUGIN, bench_agents
    from agentd.app import create_app
    (workdir / "agents").mkdir(parents=True, exist_ok=True)
    (workdir / "plugins").mkdir(parents=True, exist_ok=True)
    for name, text in bench_agents(upstream).items():
        (workdir / "agents" / f"{name}.yaml").write_text(text)
    (workdir / "plugins" / "bench_tools.py").write_text(TOOL_PLUGIN)
    app = create_app({"database_url": f"sqlite:///{workdir / 'trace.db'}", "log_level": "WARNING",
                      "agents_dir": str(workdir / "agents"), "plugins_dir": str(workdir / "plugins")})
    database = app.extensions["agentd"].db
    count = WriteCount()
    state = {"tx": False, "tx_wrote": False, "on": False}

    def trace(sql: str) -> None:
        if not state["on"]:
            return
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if word == "BEGIN":
            state["tx"], state["tx_wrote"] = True, False
        elif word in ("COMMIT", "END"):
            count.transactions += state["tx_wrote"]
            state["tx"] = False
        elif word in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
            count.statements += 1
            if state["tx"]:
                state["tx_wrote"] = True
            else:
                count.transactions += 1

    connect = database._connect

    def traced_connect(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(trace)
        return conn

    database._connect = traced_connect
    database.close_all() if hasattr(database, "close_all") else None
    client = app.test_client()
    body = {"message": "hello", "stream": stream}
    client.post(f"/api/agents/{agent}/chat", json=body).get_data()   # warm-up, not counted
    state["on"] = True
    for _ in range(turns):
        response = client.post(f"/api/agents/{agent}/chat", json=body)
        response.get_data()
    state["on"] = False
    database.close_all() if hasattr(database, "close_all") else database.close()
    return WriteCount(count.statements / turns, count.transactions / turns)
