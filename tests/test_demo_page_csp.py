"""agentd's own demo page under its Content-Security-Policy, in a real headless Chromium:
the widget still loads, styles itself and chats, and the browser reports no violation."""
from __future__ import annotations

import os

import pytest

from tests.conftest import Reply, openai_agent
from tests.widget_support import CHROMIUM, chromium_browser

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")


def test_the_demo_page_works_under_its_csp(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, widget={"enabled": True, "title": "Demo bot"})})
    fake_openai.script(Reply(content="Hello from the **demo**."))
    for browser in chromium_browser():
        page = browser.new_page()
        page.set_default_timeout(15000)
        console = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(server.url + "/?agent=bot")
        widget = page.locator('agentd-widget[data-agent="bot"]')
        widget.locator(".input").fill("hi")
        widget.locator(".input").press("Enter")
        widget.locator(".msg.assistant", has_text="Hello from the").wait_for()
        assert widget.locator(".msg.assistant strong").last.inner_text() == "demo"
        # The widget's stylesheet applied (a CSP blocking it would leave the panel unstyled).
        position = page.evaluate("""() => getComputedStyle(document.querySelector(
            'agentd-widget[data-agent="bot"]').shadowRoot.querySelector('.panel')).position""")
        assert position == "fixed"
    assert not [text for text in console if "Content Security Policy" in text], console
