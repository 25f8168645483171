"""Shared by the protocol tests: a server with a tool-using agent and a key."""
from __future__ import annotations

import pytest

from agentd.auth import create_key
from tests.conftest import openai_agent

PLUGIN = '''
from agentd import hookimpl

def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

@hookimpl
def register_tools(register):
    register(add)
'''


def new_key(server, user: str, agents: list[str] | None = None) -> str:
    with server.state.db.connection_context():
        return create_key(user, agents)[1]


@pytest.fixture
def served(agentd_server, fake_openai, tmp_path):
    """(server, key): agents `bot` (tool `add`, own system prompt), `open` (overridable) and `other`."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "adder.py").write_text(PLUGIN)
    server = agentd_server({
        "bot": openai_agent(fake_openai, system_prompt="You are the bot.", tools=["add"]),
        "open": openai_agent(fake_openai, system_prompt="Default prompt.", allow_system_prompt_override=True),
        "other": openai_agent(fake_openai),
    }, plugins_dir=str(plugins))
    return server, new_key(server, "alice")


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    out = []
    for block in text.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data:"):
                out.append(line[5:].strip())
    return out
