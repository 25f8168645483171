"""Approvals through other clients' protocols: AG-UI interrupts and resume entries, and the AI SDK's
`tool-approval-request` answered by the SDK's own client (node)."""
from __future__ import annotations

import copy
import json

import pytest
from ag_ui.core import EventType

from agentd.auth import create_key
from tests.approval_support import SHOP_PLUGIN, plugin, plugin_folder, shop_agent, tool_messages
from tests.conftest import Reply
from tests.test_protocol_agui import events_of, post, run_input
from tests.test_protocol_ui_stream import ai_client, node, ui_message  # noqa: F401  (fixture)

REFUND = ("refund_order", {"order_id": 1042, "amount": 30.5})
THREAD = "thread-approvals-0123456789"


@pytest.fixture
def shop(agentd_server, fake_openai, tmp_path):
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN)
    server = agentd_server({"shop": shop_agent(fake_openai)}, plugins_dir=str(folder))
    server.shop = plugin(server, folder, "shop")
    with server.state.db.connection_context():
        server.key = create_key("alice")[1]
    return server


def resume_input(*entries, run="run-2") -> dict:
    body = run_input(THREAD, run=run)
    body["resume"] = [{"interruptId": i, "status": s, **({"payload": p} if p is not None else {})}
                      for i, s, p in entries]
    return body


def finished(events):
    assert events[0].type == EventType.RUN_STARTED and events[-1].type == EventType.RUN_FINISHED
    return events[-1]


def test_agui_a_paused_run_finishes_with_an_interrupt_and_resume_entries_continue_it(shop, fake_openai):
    second = ("refund_order", {"order_id": 7, "amount": 2})
    fake_openai.script(Reply(tool_calls=[REFUND, second]))
    paused = finished(events_of(post(shop, shop.key, run_input(THREAD, {"role": "user", "content": "Refund"}),
                                     agent="shop")))
    assert paused.outcome.type == "interrupt"
    first, other = paused.outcome.interrupts
    assert first.id.startswith("apr_") and first.reason == "tool_approval" and first.tool_call_id == "call_1"
    assert first.message == "Refund order 1042?" and first.response_schema["required"] == ["approved"]
    assert shop.shop.refunds == []
    waiting = finished(events_of(post(shop, shop.key, resume_input((other.id, "cancelled", None)), agent="shop")))
    assert [i.id for i in waiting.outcome.interrupts] == [first.id] and fake_openai.calls == 1
    fake_openai.script(Reply(content="Refunded one of them."))
    events = events_of(post(shop, shop.key, resume_input((first.id, "resolved", {"approved": True}), run="run-3"),
                            agent="shop"))
    done = finished(events)
    assert done.outcome is None or done.outcome.type == "success"
    results = {e.tool_call_id: e.content for e in events if e.type == EventType.TOOL_CALL_RESULT}
    assert json.loads(results["call_1"])["refunded"] == 1042 and results["call_2"] == "denied: cancelled"
    text = "".join(e.delta for e in events if e.type == EventType.TEXT_MESSAGE_CONTENT)
    assert text == "Refunded one of them." and shop.shop.refunds == [REFUND[1]]
    again = post(shop, shop.key, resume_input((first.id, "resolved", True), run="run-4"), agent="shop")
    assert again.status_code == 409 and "APPROVAL_RESOLVED" in again.text


def test_agui_a_denial_with_a_reason_reaches_the_model(shop, fake_openai):
    fake_openai.script(Reply(tool_calls=[REFUND]))
    paused = finished(events_of(post(shop, shop.key, run_input(THREAD, {"role": "user", "content": "Refund"}),
                                     agent="shop")))
    fake_openai.script(Reply(content="Not refunded."))
    entry = (paused.outcome.interrupts[0].id, "resolved", {"approved": False, "reason": "too late"})
    events = events_of(post(shop, shop.key, resume_input(entry), agent="shop"))
    assert finished(events).outcome is None or finished(events).outcome.type == "success"
    assert tool_messages(fake_openai.requests[-1])[0]["content"] == "denied: too late"
    unknown = post(shop, shop.key, resume_input(("apr_nope", "resolved", True)), agent="shop")
    assert unknown.status_code == 404


def test_the_ai_sdk_client_sees_an_approval_request_and_its_response_resumes(shop, fake_openai, node):
    api = f"{shop.url}/api/agents/shop/ui-chat"
    chat_id = "chat-approvals-0123456789"
    question = ui_message("user", "Refund order 1042", "u1")
    fake_openai.script(Reply(tool_calls=[REFUND]))
    first = ai_client(node, "send", api, shop.key, chat_id, json.dumps([question]))
    assert "error" not in first and not first["errors"], first
    request = next(c for c in first["chunks"] if c["type"] == "tool-approval-request")
    assert request["toolCallId"] == "call_1" and request["reason"] == "Refund order 1042?"
    assert first["chunks"][-1] == {"type": "finish", "finishReason": "tool-calls",
                                   "messageMetadata": first["chunks"][-1]["messageMetadata"]}
    assistant = first["message"]
    [part] = [p for p in assistant["parts"] if p.get("toolCallId") == "call_1"]
    assert part["state"] == "approval-requested" and part["approval"]["id"] == request["approvalId"]
    assert shop.shop.refunds == []
    # What addToolApprovalResponse leaves in the message, sent again as useChat does.
    answered = copy.deepcopy(assistant)
    for p in answered["parts"]:
        if p.get("toolCallId") == "call_1":
            p["state"] = "approval-responded"
            p["approval"] = {"id": request["approvalId"], "approved": True}
    fake_openai.script(Reply(content="Refund sent."))
    second = ai_client(node, "continue", api, shop.key, chat_id, json.dumps([question, answered]))
    assert "error" not in second and not second["errors"], second
    kinds = [c["type"] for c in second["chunks"]]
    assert "tool-output-available" in kinds and kinds[-1] == "finish"
    texts = [p["text"] for p in second["message"]["parts"] if p["type"] == "text"]
    assert texts[-1] == "Refund sent."
    [part] = [p for p in second["message"]["parts"] if p.get("toolCallId") == "call_1"]
    assert part["state"] == "output-available" and json.loads(part["output"])["refunded"] == 1042
    assert shop.shop.refunds == [REFUND[1]]


def test_agui_empty_messages_without_resume_is_a_400(shop):
    response = post(shop, shop.key, run_input(THREAD), agent="shop")
    assert response.status_code == 400 and "INVALID_REQUEST" in response.text
    bad = run_input(THREAD)
    bad["resume"] = [{"interruptId": "apr_x", "status": "maybe"}]
    assert post(shop, shop.key, bad, agent="shop").status_code == 400


def test_an_mcp_server_marked_requires_approval_holds_its_tools(agentd_server, fake_openai):
    from tests.mcp_servers import time_server, unframed
    servers = {"time": time_server(tools=["get_current_time"], timeout=20, requires_approval=True)}
    server = agentd_server({"bot": shop_agent(fake_openai, tools=[], mcp_servers=servers)})
    fake_openai.script(Reply(tool_calls=[("time__get_current_time", {"timezone": "UTC"})]))
    paused = server.chat("bot", "What time is it?").json()
    assert paused["status"] == "awaiting_approval"
    [approval] = paused["approvals"]
    assert approval["message"] == "Run time__get_current_time?"
    assert fake_openai.calls == 1
    fake_openai.script(Reply(content="It is now."))
    resumed = server.client.post(f"/api/conversations/{paused['conversation_id']}/approvals/{approval['id']}",
                                 json={"decision": "approve"})
    assert resumed.status_code == 200 and resumed.json()["content"] == "It is now."
    [result] = tool_messages(fake_openai.requests[-1])
    assert json.loads(unframed(result["content"]))["timezone"] == "UTC"
