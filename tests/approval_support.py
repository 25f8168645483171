"""Shared parts of the approval tests: a shop plugin with a counting refund tool, its agent."""
from __future__ import annotations

import textwrap
from pathlib import Path

from tests.conftest import openai_agent

# Folder plugins are loaded as modules named by their path; the tests read `plugin.refunds`.
SHOP_PLUGIN = '''
import threading
from agentd import hookimpl

refunds = []          # every call that really ran, with its arguments
lookups = []
_lock = threading.Lock()


def refund_order(order_id: int, amount: float) -> dict:
    """Refund an order."""
    with _lock:
        refunds.append({"order_id": order_id, "amount": amount})
    return {"refunded": order_id, "amount": amount}


def lookup_order(order_id: int) -> dict:
    """Look an order up."""
    with _lock:
        lookups.append(order_id)
    return {"order_id": order_id, "status": "shipped"}


@hookimpl
def register_tools(register):
    register(refund_order)
    register(lookup_order)
'''

GATED_TOOLS = [{"refund_order": {"requires_approval": True,
                                 "approval_message": "Refund order {{ args.order_id }}?"}},
               "lookup_order"]


def plugin_folder(tmp_path: Path, **sources: str) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    for name, source in sources.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


def shop_agent(fake, tools=None, **extra) -> str:
    return openai_agent(fake, tools=tools if tools is not None else GATED_TOOLS, **extra)


def plugin(server, folder: Path, name: str):
    """The loaded module of a folder plugin."""
    return server.state.registry.manager.get_plugin(str(folder / f"{name}.py"))


def approvals_of(server, conversation_id: str, client=None) -> list[dict]:
    response = (client or server.client).get(f"/api/conversations/{conversation_id}/approvals")
    assert response.status_code == 200, response.text
    return response.json()["approvals"]


def decide(server, conversation_id: str, approval_id: str, decision: str = "approve", client=None, **body):
    return (client or server.client).post(f"/api/conversations/{conversation_id}/approvals/{approval_id}",
                                          json={"decision": decision, **body})


def tool_messages(request_body: dict) -> list[dict]:
    """The tool results a model request carried."""
    return [m for m in request_body["messages"] if m["role"] == "tool"]
