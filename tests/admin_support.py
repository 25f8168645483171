"""Helpers shared by the operator tests: keys, clients, a tool plugin, agents on the fake server."""
from __future__ import annotations

import os
import subprocess
import sys

import httpx

from agentd.auth import create_key
from tests.conftest import openai_agent

TOOLS_PLUGIN = '''
from agentd import hookimpl

def lookup_order(order_id: int) -> dict:
    """Status of one order."""
    return {"order_id": order_id, "status": "shipped"}

def explode(reason: str = "broken") -> str:
    """Always fails."""
    raise RuntimeError(reason)

@hookimpl
def register_tools(register):
    register(lookup_order)
    register(explode)
'''

PRICE = {"input_per_mtok": 0.15, "output_per_mtok": 0.6}


def write_plugin(tmp_path) -> str:
    folder = tmp_path / "operator_plugins"
    folder.mkdir(exist_ok=True)
    (folder / "shop_tools.py").write_text(TOOLS_PLUGIN)
    return str(folder)


def operator_agents(fake) -> dict[str, str]:
    """`priced`: its own YAML price; `listed`: a model the price list knows; `unknown`: neither."""
    tools = ["lookup_order", "explode"]
    return {"priced": openai_agent(fake, model={"price": PRICE}, tools=tools),
            "listed": openai_agent(fake, model={"name": "gpt-4o-mini"}),
            "unknown": openai_agent(fake, tools=tools)}


def start_operator_server(agentd_server, fake, tmp_path, **config):
    server = agentd_server(operator_agents(fake), plugins_dir=write_plugin(tmp_path), **config)
    assert not server.state.problems, server.state.problems
    return server


def new_key(server, user: str, admin: bool = False, agents=None) -> tuple[str, str]:
    """A fresh key: (key id, key)."""
    with server.state.db.connection_context():
        row, key = create_key(user, agents, admin=admin)
    return row.id, key


def client(server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30.0)


def cli(database_url: str, *args: str, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "AGENTD_DATABASE_URL": database_url, **env}
    return subprocess.run([sys.executable, "-m", "agentd", *args], env=environment, capture_output=True,
                          text=True, timeout=120)
