"""The widget re-attaches to a running answer after a reload, in a real headless Chromium."""
from __future__ import annotations

import os

import pytest

from tests.conftest import Reply
from tests.widget_support import (CHROMIUM, PageServer, chromium_page, host_page,
                                  start_widget_server, widget_agent)

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
ANSWER = " ".join(f"part{i}" for i in range(50)) + "."


@pytest.fixture
def page():
    yield from chromium_page()


@pytest.fixture
def site(tmp_path, database_url, fake_openai):
    pages = PageServer().start()
    agentd = start_widget_server(tmp_path, database_url, {"bot": widget_agent(fake_openai, [pages.url])})
    pages.pages["/"] = host_page(f'<script src="{agentd.url}/widget.js" data-agent="bot" async></script>')
    yield pages, agentd
    agentd.close()
    pages.stop()


ROOT = "document.querySelector('agentd-widget[data-agent=\"bot\"]').shadowRoot"


def answer_text(page) -> str:
    return page.evaluate(f"() => [...{ROOT}.querySelectorAll('.msg.assistant .body')].map(b => b.textContent)"
                         ".join('|')")


def test_a_reload_mid_answer_shows_the_answer_continuing_once(site, page, fake_openai):
    pages, agentd = site
    fake_openai.script(Reply(content=ANSWER, chunk_delay=0.1))
    page.goto(pages.url + "/")
    widget = page.locator('agentd-widget[data-agent="bot"]')
    widget.locator(".launcher").click()
    widget.locator(".input").fill("Tell me everything")
    widget.locator(".input").press("Enter")
    page.wait_for_function(f"() => [...{ROOT}.querySelectorAll('.msg.assistant .body')]"
                           ".some(b => b.textContent.includes('part3'))")
    page.reload()                                  # mid-answer: the run goes on without the page
    widget = page.locator('agentd-widget[data-agent="bot"]')
    widget.locator(".launcher").click()
    widget.locator(".msg.user", has_text="Tell me everything").wait_for()
    # The answer continues where it is, while the run still streams…
    page.wait_for_function(f"() => {ROOT}.querySelector('.send').disabled")
    # …and ends whole, once.
    page.wait_for_function(f"() => !{ROOT}.querySelector('.send').disabled"
                           f" && [...{ROOT}.querySelectorAll('.msg.assistant .body')]"
                           ".some(b => b.textContent.includes('part49.'))")
    assert answer_text(page) == ANSWER
    assert widget.locator(".msg.user").count() == 1
    assert widget.locator(".msg.assistant").count() == 1
    conversation = page.evaluate("() => Object.entries(localStorage)"
                                 ".find(([k]) => k.startsWith('agentd:conversation:'))[1]")
    with agentd.state.db.connection_context():
        from agentd.store.models import Message
        stored = [(m.role, m.content, m.status) for m in
                  Message.select().where(Message.conversation == conversation).order_by(Message.id)]
    assert stored == [("user", "Tell me everything", "complete"), ("assistant", ANSWER, "complete")]
    assert page.errors == []
