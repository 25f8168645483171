"""Tool approvals over real HTTP: a gated call pauses the run; a person's decision resumes it.

The fake OpenAI server scripts the model's tool calls and records what it was
sent, so the tests check what the model really saw after a decision; a folder
plugin's refund tool counts the calls that really ran.
"""
from __future__ import annotations

import json

import pytest

from tests.approval_support import (SHOP_PLUGIN, approvals_of, decide, plugin, plugin_folder, shop_agent,
                                    tool_messages)
from tests.conftest import Reply, sse_events

REFUND = ("refund_order", {"order_id": 1042, "amount": 30.5})


@pytest.fixture
def shop(agentd_server, fake_openai, tmp_path):
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN)
    server = agentd_server({"shop": shop_agent(fake_openai)}, plugins_dir=str(folder))
    server.shop = plugin(server, folder, "shop")
    return server


def pause(server, fake, *calls, stream=False) -> dict:
    """Send a message whose model step calls `calls`; the paused answer (JSON) or its events."""
    fake.script(Reply(tool_calls=list(calls)))
    response = server.chat("shop", "Please refund my order", stream=stream)
    assert response.status_code == 200, response.text
    return sse_events(response) if stream else response.json()


def test_a_gated_call_pauses_a_non_streamed_turn_and_nothing_runs(shop, fake_openai):
    answer = pause(shop, fake_openai, REFUND)
    assert answer["status"] == "awaiting_approval" and answer["role"] == "assistant"
    assert answer["tool_calls"][0]["function"]["name"] == "refund_order"
    [approval] = answer["approvals"]
    assert approval["id"].startswith("apr_") and approval["message"] == "Refund order 1042?"
    assert approval["tool_call"] == answer["tool_calls"][0] and approval["expires_at"].endswith("Z")
    assert shop.shop.refunds == [] and fake_openai.calls == 1
    conversation = answer["conversation_id"]
    assert [a["id"] for a in approvals_of(shop, conversation)] == [approval["id"]]
    # Nothing is held while waiting: no run, no lock.
    assert shop.client.get(f"/api/conversations/{conversation}").json()["running"] is None
    assert shop.client.get(f"/api/conversations/{conversation}/stream").status_code == 204


def test_a_gated_call_ends_a_streamed_turn_with_approval_required_and_done(shop, fake_openai):
    events = pause(shop, fake_openai, REFUND, stream=True)
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-2:] == ["approval_required", "done"]
    approval = events[-2]["approval"]
    assert approval["message"] == "Refund order 1042?"
    assert json.loads(approval["tool_call"]["function"]["arguments"]) == REFUND[1]
    assert events[-1]["message"]["status"] == "awaiting_approval"
    assert events[-1]["message"]["id"] == events[0]["id"]
    assert "tool_result" not in types and shop.shop.refunds == []
    stored = shop.history("shop", conversation_id=events[0]["conversation_id"]).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"] and stored[1]["status"] == "awaiting_approval"


def test_approving_runs_the_call_once_with_the_arguments_shown(shop, fake_openai):
    answer = pause(shop, fake_openai, REFUND)
    conversation, approval = answer["conversation_id"], answer["approvals"][0]
    fake_openai.script(Reply(content="Your refund is on its way."))
    resumed = decide(shop, conversation, approval["id"], "approve")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["content"] == "Your refund is on its way." and resumed.json()["status"] == "complete"
    shown = json.loads(approval["tool_call"]["function"]["arguments"])
    assert shop.shop.refunds == [shown]
    [result] = tool_messages(fake_openai.requests[-1])
    assert result["tool_call_id"] == approval["tool_call"]["id"]
    assert json.loads(result["content"]) == {"refunded": 1042, "amount": 30.5}
    again = decide(shop, conversation, approval["id"], "approve")
    assert again.status_code == 409 and again.json()["error"]["code"] == "APPROVAL_RESOLVED"
    assert decide(shop, conversation, approval["id"], "deny").json()["error"]["code"] == "APPROVAL_RESOLVED"
    assert shop.shop.refunds == [shown] and fake_openai.calls == 2
    assert approvals_of(shop, conversation) == []
    stored = shop.history("shop", conversation_id=conversation).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["status"] == "complete"


def test_denying_gives_the_model_a_denied_result_with_the_reason(shop, fake_openai):
    answer = pause(shop, fake_openai, REFUND)
    fake_openai.script(Reply(content="Understood, no refund."))
    resumed = decide(shop, answer["conversation_id"], answer["approvals"][0]["id"], "deny",
                     reason="over the limit")
    assert resumed.status_code == 200 and resumed.json()["content"] == "Understood, no refund."
    [result] = tool_messages(fake_openai.requests[-1])
    assert result["content"] == "denied: over the limit"
    assert shop.shop.refunds == []
    stored = shop.history("shop", conversation_id=answer["conversation_id"]).json()["messages"]
    assert stored[2]["role"] == "tool" and stored[2]["is_error"] is True
    assert stored[2]["content"] == "denied: over the limit"


def test_the_other_calls_of_the_step_run_at_once(shop, fake_openai):
    answer = pause(shop, fake_openai, REFUND, ("lookup_order", {"order_id": 7}))
    assert shop.shop.lookups == [7] and shop.shop.refunds == []
    conversation = answer["conversation_id"]
    stored = shop.history("shop", conversation_id=conversation).json()["messages"]
    assert [(m["role"], m.get("tool_call_id")) for m in stored] == [
        ("user", None), ("assistant", None), ("tool", "call_2")]
    fake_openai.script(Reply(content="Done"))
    assert decide(shop, conversation, answer["approvals"][0]["id"]).status_code == 200
    results = tool_messages(fake_openai.requests[-1])
    assert sorted(r["tool_call_id"] for r in results) == ["call_1", "call_2"]  # each call answered once
    assert shop.shop.lookups == [7] and len(shop.shop.refunds) == 1


def test_two_gated_calls_answer_202_until_both_are_decided(shop, fake_openai):
    second = ("refund_order", {"order_id": 2001, "amount": 12})
    answer = pause(shop, fake_openai, REFUND, second)
    conversation = answer["conversation_id"]
    first_id, second_id = [a["id"] for a in answer["approvals"]]
    assert [a["message"] for a in answer["approvals"]] == ["Refund order 1042?", "Refund order 2001?"]
    waiting = decide(shop, conversation, second_id, "deny", reason="not this one")
    assert waiting.status_code == 202 and waiting.json() == {"pending": [first_id]}
    assert fake_openai.calls == 1 and [a["id"] for a in approvals_of(shop, conversation)] == [first_id]
    fake_openai.script(Reply(content="One refunded, one not."))
    resumed = decide(shop, conversation, first_id, "approve")
    assert resumed.status_code == 200 and resumed.json()["content"] == "One refunded, one not."
    assert shop.shop.refunds == [{"order_id": 1042, "amount": 30.5}]
    results = {r["tool_call_id"]: r["content"] for r in tool_messages(fake_openai.requests[-1])}
    assert results["call_2"] == "denied: not this one" and json.loads(results["call_1"])["refunded"] == 1042


def test_a_streamed_decision_resumes_as_a_numbered_run(shop, fake_openai):
    answer = pause(shop, fake_openai, REFUND)
    fake_openai.script(Reply(content="Refund sent"))
    response = decide(shop, answer["conversation_id"], answer["approvals"][0]["id"], stream=True)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    ids = [line[4:] for line in response.text.split("\n") if line.startswith("id: ")]
    events = sse_events(response)
    assert events[0]["type"] == "start" and events[0]["run_id"].startswith("run_")
    assert ids == [f"{events[0]['run_id']}:{n}" for n in range(1, len(events) + 1)]
    assert [e for e in events if e["type"] == "tool_result"][0]["name"] == "refund_order"
    assert events[-1]["type"] == "done" and events[-1]["message"]["content"] == "Refund sent"
    assert len(shop.shop.refunds) == 1


def test_a_new_message_while_an_approval_is_pending_is_refused_and_not_stored(shop, fake_openai):
    answer = pause(shop, fake_openai, REFUND)
    conversation = answer["conversation_id"]
    before = shop.history("shop", conversation_id=conversation).json()["messages"]
    refused = shop.chat("shop", "Hello?", conversation_id=conversation)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "APPROVAL_PENDING"
    streamed = shop.chat("shop", "Hello?", conversation_id=conversation, stream=True)
    assert streamed.status_code == 409 and streamed.json()["error"]["code"] == "APPROVAL_PENDING"
    assert shop.history("shop", conversation_id=conversation).json()["messages"] == before
    assert fake_openai.calls == 1
    # The approval is still there to decide, and the conversation goes on afterwards.
    fake_openai.script(Reply(content="Refunded"))
    assert decide(shop, conversation, answer["approvals"][0]["id"]).status_code == 200
    assert shop.chat("shop", "Thanks", conversation_id=conversation).status_code == 200


@pytest.mark.parametrize("body, field", [
    ({}, "decision"), ({"decision": "maybe"}, "decision"), ({"decision": "approve", "reason": 3}, "reason"),
    ({"decision": "deny", "reason": "x" * 1001}, "reason"), ({"decision": "approve", "stream": "yes"}, "stream")])
def test_bad_decision_bodies_are_400_and_decide_nothing(shop, fake_openai, body, field):
    answer = pause(shop, fake_openai, REFUND)
    conversation, approval_id = answer["conversation_id"], answer["approvals"][0]["id"]
    response = shop.client.post(f"/api/conversations/{conversation}/approvals/{approval_id}", json=body)
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_REQUEST"
    assert response.json()["error"]["message"].startswith(field)
    assert [a["id"] for a in approvals_of(shop, conversation)] == [approval_id]


def test_unknown_approvals_and_conversations_are_404(shop, fake_openai):
    answer = pause(shop, fake_openai, REFUND)
    conversation = answer["conversation_id"]
    unknown = decide(shop, conversation, "apr_nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    elsewhere = decide(shop, "conv_nope", answer["approvals"][0]["id"])
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "NOT_FOUND"
    listed = shop.client.get("/api/conversations/conv_nope/approvals")
    assert listed.status_code == 404
    assert shop.shop.refunds == [] and len(approvals_of(shop, conversation)) == 1


def test_approval_responses_match_the_openapi_description(shop, fake_openai):
    from tests.test_openapi import conforms
    listing, deciding = "/api/conversations/{conversation_id}/approvals", \
        "/api/conversations/{conversation_id}/approvals/{approval_id}"
    fake_openai.script(Reply(tool_calls=[REFUND, ("refund_order", {"order_id": 2, "amount": 1})]))
    paused = shop.chat("shop", "Refund two")
    assert paused.status_code == 200
    conforms(paused, "/api/agents/{agent_id}/chat", "POST")
    conversation = paused.json()["conversation_id"]
    first, second = [a["id"] for a in paused.json()["approvals"]]
    answers = [(shop.client.get(f"/api/conversations/{conversation}/approvals"), listing, "GET"),
               (shop.client.get("/api/conversations/conv_nope/approvals"), listing, "GET"),
               (shop.chat("shop", "again", conversation_id=conversation), "/api/agents/{agent_id}/chat", "POST"),
               (decide(shop, conversation, first, "deny"), deciding, "POST"),
               (decide(shop, conversation, first, "deny"), deciding, "POST"),
               (decide(shop, conversation, "apr_nope"), deciding, "POST")]
    # Each kind of answer the contract names: listed, unknown, pending, still waiting, resolved, unknown id.
    assert [response.status_code for response, _, _ in answers] == [200, 404, 409, 202, 409, 404]
    for response, path, method in answers:
        conforms(response, path, method)  # raises when the body breaks the OpenAPI description
    conforms(shop.client.post(f"/api/conversations/{conversation}/approvals/{second}", json=[]), deciding, "POST")
    fake_openai.script(Reply(content="ok"))
    conforms(decide(shop, conversation, second, stream=True), deciding, "POST")
    fake_openai.script(Reply(tool_calls=[REFUND]))
    conforms(shop.chat("shop", "once more", conversation_id=conversation, stream=True),
             "/api/agents/{agent_id}/chat", "POST")


@pytest.mark.parametrize("approval_id, body", [
    ("apr_%00", {"decision": "approve"}), ("a" * 5000, {"decision": "deny", "reason": "\x00"}),
    ("apr_x", {"decision": ["approve"]}), ("apr_x", {"decision": "approve", "reason": None, "stream": None}),
])
def test_generated_odd_inputs_are_4xx(shop, fake_openai, approval_id, body):
    answer = pause(shop, fake_openai, REFUND)
    response = shop.client.post(f"/api/conversations/{answer['conversation_id']}/approvals/{approval_id}",
                                json=body)
    assert 400 <= response.status_code < 500, response.text


def test_a_pause_after_a_first_tool_round_and_a_resumed_run_that_pauses_again(shop, fake_openai):
    fake_openai.script(Reply(tool_calls=[("lookup_order", {"order_id": 1042})]), Reply(tool_calls=[REFUND]))
    answer = shop.chat("shop", "Refund it if it shipped")
    assert answer.json()["status"] == "awaiting_approval" and shop.shop.lookups == [1042]
    conversation = answer.json()["conversation_id"]
    again = ("refund_order", {"order_id": 1042, "amount": 5})
    fake_openai.script(Reply(tool_calls=[again]))
    resumed = decide(shop, conversation, answer.json()["approvals"][0]["id"], stream=True)
    events = sse_events(resumed)
    assert [e["type"] for e in events][-2:] == ["approval_required", "done"]
    assert events[-1]["message"]["status"] == "awaiting_approval"
    assert shop.shop.refunds == [REFUND[1]]
    fake_openai.script(Reply(content="Both refunds done"))
    final = decide(shop, conversation, events[-2]["approval"]["id"])
    assert final.json()["content"] == "Both refunds done"
    assert shop.shop.refunds == [REFUND[1], again[1]]
    stored = shop.history("shop", conversation_id=conversation).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant", "tool", "assistant", "tool",
                                          "assistant"]
    assert all(m.get("status") in (None, "complete") for m in stored)
    # What the model saw last: each step's calls answered by their real results, in order.
    sent = fake_openai.requests[-1]["messages"]
    assert [m["role"] for m in sent if m["role"] != "system"] == [m["role"] for m in stored][:-1]
    assert [json.loads(m["content"]).get("amount") for m in sent if m["role"] == "tool"][1:] == [30.5, 5]


def test_clearing_the_history_drops_its_pending_approvals(shop, fake_openai):
    answer = pause(shop, fake_openai, REFUND)
    conversation = answer["conversation_id"]
    assert shop.client.delete("/api/agents/shop/chat", params={"conversation_id": conversation}).status_code == 200
    assert approvals_of(shop, conversation) == []
    fake_openai.script(Reply(content="Fresh start"))
    assert shop.chat("shop", "Hello again", conversation_id=conversation).json()["content"] == "Fresh start"
    gone = decide(shop, conversation, answer["approvals"][0]["id"])
    assert gone.status_code == 404 and shop.shop.refunds == []


def test_two_people_deciding_the_last_two_calls_at_once_resume_the_step_exactly_once(shop, fake_openai):
    from concurrent.futures import ThreadPoolExecutor
    answer = pause(shop, fake_openai, REFUND, ("refund_order", {"order_id": 2, "amount": 1}))
    conversation = answer["conversation_id"]
    fake_openai.script(Reply(content="Both done"))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda a: decide(shop, conversation, a["id"]), answer["approvals"]))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 202], [r.text for r in results]
    waiting = next(r for r in results if r.status_code == 202).json()["pending"]
    assert len(waiting) == 1 and waiting[0] in [a["id"] for a in answer["approvals"]]
    assert next(r for r in results if r.status_code == 200).json()["content"] == "Both done"
    assert len(shop.shop.refunds) == 2 and fake_openai.calls == 2


def test_calls_past_max_parallel_are_refused_not_held(agentd_server, fake_openai, tmp_path):
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN)
    server = agentd_server({"shop": shop_agent(fake_openai, max_parallel_tool_calls=2)}, plugins_dir=str(folder))
    calls = [("lookup_order", {"order_id": 1}), REFUND, ("refund_order", {"order_id": 3, "amount": 1}),
             ("lookup_order", {"order_id": 4})]
    fake_openai.script(Reply(tool_calls=calls))
    answer = server.chat("shop", "Many things").json()
    assert [a["tool_call"]["id"] for a in answer["approvals"]] == ["call_2"]
    stored = server.history("shop", conversation_id=answer["conversation_id"]).json()["messages"]
    results = {m["tool_call_id"]: m["content"] for m in stored if m["role"] == "tool"}
    assert set(results) == {"call_1", "call_3", "call_4"}
    assert "too many tool calls" in results["call_3"] and "too many tool calls" in results["call_4"]
    assert plugin(server, folder, "shop").lookups == [1]
