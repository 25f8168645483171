"""Shared fixtures: a fake model server, and real agentd servers on loopback.

`agentd_server(agents={...})` writes the agents' YAML into a temporary folder,
builds the app on a fresh database and serves it over real HTTP on 127.0.0.1.
The database is a new SQLite file per test, or a new PostgreSQL database per
test when AGENTD_TEST_POSTGRES_URL names a server (see tests/pg.py).
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import httpx
import pytest

# Servers in tests log warnings and errors only: an info line written by a server thread
# after its test ended would land in pytest's progress output. Tests about logging set
# their own level.
os.environ.setdefault("AGENTD_LOG_LEVEL", "WARNING")

from tests.fakes.openai_server import FakeOpenAI, Reply  # noqa: E402,F401  (re-exported for tests)
from tests.fakes.server import LoopbackServer, agent_yaml  # noqa: E402


@pytest.fixture
def fake_openai():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_anthropic():
    from tests.fakes.anthropic_server import FakeAnthropic
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_gemini():
    from tests.fakes.gemini_server import FakeGemini
    fake = FakeGemini().start()
    yield fake
    fake.stop()


@pytest.fixture
def database_url(tmp_path, request):
    """A fresh, empty database for one test."""
    pg = os.environ.get("AGENTD_TEST_POSTGRES_URL")
    if pg:
        from tests.pg import fresh_database
        with fresh_database(pg) as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'agentd.db'}"


@pytest.fixture
def database(database_url):
    """The models bound to a fresh, migrated database, with a connection open (store-level tests)."""
    from agentd.store import connect_database
    database = connect_database(database_url)
    database.connect(reuse_if_open=True)
    yield database
    database.close()
    if hasattr(database, "close_all"):
        database.close_all()


def openai_agent(fake: FakeOpenAI, **extra) -> str:
    """YAML for an agent on the fake OpenAI server; `extra` keys are merged in as YAML."""
    return agent_yaml("openai", "fake-model", fake.url, **extra)


class RunningServer:
    """A real agentd serving over HTTP on 127.0.0.1."""

    def __init__(self, app, server: LoopbackServer):
        self.app = app
        self.state = app.extensions["agentd"]
        self.server = server
        self.url = server.url
        self.client = httpx.Client(base_url=server.url, timeout=30.0)

    def chat(self, agent: str, message: str, **body):
        return self.client.post(f"/api/agents/{agent}/chat", json={"message": message, **body})

    def history(self, agent: str, **params):
        return self.client.get(f"/api/agents/{agent}/chat", params=params)

    def close(self) -> None:
        self.client.close()
        self.server.stop()
        self.state.db.close()


def serve_agentd(agents_dir: Path, database_url: str, agents: dict[str, str] | None = None,
                 server_class=RunningServer, **config):
    """Write the agents' YAML into `agents_dir`, build the app on `database_url` and serve it."""
    from agentd.app import create_app
    from agentd.config import Config

    agents_dir.mkdir()
    for agent_id, text in (agents or {}).items():
        (agents_dir / f"{agent_id}.yaml").write_text(textwrap.dedent(text))
    extra = config.pop("extra", {})
    extra.setdefault("retry", {"base_delay": 0.01, "max_delay": 0.05})
    settings = {"database_url": database_url, "agents_dir": str(agents_dir),
                "log_format": "text", "extra": extra, **config}
    app = create_app(Config.from_env(**settings))
    return server_class(app, LoopbackServer(app).start())


@pytest.fixture
def agentd_server(tmp_path, database_url):
    """Factory: agentd_server(agents={"id": yaml_text}, plugins_dir=..., **config) -> RunningServer."""
    running: list[RunningServer] = []

    def start(agents: dict[str, str] | None = None, **config) -> RunningServer:
        server = serve_agentd(tmp_path / f"agents{len(running)}", database_url, agents, **config)
        running.append(server)
        return server

    yield start
    for server in running:
        server.close()


@pytest.fixture
def processes():
    """A list to put tests.support.ServerProcess objects in; each is stopped after the test."""
    started: list = []
    yield started
    for proc in started:
        proc.stop()


def sse_events(response: httpx.Response) -> list[dict]:
    """The JSON events of an SSE body."""
    import json
    events = []
    for block in response.text.split("\n\n"):
        for line in block.split("\n"):  # not splitlines(): JSON may carry U+2028
            if line.startswith("data:"):
                events.append(json.loads(line[5:].strip()))
    return events
