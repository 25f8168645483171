"""The widget in a real headless Chromium, on host pages served from another port than agentd.

Playwright for Python drives Debian's /usr/bin/chromium (no browser download);
its CSS selectors pierce the widget's open shadow root.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Reply
from tests.widget_support import (CHROMIUM, PageServer, chromium_browser, host_page, start_widget_server,
                                  widget_agent)

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def browser():
    yield from chromium_browser()


@pytest.fixture
def stack(tmp_path, database_url, fake_openai):
    """A host site, a second (not allowed) site, a pixel server, and agentd allowing the first."""
    site, evil, pixel = PageServer().start(), PageServer().start(), PageServer().start()
    agents = {"bot": widget_agent(fake_openai, [site.url], tools=["calculator"]),
              "helper": widget_agent(fake_openai, [site.url], name="Helper")}
    agentd = start_widget_server(tmp_path, database_url, agents)

    class Stack:
        pass
    stack = Stack()
    stack.site, stack.evil, stack.pixel, stack.agentd, stack.fake = site, evil, pixel, agentd, fake_openai
    yield stack
    agentd.close()
    for server in (site, evil, pixel):
        server.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 720})
    page = context.new_page()
    page.set_default_timeout(15000)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    yield page
    context.close()


def tag(stack, agent="bot", **attrs) -> str:
    extra = " ".join(f'data-{k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<script src="{stack.agentd.url}/widget.js" data-agent="{agent}" {extra} async></script>'


def widget(page, agent="bot"):
    return page.locator(f'agentd-widget[data-agent="{agent}"]')


def shadow_js(agent="bot") -> str:
    return f'document.querySelector(\'agentd-widget[data-agent="{agent}"]\').shadowRoot'


def active_class(page, agent="bot"):
    return page.evaluate(f"() => {{ const a = {shadow_js(agent)}.activeElement; return a && a.className; }}")


def send(page, text, agent="bot"):
    w = widget(page, agent)
    w.locator(".input").fill(text)
    w.locator(".input").press("Enter")


def wait_idle(page, agent="bot"):
    page.wait_for_function(f"() => !{shadow_js(agent)}.querySelector('.send').disabled")


# ------------------------------------------------------------------ chat

def test_open_send_stream_reload_and_reset(stack, page, tmp_path):
    stack.fake.script(Reply(tool_calls=[("calculator", {"expression": "6*7"})]),
                      Reply(content="Your order **#1042** shipped on *Monday*.\n\n- Carrier: `DHL`\n"
                                    "- Tracking: [track it](https://example.com/track)\n\nAnything else?",
                            chunk_delay=0.12))
    stack.site.pages["/"] = host_page(tag(stack, title="Acme help", greeting="Hi! How can I help?",
                                          starters="Where is my order?|Opening hours"))
    page.goto(stack.site.url + "/")
    w = widget(page)
    launcher = w.locator(".launcher")
    assert launcher.get_attribute("aria-expanded") == "false"
    assert w.locator(".panel").is_hidden()
    launcher.click()
    assert launcher.get_attribute("aria-expanded") == "true"
    assert w.locator(".panel").get_attribute("role") == "dialog"
    assert w.locator(".panel").get_attribute("aria-label") == "Acme help"
    assert w.locator(".log").get_attribute("aria-live") == "polite"
    assert active_class(page) == "input"                     # focus moved into the input
    w.locator(".msg.assistant", has_text="Hi! How can I help?").wait_for()
    page.evaluate(f"""() => {{ window.__statuses = [];
        new MutationObserver(() => window.__statuses.push({shadow_js()}.querySelector('.status').textContent))
          .observe({shadow_js()}.querySelector('.status'), {{childList: true, characterData: true, subtree: true}}); }}""")

    w.locator(".starter", has_text="Where is my order?").click()
    # Streamed: part of the answer shows while the turn is still running.
    page.wait_for_function(f"""() => {{ const r = {shadow_js()};
        const b = [...r.querySelectorAll('.msg.assistant .body')].pop();
        return r.querySelector('.send').disabled && b && b.textContent.includes('order')
               && !b.textContent.includes('Anything else?'); }}""")
    wait_idle(page)
    answer = w.locator(".msg.assistant").last
    assert "Anything else?" in answer.inner_text()
    assert answer.locator("strong").first.inner_text() == "#1042"
    assert answer.locator("em").inner_text() == "Monday"
    assert answer.locator("li").count() == 2 and answer.locator("code").inner_text() == "DHL"
    link = answer.locator("a")
    assert link.get_attribute("href") == "https://example.com/track"
    assert link.get_attribute("rel") == "noopener noreferrer" and link.get_attribute("target") == "_blank"
    assert "Using calculator…" in page.evaluate("window.__statuses")
    assert "6*7" not in " ".join(page.evaluate("window.__statuses"))
    assert w.locator(".starters").is_hidden()
    # AGENTD_UPDATE_SCREENSHOT=1 refreshes the committed docs/widget.png; otherwise a temp copy.
    target = DOCS / "widget.png" if os.environ.get("AGENTD_UPDATE_SCREENSHOT") else tmp_path / "widget.png"
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000

    conversation = page.evaluate("() => Object.entries(localStorage).find(([k]) => k.startsWith('agentd:conversation:'))[1]")
    assert conversation.startswith("conv_")

    # Esc closes and focus returns to the launcher.
    w.locator(".input").press("Escape")
    assert w.locator(".panel").is_hidden()
    assert launcher.get_attribute("aria-expanded") == "false"
    assert active_class(page) == "launcher"

    # After a reload the history comes back from the API.
    page.reload()
    widget(page).locator(".launcher").click()
    w = widget(page)
    w.locator(".msg.user", has_text="Where is my order?").wait_for()
    w.locator(".msg.assistant", has_text="Anything else?").wait_for()
    assert w.locator(".msg.assistant strong").first.inner_text() == "#1042"
    assert w.locator(".msg").count() == 3                      # greeting, question, answer

    # Reset starts a fresh conversation.
    w.locator('.icon[aria-label="New conversation"]').click()
    assert w.locator(".msg").count() == 1
    assert page.evaluate("() => Object.keys(localStorage).some(k => k.startsWith('agentd:conversation:'))") is False
    send(page, "Fresh start")
    w.locator(".msg.assistant", has_text="echo: Fresh start").wait_for()
    wait_idle(page)
    fresh = page.evaluate("() => Object.entries(localStorage).find(([k]) => k.startsWith('agentd:conversation:'))[1]")
    assert fresh != conversation
    assert page.errors == []


def test_retry_after_an_error(stack, page):
    stack.fake.script(Reply(status=500), Reply(content="Recovered"))
    stack.site.pages["/"] = host_page(tag(stack, open="true", label_retry="Nochmal"))
    page.goto(stack.site.url + "/")
    w = widget(page)
    w.locator(".panel").wait_for()
    send(page, "Hello")
    retry = w.locator(".error button", has_text="Nochmal")
    retry.wait_for()
    retry.click()
    w.locator(".msg.assistant", has_text="Recovered").wait_for()
    assert w.locator(".error").count() == 0
    assert w.locator(".msg.user").count() == 1


def test_a_page_on_another_origin_cannot_chat(stack, page):
    stack.evil.pages["/"] = host_page(tag(stack, open="true"))
    page.goto(stack.evil.url + "/")
    w = widget(page)
    w.locator(".panel").wait_for()
    send(page, "Hello from a stranger")
    w.locator(".error").wait_for()
    # Even with a token obtained for the real site, the stranger's page reads nothing.
    token = stack.agentd.token("bot", stack.site.url)
    outcome = page.evaluate("""async ([base, token]) => {
        try {
          const r = await fetch(base + '/api/agents/bot/chat', {method: 'POST',
            headers: {'Authorization': 'Widget ' + token, 'Content-Type': 'application/json'},
            body: JSON.stringify({message: 'hi'})});
          return 'read ' + r.status;
        } catch (e) { return 'blocked'; } }""", [stack.agentd.url, token])
    assert outcome == "blocked"
    assert stack.fake.calls == 0


# ------------------------------------------------------------ safety

def hostile_answer(pixel_url: str) -> str:
    return ("Look <script>window.__pwned='script'</script> and <img src=x onerror=\"window.__pwned='img'\">\n\n"
            "[click me](javascript:window.__pwned='link') [caps](JaVaScRiPt:alert(1)) "
            "[data](data:text/html,<script>alert(1)</script>) [ok](https://example.com/ok)\n\n"
            f"![tracker]({pixel_url}/pixel) ![]({pixel_url}/pixel2)\n\n"
            "<iframe src=\"javascript:window.__pwned='iframe'\"></iframe> <svg onload=\"window.__pwned='svg'\">\n\n"
            "```html\n<script>window.__pwned='fence'</script>\n```")


def assert_inert(page, stack):
    page.wait_for_timeout(500)
    assert page.evaluate("window.__pwned") is None
    log = shadow_js() + ".querySelector('.log')"
    assert page.evaluate(f"() => {log}.querySelectorAll('script,img,iframe,svg,object,embed,style,video,audio').length") == 0
    links = page.evaluate(f"() => [...{log}.querySelectorAll('a')].map(a => [a.getAttribute('href'), a.rel, a.target, a.textContent])")
    assert links and all(href.startswith(("https:", "http:", "mailto:")) for href, *_ in links), links
    assert all(rel == "noopener noreferrer" and target == "_blank" for _, rel, target, _ in links)
    assert not any("javascript" in href.lower() or href.startswith("data:") for href, *_ in links)
    text = page.evaluate(f"() => {log}.textContent")
    assert "<script>window.__pwned='script'</script>" in text and "click me" in text
    assert stack.pixel.hits == []
    assert page.errors == []


def test_model_output_runs_nothing_and_loads_nothing(stack, page):
    stack.fake.script(Reply(content=hostile_answer(stack.pixel.url), chunk_delay=0.01))
    stack.site.pages["/"] = host_page(tag(stack, open="true"))
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("dialog", lambda dialog: (requested.append("dialog"), dialog.dismiss()))
    page.goto(stack.site.url + "/")
    w = widget(page)
    w.locator(".panel").wait_for()
    send(page, "Say something nasty")
    w.locator(".msg.assistant pre").wait_for()
    wait_idle(page)
    assert_inert(page, stack)
    page.reload()                                # and the same answer from the history
    widget(page).locator(".msg.assistant pre").wait_for()
    assert_inert(page, stack)
    assert not any(stack.pixel.url in url or url == "dialog" for url in requested), requested


def test_host_css_cannot_restyle_the_widget(stack, page):
    stack.fake.script(Reply(content="Styled **answer** with `code`."))
    hostile = ("* { all: unset !important; color: red !important; font-size: 40px !important; "
               "letter-spacing: 9px !important; text-transform: uppercase !important } "
               "agentd-widget { display: none !important; opacity: .1 !important } "
               "html { line-height: 5 !important; font-family: fantasy !important }")
    tags = tag(stack, open="true")
    stack.site.pages["/plain"] = host_page(tags)
    stack.site.pages["/hostile"] = host_page(tags, css=hostile)
    page.goto(stack.site.url + "/plain")
    send(page, "Style me")
    widget(page).locator(".msg.assistant", has_text="Styled").wait_for()
    wait_idle(page)
    plain = computed_styles(page)
    page.goto(stack.site.url + "/hostile")       # same site: the same conversation comes back
    widget(page).locator(".msg.assistant", has_text="Styled").wait_for()
    wait_idle(page)  # the reopened widget has checked for a running answer (send enabled again)
    assert page.evaluate("getComputedStyle(document.querySelector('h1')).color") == "rgb(255, 0, 0)"
    hostile_styles = computed_styles(page)
    assert hostile_styles == plain


STYLED = [".launcher", ".panel", ".header", ".title", ".log", ".msg.user", ".msg.assistant:last-of-type",
          ".msg.assistant:last-of-type strong", ".msg.assistant:last-of-type code", ".input", ".send", ".status"]
PROPS = ["color", "background-color", "font-family", "font-size", "font-weight", "line-height",
         "letter-spacing", "text-transform", "display", "position", "padding", "border-radius", "opacity",
         "visibility"]


def computed_styles(page) -> dict:
    return page.evaluate("""([root, selectors, props]) => {
        const shadow = eval(root), host = shadow.host, out = {};
        out.host = [getComputedStyle(host).display, getComputedStyle(host).opacity];
        for (const sel of selectors) {
          const el = shadow.querySelector(sel);
          if (!el) { out[sel] = null; continue; }
          const cs = getComputedStyle(el), box = el.getBoundingClientRect();
          out[sel] = props.map(p => cs.getPropertyValue(p)).concat([box.x, box.y, box.width, box.height]);
        }
        return out; }""", [shadow_js(), STYLED, PROPS])


# ------------------------------------------------------ layout and many

def test_two_widgets_on_one_page(stack, page):
    stack.site.pages["/"] = host_page(
        tag(stack, "bot", title="Sales") + "\n" +
        tag(stack, "helper", title="Support", position="bottom-left", accent="#16a34a",
            label_send="Senden", placeholder="Ihre Nachricht"))
    page.goto(stack.site.url + "/")
    sales, support = widget(page, "bot"), widget(page, "helper")
    sales.locator(".launcher").click()
    support.locator(".launcher").click()
    assert sales.locator(".title").inner_text() == "Sales"
    assert support.locator(".title").inner_text() == "Support"
    assert support.locator(".send").inner_text() == "Senden"
    assert support.locator(".input").get_attribute("placeholder") == "Ihre Nachricht"
    assert sales.locator(".launcher").bounding_box()["x"] > 500 > support.locator(".launcher").bounding_box()["x"]
    assert support.locator(".send").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(22, 163, 74)"
    send(page, "one", "bot")
    wait_idle(page, "bot")
    send(page, "two", "helper")
    support.locator(".msg.assistant", has_text="echo: two").wait_for()
    sales.locator(".msg.assistant", has_text="echo: one").wait_for()
    assert sales.locator(".msg.assistant", has_text="echo: two").count() == 0
    keys = page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('agentd:conversation:'))")
    assert len(keys) == 2


def test_small_screen_full_width_panel(stack, browser):
    context = browser.new_context(viewport={"width": 360, "height": 640})
    page = context.new_page()
    try:
        stack.site.pages["/"] = host_page(tag(stack))
        page.goto(stack.site.url + "/")
        w = widget(page)
        w.locator(".launcher").click()
        box = w.locator(".panel").bounding_box()
        assert box["x"] == 0 and box["width"] == 360
        send_box = w.locator(".send").bounding_box()
        assert send_box["x"] + send_box["width"] <= 360 and send_box["y"] + send_box["height"] <= 640
        w.locator('.icon[aria-label="Close chat"]').click()
        assert w.locator(".panel").is_hidden()
        assert active_class(page) == "launcher"
    finally:
        context.close()


def test_an_expired_session_is_renewed(stack, page):
    stack.site.pages["/"] = host_page(tag(stack, open="true"))
    page.goto(stack.site.url + "/")
    send(page, "first")
    widget(page).locator(".msg.assistant", has_text="echo: first").wait_for()
    wait_idle(page)
    sessions = []
    page.on("request", lambda r: sessions.append(r.url) if r.url.endswith("/api/widget/session") else None)
    stack.agentd.app.secret_key = "rotated"        # every token issued so far is now invalid: 401
    send(page, "second")
    widget(page).locator(".msg.assistant", has_text="echo: second").wait_for()
    assert len(sessions) == 1
    assert widget(page).locator(".error").count() == 0


def test_demo_page_opens_the_widget(stack, page):
    stack.fake.script(Reply(content="Hello from the demo"))
    page.goto(stack.agentd.url + "/")
    page.get_by_role("link", name="Helper").click()
    w = widget(page, "helper")
    w.locator(".panel").wait_for()                  # the demo opens it on load
    send(page, "Hi", "helper")
    w.locator(".msg.assistant", has_text="Hello from the demo").wait_for()
    wait_idle(page, "helper")
    page.reload()                                   # same-origin history: GET without an Origin
    widget(page, "helper").locator(".msg.assistant", has_text="Hello from the demo").wait_for()
    assert page.errors == []
