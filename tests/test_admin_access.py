"""Only admins reach the operator's routes and pages: 403 FORBIDDEN for every other key."""
from __future__ import annotations

import re

import httpx
import pytest

from tests.admin_support import client, new_key, start_operator_server
from tests.conftest import openai_agent


@pytest.fixture
def server(agentd_server, fake_openai, tmp_path):
    return start_operator_server(agentd_server, fake_openai, tmp_path)


def admin_urls(app) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /api/admin and /admin, with sample values."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/api/admin", "/admin")) or rule.endpoint in (
                "console.login", "console.login_post", "console.static"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: f"sample_{m.group(1)}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method, path))
    return found


def test_the_admin_surface_is_what_the_test_covers(server):
    urls = admin_urls(server.app)
    assert ("GET", "/api/admin/usage") in urls and ("POST", "/admin/keys") in urls
    assert len(urls) >= 11, urls


@pytest.mark.parametrize("kind", ["plain", "limited"])
def test_non_admin_keys_get_403_on_every_admin_route_and_page(server, kind):
    _, key = new_key(server, "alice", agents=["priced"] if kind == "limited" else None)
    with client(server, key) as alice:
        for method, path in admin_urls(server.app):
            response = alice.request(method, path)
            assert response.status_code == 403, (method, path, response.status_code)
            if path.startswith("/api/"):
                assert response.json()["error"]["code"] == "FORBIDDEN"
            else:
                assert "FORBIDDEN" in response.text


def test_a_non_admin_key_cannot_sign_in_to_the_console(server):
    _, key = new_key(server, "alice")
    with httpx.Client(base_url=server.url) as browser:
        login = browser.get("/admin/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
        response = browser.post("/admin/login", data={"key": key, "csrf_token": token})
        assert response.status_code == 403 and "not an admin key" in response.text
        assert "agentd_admin" not in response.headers.get("set-cookie", "") or "k" not in response.text
        assert browser.get("/admin/").status_code == 302


def test_no_key_at_all_is_401_on_the_api_and_a_login_redirect_on_pages(server):
    new_key(server, "ops", admin=True)
    anonymous = httpx.Client(base_url=server.url)
    assert anonymous.get("/api/admin/usage").status_code == 401
    page = anonymous.get("/admin/conversations")
    assert page.status_code == 302 and "/admin/login" in page.headers["location"]


def test_an_admin_key_opens_every_read_route(server):
    _, key = new_key(server, "ops", admin=True)
    with client(server, key) as ops:
        assert ops.get("/api/admin/usage").status_code == 200
        assert ops.get("/api/admin/conversations").status_code == 200
        assert ops.get("/api/admin/conversations/conv_missing").json()["error"]["code"] == "CONVERSATION_NOT_FOUND"
        for page in ("/admin/", "/admin/conversations", "/admin/agents", "/admin/keys"):
            assert ops.get(page).status_code == 200, page


def test_the_local_user_is_admin_in_open_local_mode(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    assert server.client.get("/api/admin/usage").status_code == 200
    assert server.client.get("/admin/").status_code == 200
    # ...but only for this machine's own callers, as everywhere in open mode.
    refused = server.client.get("/admin/", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403


def test_a_revoked_admin_key_loses_the_api(server):
    from agentd.auth import revoke_key
    key_id, key = new_key(server, "ops", admin=True)
    with client(server, key) as ops:
        assert ops.get("/api/admin/usage").status_code == 200
        with server.state.db.connection_context():
            revoke_key(key_id)
        assert ops.get("/api/admin/usage").status_code == 401


def test_the_session_cookie_is_secure_over_https(agentd_server, fake_openai, tmp_path, database_url):
    from agentd.auth import create_key
    from agentd.store import connect_database
    database = connect_database(database_url)  # a key first: behind a proxy there is no open mode
    with database.connection_context():
        key = create_key("ops", admin=True)[1]
    database.close()
    server = start_operator_server(agentd_server, fake_openai, tmp_path, trusted_proxies=1)
    with httpx.Client(base_url=server.url, headers={"X-Forwarded-Proto": "https"}) as browser:
        login = browser.get("/admin/login")
        assert "; Secure" in login.headers["set-cookie"]
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
        # (the test talks plain http to the proxy's side, so hand the Secure cookie back itself)
        browser.cookies.set("agentd_admin", login.cookies["agentd_admin"])
        signed_in = browser.post("/admin/login", data={"key": key, "csrf_token": token})
        cookie = signed_in.headers["set-cookie"]
        assert signed_in.status_code == 302
        for attribute in ("; Secure", "; HttpOnly", "; SameSite=Strict", "; Path=/admin"):
            assert attribute in cookie, cookie
    with httpx.Client(base_url=server.url) as plain:
        assert "; Secure" not in plain.get("/admin/login").headers["set-cookie"]
