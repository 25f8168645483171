"""Approvals in the widget: a card with the question and Approve / Deny, in a real headless
Chromium; and what a visitor's token may see and do, over HTTP."""
from __future__ import annotations

import json
import os

import pytest

from tests.approval_support import SHOP_PLUGIN, plugin, plugin_folder, tool_messages
from tests.conftest import Reply, sse_events
from tests.widget_support import (CHROMIUM, PageServer, chromium_page, host_page,
                                  start_widget_server, widget_agent)

SECRET_AMOUNT = 777.25  # an argument: never shown to a visitor
REFUND = ("refund_order", {"order_id": 1042, "amount": SECRET_AMOUNT})
# Markup in the question must stay text in the page.
TOOLS = [{"refund_order": {"requires_approval": True,
                           "approval_message": "Refund <b>order</b> {{ args.order_id }}?"}}]
ROOT = "document.querySelector('agentd-widget[data-agent=\"shop\"]').shadowRoot"


@pytest.fixture
def site(tmp_path, database_url, fake_openai):
    pages = PageServer().start()
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN)
    agentd = start_widget_server(tmp_path, database_url,
                                 {"shop": widget_agent(fake_openai, [pages.url], tools=TOOLS)},
                                 plugins_dir=str(folder))
    agentd.shop = plugin(agentd, folder, "shop")
    pages.pages["/"] = host_page(f'<script src="{agentd.url}/widget.js" data-agent="shop" async></script>')
    yield pages, agentd
    agentd.close()
    pages.stop()


# -- over HTTP, with a visitor's token -----------------------------------------------------
def visitor(agentd, origin):
    return {"Authorization": f"Widget {agentd.token('shop', origin)}", "Origin": origin}


def test_a_visitor_sees_the_question_and_tool_name_never_the_arguments(site, fake_openai):
    pages, agentd = site
    headers = visitor(agentd, pages.url)
    fake_openai.script(Reply(tool_calls=[REFUND]))
    streamed = agentd.client.post("/api/agents/shop/chat", headers=headers,
                                  json={"message": "Refund please", "stream": True})
    assert str(SECRET_AMOUNT) not in streamed.text and "arguments" not in streamed.text
    events = sse_events(streamed)
    approval = events[-2]["approval"]
    assert approval == {"id": approval["id"], "tool": "refund_order", "message": "Refund <b>order</b> 1042?",
                        "expires_at": approval["expires_at"]}
    assert events[-1]["approvals"] == [approval] and events[-1]["message"]["status"] == "awaiting_approval"
    conversation = events[0]["conversation_id"]
    listed = agentd.client.get(f"/api/conversations/{conversation}/approvals", headers=headers)
    assert listed.status_code == 200 and listed.json() == {"approvals": [approval]}
    assert listed.headers["Access-Control-Allow-Origin"] == pages.url
    # Another visitor knows nothing of it.
    other = visitor(agentd, pages.url)
    assert agentd.client.post(f"/api/conversations/{conversation}/approvals/{approval['id']}", headers=other,
                              json={"decision": "approve"}).status_code == 404
    fake_openai.script(Reply(content="Refund sent."))
    resumed = agentd.client.post(f"/api/conversations/{conversation}/approvals/{approval['id']}",
                                 headers=headers, json={"decision": "approve", "stream": True})
    assert resumed.status_code == 200 and str(SECRET_AMOUNT) not in resumed.text
    assert "tool_result" not in resumed.text and sse_events(resumed)[-1]["message"]["content"] == "Refund sent."
    assert agentd.shop.refunds == [REFUND[1]]


def test_a_visitors_non_streamed_pause_projects_the_approvals(site, fake_openai):
    pages, agentd = site
    headers = visitor(agentd, pages.url)
    fake_openai.script(Reply(tool_calls=[REFUND]))
    answer = agentd.client.post("/api/agents/shop/chat", headers=headers, json={"message": "Refund please"})
    assert answer.status_code == 200 and str(SECRET_AMOUNT) not in answer.text
    assert "tool_calls" not in answer.json() and answer.json()["approvals"][0]["tool"] == "refund_order"
    fake_openai.script(Reply(content="No refund then."))
    denied = agentd.client.post(
        f"/api/conversations/{answer.json()['conversation_id']}/approvals/{answer.json()['approvals'][0]['id']}",
        headers=headers, json={"decision": "deny", "reason": "changed my mind"})
    assert denied.status_code == 200 and denied.json()["content"] == "No refund then."
    assert tool_messages(fake_openai.requests[-1])[0]["content"] == "denied: changed my mind"


# -- in Chromium ----------------------------------------------------------------------------
playwright_api = pytest.importorskip("playwright.sync_api")
chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")


@pytest.fixture
def page():
    yield from chromium_page()


def ask(page, text: str):
    widget = page.locator('agentd-widget[data-agent="shop"]')
    widget.locator(".launcher").click()
    widget.locator(".input").fill(text)
    widget.locator(".input").press("Enter")
    return widget


def shown_text(page) -> str:
    return page.evaluate(f"() => {ROOT}.querySelector('.log').textContent")


@chromium
def test_the_widget_shows_a_card_and_approve_resumes_the_answer(site, page, fake_openai):
    pages, agentd = site
    fake_openai.script(Reply(tool_calls=[REFUND]), Reply(content="Your refund is on its way."))
    page.goto(pages.url + "/")
    widget = ask(page, "Refund order 1042 please")
    card = widget.locator(".approval")
    card.wait_for()
    assert card.locator(".approval-text").text_content() == "Refund <b>order</b> 1042?"
    assert card.locator("b").count() == 0                      # text, never HTML
    assert card.locator(".approval-tool").text_content() == "refund order"
    assert str(SECRET_AMOUNT) not in shown_text(page) and agentd.shop.refunds == []
    card.get_by_role("button", name="Approve").click()
    widget.locator(".msg.assistant", has_text="Your refund is on its way.").wait_for()
    assert card.locator(".approval-state").text_content() == "Approved"
    assert card.get_by_role("button").count() == 0
    assert agentd.shop.refunds == [REFUND[1]]
    assert json.loads(tool_messages(fake_openai.requests[-1])[0]["content"])["refunded"] == 1042
    assert page.errors == []


@chromium
def test_the_widget_deny_button_and_a_reload_keep_the_card(site, page, fake_openai):
    pages, agentd = site
    fake_openai.script(Reply(tool_calls=[REFUND]), Reply(content="I will not refund it."))
    page.goto(pages.url + "/")
    widget = ask(page, "Refund order 1042 please")
    widget.locator(".approval").wait_for()
    page.reload()                                 # the approval waits on the server, not in the page
    widget = page.locator('agentd-widget[data-agent="shop"]')
    widget.locator(".launcher").click()
    card = widget.locator(".approval")
    card.wait_for()
    assert card.locator(".approval-text").text_content() == "Refund <b>order</b> 1042?"
    card.get_by_role("button", name="Deny").click()
    widget.locator(".msg.assistant", has_text="I will not refund it.").wait_for()
    assert card.locator(".approval-state").text_content() == "Denied"
    assert agentd.shop.refunds == []
    assert tool_messages(fake_openai.requests[-1])[0]["content"].startswith("denied: ")
    assert page.errors == []
