"""Workers stay responsive: CPU-burning tools run off the gevent hub, under the production server.

gunicorn runs with the shipped gunicorn.conf.py (gevent worker) and one worker.
A plugin tool burns CPU in pure Python; one conversation has eight such calls
in flight. While they burn, every /healthz request answers and a second
conversation's stream on the same worker runs to its end. No time is asserted:
what proves it is the order of things (everything else finished while the
burners were still running). bench/responsive.py measures the latencies.
"""
from __future__ import annotations

import textwrap
import threading

import httpx

from tests.conftest import Reply, openai_agent
from tests.support import ServerProcess, free_port, server_env, wait_for, write_agent
from tests.test_streaming import iter_events

BURNER = '''
    """A tool that burns CPU in pure Python (never yields to gevent) for a while."""
    import time
    from pathlib import Path

    from agentd import hookimpl


    def burn(seconds: float, marker: str = "") -> str:
        """Burn CPU for `seconds`; write `marker` (a file path) when done."""
        end, n = time.perf_counter() + seconds, 0
        while time.perf_counter() < end:
            n += sum(i * i for i in range(300))
        if marker:
            Path(marker).write_text("ran")
        return f"burned {n}"


    @hookimpl
    def register_tools(register):
        register(burn)
'''
BURN_SECONDS = 8
CALLS = 8


def start_gunicorn(tmp_path, database_url, fake, name: str, tool_timeout: float = 60, **settings) -> ServerProcess:
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "burner.py").write_text(textwrap.dedent(BURNER))
    agent = openai_agent(fake, tools=["burn"], tool_timeout=tool_timeout)
    agents = write_agent(tmp_path / "agents", "burner", agent)
    write_agent(agents, "chatty", openai_agent(fake))
    port = free_port()
    env = server_env(database_url, agents, port, plugins_dir=plugins, **settings)
    command = ["-m", "gunicorn", "-c", "gunicorn.conf.py", "--workers", "1", "wsgi:app"]
    return ServerProcess(command, env, port, tmp_path / f"{name}.log")


def route_replies(fake, burns: dict[str, list[dict]]) -> None:
    """The fake model answers by the user's message: one in `burns` asks for those burn calls
    (once), anything else is a slowly streamed chat answer."""
    def reply(body: dict) -> Reply:
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if user in burns and not any(m["role"] == "tool" for m in body["messages"]):
            return Reply(tool_calls=[("burn", args) for args in burns[user]])
        if user in burns:
            return Reply(content="all burned")
        return Reply(content=" ".join(f"word{i}" for i in range(30)), chunk_delay=0.02)
    fake.default_reply = reply


class Stream(threading.Thread):
    """One streamed turn read in the background; `events` fill as they arrive."""

    def __init__(self, server: ServerProcess, agent: str, message: str):
        super().__init__(daemon=True)
        self.server, self.agent, self.message = server, agent, message
        self.events: list[dict] = []
        self.error: BaseException | None = None

    def run(self):
        try:
            with httpx.Client(base_url=self.server.url, timeout=120) as client:
                with client.stream("POST", f"/api/agents/{self.agent}/chat",
                                   json={"message": self.message, "stream": True}) as response:
                    for event in iter_events(response):
                        self.events.append(event)
        except BaseException as exc:  # noqa: BLE001 — reported by the test
            self.error = exc

    def types(self) -> list[str]:
        return [e["type"] for e in list(self.events)]


def test_healthz_and_another_stream_answer_while_eight_tools_burn_cpu(tmp_path, database_url, fake_openai,
                                                                     processes):
    route_replies(fake_openai, {"burn please": [{"seconds": BURN_SECONDS}] * CALLS})
    # Eight pool threads, so all eight calls burn at once (the default of 4 would queue half).
    server = start_gunicorn(tmp_path, database_url, fake_openai, "burn", tool_threads=CALLS)
    processes.append(server)
    burning = Stream(server, "burner", "burn please")
    burning.start()
    wait_for(lambda: burning.types().count("tool_call") == CALLS or burning.error, deadline=60,
             what="the eight tool calls to start")
    other = Stream(server, "chatty", "chat with me")
    other.start()
    answered, failed = 0, []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        while "tool_result" not in burning.types() and burning.is_alive():
            response = client.get("/healthz")
            if response.status_code == 200:
                answered += 1
            else:
                failed.append(response.status_code)
    # The burners were still running (no tool_result yet) for everything counted above.
    other_done_while_burning = other.types()[-1:] == ["done"]
    burning.join(timeout=120)
    other.join(timeout=60)
    assert burning.error is None and other.error is None, (burning.error, other.error)
    assert failed == [] and answered >= 10, (answered, failed)
    assert other_done_while_burning, other.types()
    assert burning.types().count("tool_result") == CALLS and burning.types()[-1] == "done"
    results = [e for e in burning.events if e["type"] == "tool_result"]
    assert all(r["content"].startswith("burned ") for r in results), results


def test_a_call_that_timed_out_in_the_queue_never_runs(tmp_path, database_url, fake_openai, processes):
    """One pool thread: the second call waits behind the first, times out, and is never run later."""
    first, second, third = (tmp_path / f"{n}.ran" for n in ("first", "second", "third"))
    route_replies(fake_openai, {"burn twice": [{"seconds": 4, "marker": str(first)},
                                               {"seconds": 0, "marker": str(second)}],
                                "burn once more": [{"seconds": 0, "marker": str(third)}]})
    server = start_gunicorn(tmp_path, database_url, fake_openai, "queued", tool_timeout=2, tool_threads=1)
    processes.append(server)
    with server.stream("burner", "burn twice") as response:
        events = list(iter_events(response))
    results = [e for e in events if e["type"] == "tool_result"]
    assert [r["is_error"] for r in results] == [True, True], results
    assert all("timed out" in r["content"] for r in results), results
    wait_for(first.exists, deadline=30, what="the first call, already running, to finish in its thread")
    # The pool's one thread takes work in order: once a later call has run, the
    # queued second call had its turn, and it was skipped rather than run late.
    with server.stream("burner", "burn once more") as response:
        events = list(iter_events(response))
    assert [e["is_error"] for e in events if e["type"] == "tool_result"] == [False], events
    assert third.exists() and not second.exists()
