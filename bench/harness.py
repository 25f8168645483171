"""Processes the benchmarks run against: the fake upstream and agentd under gunicorn, on loopback.

agentd is served exactly as docs/deploy.md says (`gunicorn -c gunicorn.conf.py
wsgi:app`, configured through AGENTD_* variables), in a temporary folder that
holds the database, the bench agents and a plugin with a trivial tool.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

# A trivial tool, loaded from AGENTD_PLUGINS_DIR like anyone's plugin.
TOOL_PLUGIN = '''
"""Bench plugin: one tool that does nothing, so a tool round costs only agentd's own work."""
from agentd import hookimpl


def noop() -> str:
    """Return a fixed word."""
    return "ok"


@hookimpl
def register_tools(register):
    register(noop)
'''


def bench_agents(upstream_url: str) -> dict[str, str]:
    """Agent YAML by id; the model name tells the fake upstream what to answer (bench/upstream_min.py)."""
    def agent(model: str, tools: list[str] | None = None) -> str:
        text = f"""\
            name: Bench {model}
            description: A benchmark agent on the fake upstream
            model: {{provider: openai, name: "{model}", base_url: "{upstream_url}", retries: 0}}
            system_prompt: You are a benchmark.
            """
        if tools:
            text += f"tools: [{', '.join(tools)}]\n"
        return textwrap.dedent(text)
    agents = {"fast": agent("t50"), "one": agent("t1"), "tool": agent("t50", ["noop"])}
    for seconds in (10, 20, 60):   # one token per second, for the open-stream levels
        agents[f"slow{seconds}"] = agent(f"t{seconds}-i1")
    return agents


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, deadline: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {deadline}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Upstream:
    proc: subprocess.Popen
    port: int
    module: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        _stop(self.proc)


def upstream_module() -> str:
    """The streaming engineer's fast fake upstream when it speaks our model names, else ours."""
    if os.environ.get("AGENTD_BENCH_UPSTREAM"):
        return os.environ["AGENTD_BENCH_UPSTREAM"]
    return "bench.upstream_min"


def start_upstream() -> Upstream:
    module = upstream_module()
    port = free_port()
    proc = subprocess.Popen([PYTHON, "-m", module, "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    up = Upstream(proc, port, module)
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{module} exited: {proc.stderr.read().decode()[-500:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return up
        time.sleep(0.05)
    up.stop()
    raise RuntimeError(f"{module} did not listen on {port}")


@dataclass
class Agentd:
    proc: subprocess.Popen
    port: int
    workdir: Path
    database_url: str
    log: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self):
        self.client = httpx.Client(base_url=self.url, timeout=60.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        """The gunicorn worker processes: children of the master."""
        return children(self.proc.pid)

    def cpu_seconds(self) -> float:
        """user+system CPU time of every worker so far, from /proc."""
        return sum(process_cpu(pid) for pid in self.workers())

    def write_syscalls(self) -> int:
        return sum(process_io(pid).get("syscw", 0) for pid in self.workers())

    def stop(self) -> None:
        self.client.close()
        _stop(self.proc)


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime, stime


def process_io(pid: int) -> dict[str, int]:
    try:
        lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    except OSError:
        return {}
    return {name: int(value) for name, _, value in (line.partition(": ") for line in lines)}


def gunicorn_command(port: int, workers: int | None, tree: Path = REPO, python: str = PYTHON) -> list[str]:
    command = [python, "-m", "gunicorn"]
    if (tree / "gunicorn.conf.py").exists():
        command += ["-c", str(tree / "gunicorn.conf.py")]
    else:   # until the deploy config lands: what docs/deploy.md will ask for
        command += ["-k", "gevent", "--worker-connections", "4000"]
    command += ["--bind", f"127.0.0.1:{port}"]
    if workers:
        command += ["--workers", str(workers)]
    return command + ["wsgi:app"]


def start_agentd(workdir: Path, database_url: str, upstream_url: str, workers: int | None = None,
                 extra_env: dict | None = None, tree: Path = REPO, python: str = PYTHON) -> Agentd:
    """agentd of `tree` (default: this checkout) under gunicorn, run by `python`; bench/compare.py
    serves an older tree this way (its PYTHONPATH in extra_env)."""
    agents_dir, plugins_dir = workdir / "agents", workdir / "plugins"
    agents_dir.mkdir(parents=True, exist_ok=True)
    plugins_dir.mkdir(parents=True, exist_ok=True)
    for agent_id, text in bench_agents(upstream_url).items():
        (agents_dir / f"{agent_id}.yaml").write_text(text)
    (plugins_dir / "bench_tools.py").write_text(TOOL_PLUGIN)
    port = free_port()
    env = {**os.environ, "AGENTD_DATABASE_URL": database_url, "AGENTD_AGENTS_DIR": str(agents_dir),
           "AGENTD_PLUGINS_DIR": str(plugins_dir), "AGENTD_LOG_LEVEL": "WARNING",
           "AGENTD_HOST": "127.0.0.1", "AGENTD_PORT": str(port), **(extra_env or {})}
    log = workdir / f"gunicorn-{port}.log"
    proc = subprocess.Popen(gunicorn_command(port, workers, tree, python), cwd=tree, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    server = Agentd(proc, port, workdir, database_url, log)
    try:
        wait_http(server.url + "/healthz", proc=proc)
        _wait_workers(server, workers)
    except Exception:
        server.stop()
        raise RuntimeError(f"agentd did not start; log tail:\n{log.read_text()[-2000:]}")
    return server


def _wait_workers(server: Agentd, workers: int | None) -> None:
    """Every worker answers once, so start-up cost stays out of the measurements."""
    end = time.monotonic() + 20
    while time.monotonic() < end and len(server.workers()) < (workers or 1):
        time.sleep(0.1)
    for _ in range(4 * max(1, len(server.workers()))):
        server.client.get("/healthz")


def has_module(name: str) -> bool:
    with contextlib.suppress(ImportError, ValueError):
        return importlib.util.find_spec(name) is not None
    return False
