"""/metrics: Prometheus text with requests, turns, tool calls, provider timings, errors, streams."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agentd.auth import create_key
from tests.conftest import Reply, openai_agent, sse_events
from tests.test_multiprocess import spawn  # noqa: F401  (fixture)


def samples(text: str) -> dict:
    """{(sample name, frozenset(labels)): value}"""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float:
    return sum(v for (n, l), v in found.items() if n == name and set(labels.items()) <= set(l))


def test_metrics_count_requests_turns_tools_errors_and_timings(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, tools=["calculator"])})
    fake_openai.script(Reply(tool_calls=[("calculator", {"expression": "6*7"})]), Reply(content="42"),
                       Reply(content="streamed answer"),
                       Reply(tool_calls=[("calculator", {"expression": "1/0"})]), Reply(content="oops"))
    assert server.chat("bot", "what is 6*7?").json()["content"] == "42"
    assert sse_events(server.chat("bot", "stream it", stream=True))[-1]["type"] == "done"
    server.chat("bot", "divide by zero")
    assert server.client.get("/api/agents/nobody").status_code == 404
    assert server.chat("bot", "").status_code == 400

    response = server.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    found = samples(response.text)
    assert value(found, "agentd_http_requests_total", route="/api/agents/<agent_id>/chat",
                 method="POST", status="200") == 3
    assert value(found, "agentd_http_requests_total", route="/api/agents/<agent_id>", status="404") == 1
    assert value(found, "agentd_turns_total", agent="bot", outcome="complete") == 3
    assert value(found, "agentd_tool_calls_total", tool="calculator", outcome="ok") == 1
    assert value(found, "agentd_tool_calls_total", tool="calculator") == 2
    assert value(found, "agentd_errors_total", code="AGENT_NOT_FOUND") == 1
    assert value(found, "agentd_errors_total", code="INVALID_REQUEST") == 1
    assert value(found, "agentd_provider_latency_seconds_count", provider="openai") == 5
    assert value(found, "agentd_provider_time_to_first_token_seconds_count", provider="openai") >= 1
    assert value(found, "agentd_tokens_total", agent="bot", kind="prompt") > 0
    assert value(found, "agentd_active_streams") == 0


def test_a_failed_stream_counts_its_error_code_and_outcome(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    fake_openai.script(Reply(status=500))
    events = sse_events(server.chat("bot", "hi", stream=True))
    assert events[-1]["type"] == "error"
    code = events[-1]["error"]["code"]
    found = samples(server.client.get("/metrics").text)
    assert value(found, "agentd_errors_total", code=code) == 1
    assert value(found, "agentd_turns_total", agent="bot", outcome="error") == 1


def test_metrics_is_open_when_keys_exist(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    with server.state.db.connection_context():
        create_key("alice")
    assert server.client.get("/api/agents").status_code == 401
    response = server.client.get("/metrics")
    assert response.status_code == 200 and "agentd_http_requests_total" in response.text


def test_metrics_rejects_other_methods_in_the_error_shape(agentd_server):
    server = agentd_server({})
    response = server.client.post("/metrics")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_metrics_add_up_across_worker_processes(spawn, fake_openai, tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR (as under gunicorn), any worker's /metrics counts every worker."""
    folder = tmp_path / "prom"
    folder.mkdir()
    a, b = spawn({"bot": openai_agent(fake_openai)}, PROMETHEUS_MULTIPROC_DIR=str(folder))
    for _ in range(3):
        assert a.client.get("/api/agents").status_code == 200
    for _ in range(2):
        assert b.client.get("/api/agents").status_code == 200
    found = samples(a.client.get("/metrics").text)
    assert value(found, "agentd_http_requests_total", route="/api/agents", status="200") == 5
    assert ("agentd_active_streams", frozenset()) in found  # summed over live processes
