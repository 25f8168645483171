"""Limits against abuse, over real HTTP: per-address widget limits, the agent's token ceiling,
tool calls per step, widget tools, caller-bound query parameters, `urls: seen`, bounded metrics."""
from __future__ import annotations

import json
import sqlite3
import textwrap

import httpx
import pytest

from agentd.auth import create_key
from tests.conftest import Reply, openai_agent, sse_events
from tests.fakes.server import LoopbackServer

ORIGIN = "https://shop.example"

PROBE_PLUGIN = textwrap.dedent('''
    """Test tools that count their calls."""
    import threading
    from agentd import hookimpl

    CALLS = []
    LOCK = threading.Lock()

    def probe(n: int) -> str:
        """Record a call."""
        with LOCK:
            CALLS.append(n)
        return f"probe {n} ran"

    def other(n: int) -> str:
        """Another tool, not for widget visitors."""
        with LOCK:
            CALLS.append(("other", n))
        return "other ran"

    @hookimpl
    def register_tools(register):
        register(probe)
        register(other)
''')


def _plugins(tmp_path) -> str:
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / "probe_tools.py").write_text(PROBE_PLUGIN)
    return str(folder)


def _probe_calls(server) -> list:
    return server.state.registry.tools["probe"].func.__globals__["CALLS"]


def _widget_agent(fake, **widget) -> str:
    tools = widget.pop("agent_tools", None)
    extra = {"widget": {"enabled": True, "allowed_origins": [ORIGIN], **widget}}
    if tools:
        extra["tools"] = tools
    return openai_agent(fake, **extra)


def _session(client: httpx.Client, agent: str = "bot", **body) -> httpx.Response:
    return client.post("/api/widget/session", json={"agent_id": agent, **body}, headers={"Origin": ORIGIN})


def _widget_chat(client: httpx.Client, token: str, message: str, agent: str = "bot", **body):
    return client.post(f"/api/agents/{agent}/chat", json={"message": message, **body},
                       headers={"Origin": ORIGIN, "Authorization": f"Widget {token}"})


def _limited(response, code="RATE_LIMITED") -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == code
    assert int(response.headers["Retry-After"]) >= 1


def _tool_messages(request: dict) -> list[dict]:
    return [m for m in request["messages"] if m["role"] == "tool"]


# ------------------------------------------------------------------ per client address

def test_fresh_widget_sessions_from_one_address_are_refused_past_the_limit(agentd_server, fake_openai):
    server = agentd_server({"bot": _widget_agent(fake_openai)})  # default: 10 sessions a minute
    answers = [_session(server.client, visitor_id=f"visitor_{i:04d}") for i in range(30)]
    assert [r.status_code for r in answers[:10]] == [200] * 10
    for refused in answers[10:]:
        _limited(refused)
    assert "sessions" in answers[-1].json()["error"]["message"]
    other = httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    try:
        assert _session(other).status_code == 200  # another address has its own count
    finally:
        other.close()


def test_new_visitor_ids_do_not_reset_the_per_address_turn_limit(agentd_server, fake_openai):
    server = agentd_server({"bot": _widget_agent(fake_openai, rate_limit="5/minute",
                                                 rate_limit_per_ip="3/minute")})
    tokens = [_session(server.client, visitor_id=f"visitor_{i:04d}").json()["token"] for i in range(4)]
    assert [_widget_chat(server.client, t, "hi").status_code for t in tokens[:3]] == [200] * 3
    _limited(_widget_chat(server.client, tokens[3], "hi"))
    assert fake_openai.calls == 3
    # API keys are not widget visitors: the per-address widget limit does not apply to them.
    assert server.chat("bot", "hi").status_code == 200


# ------------------------------------------------------------------ the agent's ceiling

def test_the_agents_daily_ceiling_stops_every_user(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, quota={"agent_tokens_per_day": 20,
                                                                    "tokens_per_day": 1000})})
    with server.state.db.connection_context():
        keys = {user: {"Authorization": f"Bearer {create_key(user)[1]}"} for user in ("ann", "bob", "cy")}

    def chat(user):
        return server.client.post("/api/agents/bot/chat", json={"message": "hi"}, headers=keys[user])

    assert chat("ann").status_code == 200   # 15 tokens
    assert chat("bob").status_code == 200   # 30: past the ceiling of 20
    for user in ("cy", "ann", "bob"):        # cy never spoke, and is refused all the same
        refused = chat(user)
        _limited(refused, "QUOTA_EXCEEDED")
        assert "ceiling" in refused.json()["error"]["message"]
    assert fake_openai.calls == 2
    # The next day the ceiling is lifted.
    import datetime as dt
    server.state.clock = lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    assert chat("cy").status_code == 200


# ------------------------------------------------------------------ tool calls per step

def test_nine_parallel_calls_run_eight_and_the_ninth_gets_an_error(agentd_server, fake_openai, tmp_path):
    server = agentd_server({"bot": openai_agent(fake_openai, tools=["probe"])}, plugins_dir=_plugins(tmp_path))
    fake_openai.script(Reply(tool_calls=[("probe", {"n": i}) for i in range(9)]), Reply(content="done"))
    response = server.chat("bot", "probe nine times")
    assert response.status_code == 200, response.text
    assert response.json()["content"] == "done"  # the turn went on
    assert sorted(_probe_calls(server)) == list(range(8))
    results = _tool_messages(fake_openai.requests[1])
    assert [r["content"] for r in results[:8]] == [f"probe {i} ran" for i in range(8)]
    assert results[8]["content"] == "Error: too many tool calls in one step"


def test_max_parallel_tool_calls_is_per_agent(agentd_server, fake_openai, tmp_path):
    server = agentd_server({"bot": openai_agent(fake_openai, tools=["probe"], max_parallel_tool_calls=2)},
                           plugins_dir=_plugins(tmp_path))
    fake_openai.script(Reply(tool_calls=[("probe", {"n": i}) for i in range(3)]), Reply(content="done"))
    assert server.chat("bot", "probe").status_code == 200
    assert sorted(_probe_calls(server)) == [0, 1]


# ------------------------------------------------------------------ widget.tools

def test_a_visitors_turn_cannot_use_a_tool_outside_widget_tools(agentd_server, fake_openai, tmp_path):
    agent = _widget_agent(fake_openai, agent_tools=["probe", "other"], tools=["probe"])
    server = agentd_server({"bot": agent}, plugins_dir=_plugins(tmp_path))
    token = _session(server.client).json()["token"]
    fake_openai.script(Reply(tool_calls=[("other", {"n": 1}), ("probe", {"n": 2})]), Reply(content="ok"))
    assert _widget_chat(server.client, token, "use both").status_code == 200
    offered = [t["function"]["name"] for t in fake_openai.requests[0]["tools"]]
    assert offered == ["probe"]                      # the model is not offered it
    results = _tool_messages(fake_openai.requests[1])
    assert results[0]["content"] == "Error: unknown tool 'other'"   # a made-up call is refused
    assert results[1]["content"] == "probe 2 ran"
    assert _probe_calls(server) == [2]
    # An API key's turn on the same agent has every tool.
    fake_openai.script(Reply(content="ok"))
    assert server.chat("bot", "hi").status_code == 200
    assert [t["function"]["name"] for t in fake_openai.requests[2]["tools"]] == ["probe", "other"]


def test_widget_tools_naming_a_tool_the_agent_lacks_is_refused_at_load(agentd_server, fake_openai, tmp_path):
    server = agentd_server({"bot": _widget_agent(fake_openai, agent_tools=["probe"], tools=["probe", "prbe"])},
                           plugins_dir=_plugins(tmp_path))
    assert "bot" not in server.state.agents
    assert any("widget.tools" in p.key and "prbe" in p.message for p in server.state.problems)


# ------------------------------------------------------------------ caller-bound parameters

@pytest.fixture
def orders_db(tmp_path) -> str:
    path = tmp_path / "orders.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, owner TEXT, status TEXT)")
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?)",
                     [(1, "ann", "shipped"), (2, "bob", "lost"), (3, "ann", "pending")])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def _orders_agent(fake, database: str) -> str:
    return openai_agent(fake, tools=[{"db_lookup": {"database": database, "queries": {"my_order": {
        "description": "One of the caller's orders",
        "sql": "SELECT id, status FROM orders WHERE id = :order_id AND owner = :customer_id",
        "parameters": {"order_id": {"type": "integer"}},
        "params": {"customer_id": "{{ user.id }}"}}}}}])


def test_a_bound_parameter_comes_from_the_caller_and_the_model_cannot_override_it(
        agentd_server, fake_openai, orders_db):
    server = agentd_server({"shop": _orders_agent(fake_openai, orders_db)})
    with server.state.db.connection_context():
        ann = {"Authorization": f"Bearer {create_key('ann')[1]}"}
    fake_openai.script(Reply(tool_calls=[("my_order", {"order_id": 1}),
                                         ("my_order", {"order_id": 2}),
                                         ("my_order", {"order_id": 2, "customer_id": "bob"})]),
                       Reply(content="done"))
    response = server.client.post("/api/agents/shop/chat", json={"message": "my orders"}, headers=ann)
    assert response.status_code == 200, response.text
    schema = fake_openai.requests[0]["tools"][0]["function"]["parameters"]
    assert list(schema["properties"]) == ["order_id"]    # not offered to the model
    own, others, forced = (r["content"] for r in _tool_messages(fake_openai.requests[1]))
    assert '"id": 1' in own and "shipped" in own
    assert '"rows": []' in others                        # bob's order, asked for by ann: nothing
    assert forced.startswith("Error: invalid arguments") and "customer_id" in forced
    assert "lost" not in json.dumps(fake_openai.requests[1])


def test_a_bound_parameter_with_no_value_for_the_caller_refuses_the_query(agentd_server, fake_openai, orders_db):
    agent = openai_agent(fake_openai, tools=[{"db_lookup": {"database": orders_db, "queries": {"mine": {
        "sql": "SELECT id FROM orders WHERE owner = :customer_id",
        "params": {"customer_id": "{{ context.customer }}"}}}}}])
    server = agentd_server({"shop": agent})
    fake_openai.script(Reply(tool_calls=[("mine", {})]), Reply(content="done"),
                       Reply(tool_calls=[("mine", {})]), Reply(content="done"))
    assert server.chat("shop", "mine?").status_code == 200
    assert _tool_messages(fake_openai.requests[1])[0]["content"] == (
        "Error: parameter customer_id comes from the caller, and this caller has none")
    assert server.chat("shop", "mine?", context={"customer": "bob"}).status_code == 200
    assert '"id": 2' in _tool_messages(fake_openai.requests[3])[0]["content"]


# ------------------------------------------------------------------ web_fetch urls: seen

class _Pages:
    """A tiny web server on loopback counting the pages it serves."""

    def __init__(self):
        self.hits: list[str] = []
        self.server = LoopbackServer(self.wsgi).start()
        self.url = self.server.url

    def wsgi(self, environ, start_response):
        self.hits.append(environ["PATH_INFO"])
        body = f"<html><head><title>Page</title></head><body><p>Text of {environ['PATH_INFO']}.</p>" \
               f"<p>More at {self.url}/linked today.</p></body></html>"
        start_response("200 OK", [("Content-Type", "text/html")])
        return [body.encode()]


@pytest.fixture
def pages():
    site = _Pages()
    yield site
    site.server.stop()


def _fetch_agent(fake, pages) -> str:
    return openai_agent(fake, tools=[{"web_fetch": {"allow_private_networks": True, "urls": "seen",
                                                    "allowed_ports": [pages.server.port]}}])


def test_urls_seen_fetches_only_urls_the_conversation_contained(agentd_server, fake_openai, pages):
    server = agentd_server({"bot": _fetch_agent(fake_openai, pages)})
    named, unnamed = f"{pages.url}/named", f"{pages.url}/never-mentioned"
    fake_openai.script(Reply(tool_calls=[("web_fetch", {"url": named}), ("web_fetch", {"url": unnamed})]),
                       Reply(tool_calls=[("web_fetch", {"url": f"{pages.url}/linked"})]),
                       Reply(content="done"))
    response = server.chat("bot", f"Please read {named}.")
    assert response.status_code == 200, response.text
    fetched, refused = _tool_messages(fake_openai.requests[1])
    assert "Text of /named" in fetched["content"]
    assert refused["content"].startswith("Error: refused: this agent fetches only URLs that appeared")
    # A link in an earlier tool result of the conversation counts as seen.
    assert "Text of /linked" in _tool_messages(fake_openai.requests[2])[-1]["content"]
    assert pages.hits == ["/named", "/linked"]


def test_a_cached_page_does_not_leak_into_a_conversation_that_never_named_it(agentd_server, fake_openai, pages):
    server = agentd_server({"bot": _fetch_agent(fake_openai, pages)})
    secret = f"{pages.url}/private-report"
    fake_openai.script(Reply(tool_calls=[("web_fetch", {"url": secret})]), Reply(content="read it"),
                       Reply(tool_calls=[("web_fetch", {"url": secret})]), Reply(content="nothing"))
    assert server.chat("bot", f"Summarise {secret}").status_code == 200
    assert "Text of /private-report" in _tool_messages(fake_openai.requests[1])[0]["content"]
    # Another conversation (another user even) asks for the cached page without naming it.
    assert server.chat("bot", "what was in that report?").status_code == 200
    leaked = _tool_messages(fake_openai.requests[3])[0]["content"]
    assert leaked.startswith("Error: refused") and "private-report" not in leaked
    assert pages.hits == ["/private-report"]


# ------------------------------------------------------------------ metrics and stored names

def _tool_series(server) -> list[str]:
    text = server.client.get("/metrics").text
    return [line for line in text.splitlines() if line.startswith("agentd_tool_calls_total{")]


def test_made_up_tool_names_add_no_metric_series_and_long_names_are_stored(agentd_server, fake_openai, tmp_path):
    server = agentd_server({"bot": openai_agent(fake_openai, tools=["probe"], max_parallel_tool_calls=64)},
                           plugins_dir=_plugins(tmp_path))
    fake_openai.script(Reply(tool_calls=[("probe", {"n": 1})]), Reply(content="ok"))
    assert server.chat("bot", "warm up").status_code == 200
    before = _tool_series(server)
    made_up = [f"tool_{i}_" + "x" * 290 for i in range(300)]   # 300 names of 296+ characters
    fake_openai.script(Reply(tool_calls=[(name, {}) for name in made_up]), Reply(content="none of those exist"))
    response = server.chat("bot", "make things up", stream=True)
    assert response.status_code == 200
    assert sse_events(response)[-1]["type"] == "done"   # the inserts of the long names did not fail
    after = _tool_series(server)
    assert all('tool="tool_' not in line for line in after)
    labels = {line.split("}")[0] for line in after}
    assert labels <= {line.split("}")[0] for line in before} | {'agentd_tool_calls_total{outcome="error",tool="unknown"'}
    assert len(after) <= len(before) + 1
    unknown = next(line for line in after if 'tool="unknown"' in line)
    assert float(unknown.rsplit(" ", 1)[1]) == 300.0
    from agentd.store.models import Message
    with server.state.db.connection_context():
        names = [m.name for m in Message.select(Message.name).where(Message.role == "tool", Message.is_error)]
    assert len(names) == 300 and all(len(name) == 255 for name in names)


def test_made_up_http_methods_add_no_metric_series(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    for i in range(30):
        assert server.client.request(f"BREW{i}", "/api/agents").status_code == 405
    lines = [line for line in server.client.get("/metrics").text.splitlines()
             if line.startswith("agentd_http_requests_total{")]
    assert not [line for line in lines if "BREW" in line]
    assert len([line for line in lines if 'method="other"' in line]) == 1
