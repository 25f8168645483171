"""Approvals over time and across people: restarts, owners, expiry, policies, the WebSocket."""
from __future__ import annotations

import datetime as dt
import json
import signal
import time

import pytest

from agentd.auth import create_key
from tests.approval_support import (SHOP_PLUGIN, approvals_of, decide, plugin, plugin_folder, shop_agent,
                                    tool_messages)
from tests.conftest import Reply
from tests.support import ServerProcess, free_port, server_env, wait_for, write_agent
from tests.test_websocket import Socket

REFUND = ("refund_order", {"order_id": 1042, "amount": 30.5})

# A policy plugin: refunds above 100 need a person, smaller ones do not.
LARGE_REFUNDS_ONLY = '''
from agentd import hookimpl

asked = []


@hookimpl
def needs_approval(tool, arguments, context):
    if tool.name != "refund_order":
        return None
    asked.append((arguments["amount"], context.conversation_id))
    return arguments["amount"] > 100
'''


def shop_server(agentd_server, fake, tmp_path, tools=None, **extra):
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN)
    server = agentd_server({"shop": shop_agent(fake, tools, **extra)}, plugins_dir=str(folder))
    server.shop = plugin(server, folder, "shop")
    return server


def paused(server, fake, *calls, **body) -> dict:
    fake.script(Reply(tool_calls=list(calls or [REFUND])))
    answer = server.client.post("/api/agents/shop/chat", json={"message": "Refund please", **body},
                                headers=body.pop("headers", None) or {})
    assert answer.status_code == 200 and answer.json()["status"] == "awaiting_approval", answer.text
    return answer.json()


def test_a_pending_approval_survives_a_process_restart(tmp_path, database_url, fake_openai, processes):
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN)
    agents = write_agent(tmp_path / "agents", "shop", shop_agent(fake_openai))
    port = free_port()
    env = server_env(database_url, agents, port, plugins_dir=folder)
    first = ServerProcess(["-m", "agentd", "serve"], env, port, tmp_path / "first.log")
    processes.append(first)
    fake_openai.script(Reply(tool_calls=[REFUND]))
    answer = first.client.post("/api/agents/shop/chat", json={"message": "Refund please"}).json()
    assert answer["status"] == "awaiting_approval", answer
    conversation, approval_id = answer["conversation_id"], answer["approvals"][0]["id"]
    first.signal(signal.SIGKILL)  # the process that paused the run is gone; nothing of it waits anywhere
    first.proc.wait(10)
    second = ServerProcess(["-m", "agentd", "serve"], env, port, tmp_path / "second.log")
    processes.append(second)
    assert [a["id"] for a in approvals_of(second, conversation)] == [approval_id]
    fake_openai.script(Reply(content="Refunded after the restart"))
    resumed = decide(second, conversation, approval_id)
    assert resumed.status_code == 200 and resumed.json()["content"] == "Refunded after the restart"
    # The refund ran in the second process, once, with the arguments the person saw.
    [result] = tool_messages(fake_openai.requests[-1])
    assert json.loads(result["content"]) == {"refunded": 1042, "amount": 30.5}
    assert [m["role"] for m in second.history("shop", conversation)] == ["user", "assistant", "tool", "assistant"]


def test_another_users_approval_is_not_found(agentd_server, fake_openai, tmp_path):
    server = shop_server(agentd_server, fake_openai, tmp_path)
    with server.state.db.connection_context():
        alice = {"Authorization": f"Bearer {create_key('alice')[1]}"}
        bob = {"Authorization": f"Bearer {create_key('bob')[1]}"}
    answer = paused(server, fake_openai, headers=alice)
    conversation, approval_id = answer["conversation_id"], answer["approvals"][0]["id"]
    for decision in ("approve", "deny"):
        stolen = decide(server, conversation, approval_id, decision, headers=None,
                        client=_as(server, bob))
        assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "NOT_FOUND"
    assert server.client.get(f"/api/conversations/{conversation}/approvals", headers=bob).status_code == 403
    assert server.client.get(f"/api/conversations/{conversation}/approvals").status_code == 401
    assert server.shop.refunds == []
    fake_openai.script(Reply(content="Done"))
    assert decide(server, conversation, approval_id, client=_as(server, alice)).status_code == 200
    assert len(server.shop.refunds) == 1


def _as(server, headers):
    import httpx
    return httpx.Client(base_url=server.url, headers=headers, timeout=30.0)


def test_a_decision_whose_run_cannot_start_is_undone(agentd_server, fake_openai, tmp_path):
    """The approval is used only by a run that started: a busy conversation keeps it pending."""
    from agentd.store.models import Conversation, utcnow
    server = shop_server(agentd_server, fake_openai, tmp_path)
    answer = paused(server, fake_openai)
    conversation, approval_id = answer["conversation_id"], answer["approvals"][0]["id"]
    with server.state.db.connection_context():  # another process's run holds a live lease
        (Conversation.update(busy_token="elsewhere", busy_until=utcnow() + dt.timedelta(seconds=60))
         .where(Conversation.id == conversation).execute())
    busy = decide(server, conversation, approval_id)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "CONVERSATION_BUSY"
    assert [a["id"] for a in approvals_of(server, conversation)] == [approval_id]
    with server.state.db.connection_context():
        Conversation.update(busy_token=None, busy_until=None).where(Conversation.id == conversation).execute()
    fake_openai.script(Reply(content="Now"))
    assert decide(server, conversation, approval_id).json()["content"] == "Now"
    assert len(server.shop.refunds) == 1


def test_an_expired_approval_denies_the_call_and_the_step_resumes(agentd_server, fake_openai, tmp_path):
    server = shop_server(agentd_server, fake_openai, tmp_path, approvals={"ttl": 1})
    answer = paused(server, fake_openai)
    conversation, approval = answer["conversation_id"], answer["approvals"][0]
    expires = dt.datetime.strptime(approval["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
    created = dt.datetime.strptime(answer["created_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert dt.timedelta(0) < expires - created <= dt.timedelta(seconds=2)
    wait_for(lambda: not approvals_of(server, conversation), what="the approval to expire")
    fake_openai.script(Reply(content="The refund was not approved in time."))
    late = decide(server, conversation, approval["id"])
    assert late.status_code == 409 and late.json()["error"]["code"] == "APPROVAL_EXPIRED"
    wait_for(lambda: fake_openai.calls == 2, what="the step to resume")
    assert tool_messages(fake_openai.requests[-1])[0]["content"] == "denied: the approval expired"
    assert server.shop.refunds == []
    assert decide(server, conversation, approval["id"]).json()["error"]["code"] in ("APPROVAL_EXPIRED",
                                                                                   "APPROVAL_RESOLVED")
    wait_for(lambda: server.client.get(f"/api/conversations/{conversation}").json()["running"] is None,
             what="the resumed run to end")
    assert server.chat("shop", "And now?", conversation_id=conversation).status_code == 200


def test_a_new_message_after_expiry_closes_the_step_with_denied_results(agentd_server, fake_openai, tmp_path):
    server = shop_server(agentd_server, fake_openai, tmp_path, approvals={"ttl": 1})
    answer = paused(server, fake_openai, REFUND, ("refund_order", {"order_id": 5, "amount": 1}))
    conversation = answer["conversation_id"]
    time.sleep(1.2)  # past the one-second ttl
    fake_openai.script(Reply(content="Let us start over."))
    again = server.chat("shop", "Never mind", conversation_id=conversation)
    assert again.status_code == 200 and again.json()["content"] == "Let us start over."
    sent = fake_openai.requests[-1]["messages"]
    assert [m["role"] for m in sent[-4:]] == ["assistant", "tool", "tool", "user"]
    assert {m["content"] for m in sent[-3:-1]} == {"denied: the approval expired"}
    assert server.shop.refunds == [] and approvals_of(server, conversation) == []
    for approval in answer["approvals"]:
        assert decide(server, conversation, approval["id"]).status_code == 409


def test_a_plugin_decides_per_call_which_refunds_need_a_person(agentd_server, fake_openai, tmp_path):
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN, policy=LARGE_REFUNDS_ONLY)
    server = agentd_server({"shop": shop_agent(fake_openai)}, plugins_dir=str(folder))
    shop, policy = plugin(server, folder, "shop"), plugin(server, folder, "policy")
    # YAML marks refund_order; the policy lets small refunds through without a person.
    fake_openai.script(Reply(tool_calls=[("refund_order", {"order_id": 1, "amount": 20})]), Reply(content="Done"))
    small = server.chat("shop", "Refund order 1")
    assert small.json()["status"] == "complete" and small.json()["content"] == "Done"
    assert shop.refunds == [{"order_id": 1, "amount": 20}]
    big = paused(server, fake_openai, ("refund_order", {"order_id": 2, "amount": 500}))
    assert big["approvals"][0]["message"] == "Refund order 2?" and len(shop.refunds) == 1
    assert [amount for amount, _ in policy.asked] == [20, 500]
    assert policy.asked[1][1] == big["conversation_id"]  # the hook sees the ToolContext


def test_a_plugin_can_hold_a_tool_the_yaml_does_not_mark(agentd_server, fake_openai, tmp_path):
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN, policy=LARGE_REFUNDS_ONLY)
    server = agentd_server({"shop": shop_agent(fake_openai, tools=["refund_order"])}, plugins_dir=str(folder))
    big = paused(server, fake_openai, ("refund_order", {"order_id": 3, "amount": 101}))
    assert big["approvals"][0]["message"] == "Run refund_order?"  # no approval_message: the default


def test_the_websocket_carries_approval_events_and_decision_frames(agentd_server, fake_openai, tmp_path):
    server = shop_server(agentd_server, fake_openai, tmp_path)
    socket = Socket(server, "shop")
    try:
        fake_openai.script(Reply(tool_calls=[REFUND]))
        socket.send(type="message", message="Refund please")
        frames = socket.until("done", "error")
        assert [f["type"] for f in frames[-2:]] == ["approval_required", "done"]
        approval = frames[-2]["approval"]
        assert approval["message"] == "Refund order 1042?" and frames[-1]["message"]["status"] == "awaiting_approval"
        socket.send(type="decision", approval_id="apr_unknown", decision="approve")
        assert socket.receive()["error"]["code"] == "NOT_FOUND"
        socket.send(type="decision", approval_id=approval["id"], decision="maybe")
        assert socket.receive()["error"]["code"] == "INVALID_REQUEST"
        fake_openai.script(Reply(content="Refunded over the socket"))
        socket.send(type="decision", approval_id=approval["id"], decision="approve", reason="fine")
        resumed = socket.until("done", "error")
        assert resumed[0]["type"] == "start" and resumed[-1]["type"] == "done"
        assert resumed[-1]["message"]["content"] == "Refunded over the socket"
        assert server.shop.refunds == [REFUND[1]]
        socket.send(type="decision", approval_id=approval["id"], decision="approve")
        assert socket.receive()["error"]["code"] == "APPROVAL_RESOLVED"
    finally:
        socket.close()


def test_two_gated_calls_over_the_websocket_say_what_is_still_pending(agentd_server, fake_openai, tmp_path):
    server = shop_server(agentd_server, fake_openai, tmp_path)
    socket = Socket(server, "shop")
    try:
        fake_openai.script(Reply(tool_calls=[REFUND, ("refund_order", {"order_id": 9, "amount": 2})]))
        socket.send(type="message", message="Two refunds")
        frames = socket.until("done")
        first, second = [f["approval"]["id"] for f in frames if f["type"] == "approval_required"]
        socket.send(type="decision", approval_id=first, decision="deny")
        assert socket.receive() == {"type": "approval_recorded", "approval_id": first, "pending": [second]}
        fake_openai.script(Reply(content="One of two"))
        socket.send(type="decision", approval_id=second, decision="approve")
        assert socket.until("done")[-1]["message"]["content"] == "One of two"
        assert server.shop.refunds == [{"order_id": 9, "amount": 2}]
    finally:
        socket.close()


@pytest.mark.parametrize("entry, problem", [
    ({"refund_order": {"requires_approval": "yes"}}, "requires_approval"),
    ({"refund_order": {"approval_message": "Refund {{ args.order_id"}}, "approval_message"),
])
def test_bad_approval_keys_refuse_the_agent_with_the_key(tmp_path, fake_openai, entry, problem):
    from agentd.agents import AgentLoadError, load_agent
    from agentd.plugins import load_plugins
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN)
    path = tmp_path / "shop.yaml"
    path.write_text(shop_agent(fake_openai, tools=[entry]))
    with pytest.raises(AgentLoadError) as refused:
        load_agent(path, load_plugins([str(folder)], entry_points=False))
    assert problem in str(refused.value)


def test_approval_keys_never_reach_a_tools_own_configuration(tmp_path, fake_openai):
    from agentd.agents import load_agent
    from agentd.plugins import load_plugins
    path = tmp_path / "fetcher.yaml"
    path.write_text(shop_agent(fake_openai, tools=[{"web_fetch": {"requires_approval": True, "max_chars": 500}}],
                               approvals={"ttl": 60}))
    agent = load_agent(path, load_plugins([], entry_points=False))
    bound = agent.tools["web_fetch"]
    assert bound.requires_approval is True and bound.config == {"max_chars": 500}


BROKEN_POLICY = '''
from agentd import hookimpl


@hookimpl
def needs_approval(tool, arguments, context):
    raise RuntimeError("the policy service is down")
'''


def test_a_failing_policy_holds_the_call(agentd_server, fake_openai, tmp_path):
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN, broken=BROKEN_POLICY)
    server = agentd_server({"shop": shop_agent(fake_openai, tools=["lookup_order"])}, plugins_dir=str(folder))
    held = paused(server, fake_openai, ("lookup_order", {"order_id": 4}))
    assert held["approvals"][0]["message"] == "Run lookup_order?"
    assert plugin(server, folder, "shop").lookups == []


FLAGGED_TOOL = '''
from agentd import Tool, hookimpl

ran = []


def wipe(target: str) -> str:
    ran.append(target)
    return "wiped " + target


@hookimpl
def register_tools(register):
    tool = Tool(name="wipe", description="Wipe something.", func=wipe,
                parameters={"type": "object", "properties": {"target": {"type": "string"}},
                            "required": ["target"]})
    tool.requires_approval = True             # as a tool source (an MCP server) flags its tools
    tool.approval_message = "Wipe {{ args.target }}?"
    register(tool)
'''


def test_a_tool_that_flags_itself_is_held_without_yaml(agentd_server, fake_openai, tmp_path):
    folder = plugin_folder(tmp_path, flagged=FLAGGED_TOOL)
    server = agentd_server({"shop": shop_agent(fake_openai, tools=["wipe"])}, plugins_dir=str(folder))
    held = paused(server, fake_openai, ("wipe", {"target": "the disk"}))
    assert held["approvals"][0]["message"] == "Wipe the disk?"
    assert plugin(server, folder, "flagged").ran == []
