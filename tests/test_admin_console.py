"""The operator console in a real headless Chromium: sign-in, the usage chart, a trace, API keys.

Playwright for Python drives Debian's /usr/bin/chromium (no browser download).
Screenshots go to tmp_path, or to docs/ (the images docs/console.md shows) with
AGENTD_UPDATE_SCREENSHOT=1.
"""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.admin_support import client, new_key, start_operator_server
from tests.conftest import Reply
from tests.widget_support import CHROMIUM, PageServer, chromium_browser

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def browser():
    yield from chromium_browser()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    yield page
    context.close()


@pytest.fixture
def stack(agentd_server, fake_openai, tmp_path):
    server = start_operator_server(agentd_server, fake_openai, tmp_path)
    _, admin = new_key(server, "ops", admin=True)
    _, alice = new_key(server, "alice")
    with client(server, alice) as http:
        fake_openai.script(Reply(tool_calls=[("lookup_order", {"order_id": 31})], usage=(220, 40)),
                           Reply(content="Order 31 left the warehouse today.", usage=(300, 25)))
        http.post("/api/agents/priced/chat", json={"message": "Where is my order 31?"}).raise_for_status()
        fake_openai.script(Reply(content="We open at nine.", usage=(80, 12), model="gpt-4o-mini"))
        http.post("/api/agents/listed/chat", json={"message": "Opening hours?"}).raise_for_status()
    server.admin_key = admin
    return server


def shot(page, tmp_path, name: str) -> None:
    target = DOCS / name if os.environ.get("AGENTD_UPDATE_SCREENSHOT") else tmp_path / name
    page.screenshot(path=str(target), full_page=True)


def sign_in(page, stack) -> None:
    page.goto(stack.url + "/admin/")
    assert "/admin/login" in page.url
    page.fill("#key", stack.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(stack.url + "/admin/")


def test_sign_in_sets_a_strict_httponly_session(page, stack, tmp_path):
    sign_in(page, stack)
    [cookie] = [c for c in page.context.cookies() if c["name"] == "agentd_admin"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert cookie["secure"] is False  # plain http on loopback; Secure whenever the request is https
    assert stack.admin_key not in cookie["value"]  # the session holds a hash, never the key
    page.click("text=Sign out")
    page.wait_for_url("**/admin/login")
    page.goto(stack.url + "/admin/keys")
    assert "/admin/login" in page.url


def test_a_wrong_key_is_refused_on_the_login_page(page, stack):
    page.goto(stack.url + "/admin/login")
    page.fill("#key", "agd_not-a-real-key")
    page.click("button[type=submit]")
    assert page.locator("#login-error").inner_text() == "A valid API key is required"


def watch_csp(page) -> None:
    """Record Content-Security-Policy violations (an init script runs outside the page's policy)."""
    page.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation',"
                         " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


def test_the_usage_charts_are_drawn(page, stack, tmp_path):
    watch_csp(page)  # the console sends a strict policy: no inline script or style anywhere
    sign_in(page, stack)
    page.wait_for_selector('.chart[data-drawn="true"] canvas')
    assert page.locator('.chart[data-drawn="true"]').count() == 4
    assert page.locator(".chart canvas").count() == 4
    legends = page.locator(".chart").first.locator(".u-legend").text_content()
    assert "priced" in legends and "listed" in legends
    assert page.locator("#total-prompt").inner_text() == "600"
    assert page.locator("#top-users tbody tr").first.inner_text().startswith("alice")
    # The canvas holds drawn pixels, not a blank rectangle.
    painted = page.evaluate("""() => {
        const c = document.querySelector('.chart canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
    assert painted > 500
    policy = page.context.request.get(stack.url + "/admin/").headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert page.errors == [] and page.evaluate("window.__csp") == []
    shot(page, tmp_path, "console-usage.png")


def test_search_and_the_trace_timeline(page, stack, tmp_path):
    sign_in(page, stack)
    page.click("text=Conversations")
    page.fill("input[name=q]", "warehouse")
    page.click("#search button")
    rows = page.locator("#conversations tbody tr")
    assert rows.count() == 1 and "Where is my order 31?" in rows.first.inner_text()
    rows.first.locator("a").click()
    page.wait_for_selector("svg.timeline")
    bars = page.locator("svg.timeline rect")
    assert bars.count() == 3  # model call, tool call, model call
    assert page.locator("svg.timeline .tool_call text").text_content().startswith("lookup_order")
    assert '{"order_id": 31}' in page.locator(".tool-call code").first.inner_text()
    assert "Order 31 left the warehouse today." in page.locator(".answer").inner_text()
    shot(page, tmp_path, "console-trace.png")


def test_keys_are_created_once_and_revoked_with_csrf(page, stack, tmp_path):
    sign_in(page, stack)
    page.click("text=API keys")
    page.fill("#create-key input[name=user]", "carol")
    sent = {name: page.locator(f"#create-key input[name={name}]").input_value()
            for name in ("csrf_token", "form_id", "user")}
    page.click("#create-key button")
    new_key_value = page.locator("#new-key-value").inner_text()
    assert new_key_value.startswith("agd_")
    # Reloading that page sends the same form again: refused, and no second key.
    again = page.context.request.post(stack.url + "/admin/keys", form=sent)
    assert again.status == 409 and "already sent" in again.text() and "agd_" not in again.text()
    assert httpx.get(stack.url + "/api/agents", headers={"Authorization": f"Bearer {new_key_value}"}).status_code == 200
    shot(page, tmp_path, "console-keys.png")
    page.goto(stack.url + "/admin/keys")
    assert page.locator("#new-key-value").count() == 0  # shown once
    row = page.locator("#keys tr", has_text="carol")
    assert row.count() == 1
    row.locator("button", has_text="Revoke").click()
    page.wait_for_selector("#keys tr:has-text('carol') .status")
    assert httpx.get(stack.url + "/api/agents", headers={"Authorization": f"Bearer {new_key_value}"}).status_code == 401


def test_a_post_without_the_csrf_token_is_refused(page, stack):
    sign_in(page, stack)
    forged = page.context.request.post(stack.url + "/admin/keys", form={"user": "mallory"})
    assert forged.status == 403 and "CSRF" in forged.text()
    wrong = page.context.request.post(stack.url + "/admin/keys", form={"user": "mallory", "csrf_token": "guess"})
    assert wrong.status == 403
    # A form on another page (another port of this host: the same site, so the cookie goes along).
    other = PageServer().start()
    try:
        other.pages["/form"] = (f'<form method="post" action="{stack.url}/admin/keys">'
                                '<input name="user" value="mallory"><button id="go">go</button></form>')
        page.goto(other.url + "/form")
        page.click("#go")
        page.wait_for_load_state()
        assert "FORBIDDEN" in page.content()
    finally:
        other.stop()
    page.goto(stack.url + "/admin/keys")
    assert page.locator("#keys tr", has_text="mallory").count() == 0


def test_agents_page_lists_models_tools_and_prices(page, stack):
    sign_in(page, stack)
    page.click("text=Agents")
    priced = page.locator("#agents tr", has_text="priced").inner_text()
    assert "openai / fake-model" in priced and "lookup_order" in priced and "0.15 in / 0.6 out" in priced
    assert "from the price list" in page.locator("#agents tr", has_text="listed").inner_text()
