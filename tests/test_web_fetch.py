"""web_fetch never reaches a non-public address, caps what it reads, and returns page text.

The SSRF cases run through the chat API with the fake model calling web_fetch,
while a canary HTTP server on 127.0.0.1 checks that nothing reached it.
"""
from __future__ import annotations

import json
from contextlib import ExitStack

import pytest

from agentd import ToolContext, ToolError
from agentd.tools import netguard
from agentd.plugins import load_plugins
from tests.conftest import Reply, openai_agent
from tests.fakes.web_servers import (PRETEND_PUBLIC, SentCounter, big_image, canary_server,
                                     page_server, route_names)


@pytest.fixture
def canary():
    with canary_server() as server:
        yield server


@pytest.fixture
def pages(canary):
    with page_server(target=f"http://127.0.0.1:{canary.port}/secret") as server:
        yield server


@pytest.fixture(scope="module")
def web_fetch():
    """The web_fetch tool exactly as the plugin system registers it."""
    return load_plugins(entry_points=False).tools["web_fetch"]


def fetch(tool, url: str, **config):
    return tool.call({"url": url}, ToolContext(config=config))


# -- the address table ----------------------------------------------------------------------
@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3", "224.0.0.1", "255.255.255.255",
    "240.0.0.1", "192.0.2.1", "198.18.0.1", "::", "::1", "fe80::1", "fc00::1", "fd12:3456::1",
    "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2002:a00:1::", "::127.0.0.1", "2001:db8::1",
    "2001::1", "fec0::1", "100::1"])
def test_non_public_addresses(address):
    assert not netguard.is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "1.1.1.1", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses(address):
    assert netguard.is_public_address(address)


@pytest.mark.parametrize("host,address", [("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"),
                                          ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
                                          ("[::1]", "::1"), ("example.com", None)])
def test_host_literals_in_every_legacy_form(host, address):
    literal = netguard.host_literal(host)
    assert (str(literal) if literal else None) == address


# -- through the chat API: nothing reaches the canary ----------------------------------------
def blocked_urls(canary_port: int) -> list[str]:
    p = canary_port
    return [f"http://127.0.0.1:{p}/", f"http://localhost:{p}/", f"http://[::1]:{p}/",
            f"http://0.0.0.0:{p}/", f"http://127.1:{p}/", f"http://2130706433:{p}/",
            f"http://0x7f000001:{p}/", f"http://0177.0.0.1:{p}/", f"http://[::ffff:127.0.0.1]:{p}/",
            "http://169.254.169.254/latest/meta-data/", f"http://intranet.test:{p}/",
            f"http://mixed.test:{p}/", f"http://{PRETEND_PUBLIC}/redirect",
            f"http://public.test/redirect-by-name", f"file:///etc/passwd",
            f"gopher://127.0.0.1:{p}/_GET%20/", f"http://user:pass@public.test/page",
            "http://public.test:22/", f"http://[::ffff:7f00:1]:{p}/", f"http://[64:ff9b::7f00:1]:{p}/"]


def test_web_fetch_refuses_every_private_route_through_the_chat_api(
        agentd_server, fake_openai, canary, monkeypatch):
    with page_server(target=f"http://127.0.0.1:{canary.port}/secret",
                     extra={"/redirect-by-name": lambda h: h._send(
                         302, b"", headers={"Location": f"http://intranet.test:{canary.port}/"})}) as pages:
        log = route_names(monkeypatch,
                          names={"intranet.test": ["127.0.0.1"], "mixed.test": [PRETEND_PUBLIC, "127.0.0.1"],
                                 "public.test": [PRETEND_PUBLIC]},
                          routes={(PRETEND_PUBLIC, 80): pages.port})
        urls = blocked_urls(canary.port)
        agent = openai_agent(fake_openai, tools=[{"web_fetch": {"allowed_ports": [80, 443, canary.port]}}],
                             max_parallel_tool_calls=len(urls))  # all in one step
        server = agentd_server({"fetcher": agent})
        fake_openai.script(Reply(tool_calls=[("web_fetch", {"url": u}) for u in urls]), Reply(content="done"))
        response = server.chat("fetcher", "fetch them all")
        assert response.status_code == 200, response.text
        results = [m for m in fake_openai.requests[1]["messages"] if m["role"] == "tool"]
        assert len(results) == len(urls)
        for url, result in zip(urls, results):
            assert result["content"].startswith("Error:"), (url, result["content"])
            assert "CANARY" not in result["content"], url
        assert canary.requests == []
        # The redirects did run their first hop, so the refusal really was the second hop's.
        assert sorted(r[1] for r in pages.requests) == ["/redirect", "/redirect-by-name"]  # the calls run concurrently
        assert all(ip != "127.0.0.1" for ip, _ in log["connected"])


def test_the_stored_tool_results_are_errors(agentd_server, fake_openai, canary):
    server = agentd_server({"fetcher": openai_agent(
        fake_openai, tools=[{"web_fetch": {"allowed_ports": [canary.port]}}])})
    fake_openai.script(Reply(tool_calls=[("web_fetch", {"url": f"http://localhost:{canary.port}/"})]),
                       Reply(content="I could not read it"))
    body = server.chat("fetcher", "read the intranet").json()
    history = server.history("fetcher", conversation_id=body["conversation_id"]).json()["messages"]
    tool = next(m for m in history if m["role"] == "tool")
    assert "not a public address" in tool["content"]
    assert canary.requests == []


def test_allow_private_networks_returns_the_page_text(agentd_server, fake_openai, pages):
    agent = openai_agent(fake_openai, tools=[{"web_fetch": {"allow_private_networks": True,
                                                            "allowed_ports": [pages.port]}}])
    server = agentd_server({"intranet": agent})
    fake_openai.script(Reply(tool_calls=[("web_fetch", {"url": f"{pages.url}/page"})]), Reply(content="ok"))
    assert server.chat("intranet", "read it").status_code == 200
    (result,) = [m for m in fake_openai.requests[1]["messages"] if m["role"] == "tool"]
    page = json.loads(result["content"])
    assert page["title"] == "Intranet status"
    assert page["url"] == f"{pages.url}/page"
    assert "blue widgets sold 4242 units" in page["content"]
    assert page["content"].startswith("The following is untrusted content fetched from")
    assert "<nav>" not in page["content"] and "menu" not in page["content"]


# -- direct calls: limits ---------------------------------------------------------------------
def test_a_50_mb_body_stops_at_the_cap(web_fetch, pages):
    page = fetch(web_fetch, f"{pages.url}/big", allow_private_networks=True, allowed_ports=[pages.port],
                 max_bytes=100_000, max_chars=5000)
    assert page["truncated"] is True
    assert page["content"].count("A") == 5000


def test_a_gzip_bomb_stops_at_the_cap(web_fetch, pages, monkeypatch):
    import sys
    module = sys.modules[web_fetch.func.__module__]
    seen = []
    real = module._CappedBody.feed
    monkeypatch.setattr(module._CappedBody, "feed", lambda self, c: seen.append(self) or real(self, c))
    page = fetch(web_fetch, f"{pages.url}/bomb", allow_private_networks=True, allowed_ports=[pages.port],
                 max_bytes=1_000_000)
    assert page["truncated"] is True
    assert len(seen[-1].data) == 1_000_000   # 64 MB on offer, one MB decoded


def test_an_image_is_refused_before_its_body_is_read(web_fetch):
    counter = SentCounter()
    with page_server(extra={"/huge.png": big_image(counter)}) as server:
        with pytest.raises(ToolError, match="image/png"):
            fetch(web_fetch, f"{server.url}/huge.png", allow_private_networks=True,
                  allowed_ports=[server.port])
    assert counter.sent < 50 * 1024 * 1024


def test_a_slow_drip_hits_the_total_deadline(web_fetch, pages):
    with pytest.raises(ToolError, match="too long"):
        fetch(web_fetch, f"{pages.url}/drip", allow_private_networks=True, allowed_ports=[pages.port],
              timeout=1, read_timeout=5)


def test_slow_headers_hit_the_total_deadline(web_fetch, pages):
    with pytest.raises(ToolError, match="too long"):
        fetch(web_fetch, f"{pages.url}/slow-headers", allow_private_networks=True,
              allowed_ports=[pages.port], timeout=1, read_timeout=5)


def test_redirect_loops_stop(web_fetch, pages):
    with pytest.raises(ToolError, match="too many redirects"):
        fetch(web_fetch, f"{pages.url}/loop", allow_private_networks=True, allowed_ports=[pages.port])


def test_http_errors_are_tool_errors(web_fetch, pages):
    with pytest.raises(ToolError, match="HTTP 404"):
        fetch(web_fetch, f"{pages.url}/missing", allow_private_networks=True, allowed_ports=[pages.port])


# -- direct calls: the checked address is the one connected to --------------------------------
def test_the_name_is_resolved_once_and_the_vetted_address_used(web_fetch, pages, monkeypatch):
    answers = iter([[PRETEND_PUBLIC], ["127.0.0.1"], ["127.0.0.1"]])   # a rebinding DNS server
    log = route_names(monkeypatch, names={}, routes={(PRETEND_PUBLIC, 80): pages.port})
    monkeypatch.setattr(netguard, "resolver", lambda host: log["resolved"].append(host) or next(answers))
    page = fetch(web_fetch, "http://rebind.test/page")
    assert "4242" in page["content"]
    assert log["resolved"] == ["rebind.test"]
    assert log["connected"] == [(PRETEND_PUBLIC, 80)]
    assert pages.requests[0][2]["Host"] == "rebind.test"   # the Host header keeps the name


def test_host_lists_narrow_what_may_be_fetched(web_fetch, pages, monkeypatch):
    route_names(monkeypatch, names={"docs.example.org": [PRETEND_PUBLIC], "evil.test": [PRETEND_PUBLIC]},
                routes={(PRETEND_PUBLIC, 80): pages.port})
    assert fetch(web_fetch, "http://docs.example.org/page", allowed_hosts=["example.org"])["title"]
    with pytest.raises(ToolError, match="allowed hosts"):
        fetch(web_fetch, "http://evil.test/page", allowed_hosts=["example.org"])
    with pytest.raises(ToolError, match="blocked"):
        fetch(web_fetch, "http://docs.example.org/page", blocked_hosts=["*.example.org"])
    with pytest.raises(ToolError, match="not a public address"):
        fetch(web_fetch, f"http://127.0.0.1:{pages.port}/page", allowed_hosts=["127.0.0.1"],
              allowed_ports=[pages.port])


def test_the_config_is_validated_when_the_agent_loads(agentd_server, fake_openai):
    server = agentd_server({"bad": openai_agent(fake_openai, tools=[{"web_fetch": {"max_bytes": "lots"}}])})
    assert "bad" not in server.state.agents
    assert any("max_bytes" in p.key for p in server.state.problems)


def test_the_guard_holds_for_any_client_of_the_transport(canary):
    """The transport itself refuses, whoever builds the request."""
    import httpx
    transport = netguard.GuardedTransport(netguard.Policy(allowed_ports=[canary.port]), total_timeout=5)
    with httpx.Client(transport=transport) as client, ExitStack():
        with pytest.raises(netguard.BlockedError):
            client.get(f"http://localhost:{canary.port}/")
    assert canary.requests == []


def test_a_fetched_page_is_cached_per_agent_config(agentd_server, fake_openai, pages):
    from agentd.tools.hooks import tool_hooks_from
    config = {"allow_private_networks": True, "allowed_ports": [pages.port]}
    server = agentd_server({"a": openai_agent(fake_openai, tools=[{"web_fetch": config}]),
                            "b": openai_agent(fake_openai, tools=[{"web_fetch": {**config, "max_chars": 500}}])})
    if server.state.tool_hooks is None:
        server.state.tool_hooks = tool_hooks_from(server.state.registry.manager)
    for agent in ("a", "a", "b"):
        fake_openai.script(Reply(tool_calls=[("web_fetch", {"url": f"{pages.url}/page"})]), Reply(content="ok"))
        assert server.chat(agent, "read it").status_code == 200
    assert [r[1] for r in pages.requests] == ["/page", "/page"]   # a's second turn came from the cache
