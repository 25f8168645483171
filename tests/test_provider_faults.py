"""Every provider fails the same way, through the chat API, against fake vendor servers.

Each test runs for the OpenAI-compatible, Anthropic and Gemini adapters. Faults
before the first delta may be retried and fall back; after it they end the turn
with an `error` event and the partial text is kept.
"""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

import pytest

from tests.conftest import Reply as OpenAIReply
from tests.conftest import openai_agent, sse_events
from tests.fakes.anthropic_server import Reply as AnthropicReply
from tests.fakes.anthropic_server import anthropic_agent
from tests.fakes.gemini_server import Reply as GeminiReply
from tests.fakes.gemini_server import gemini_agent

STALL_TIMEOUTS = {"first_byte": 2.0, "idle": 2.0}  # short, yet longer than a busy CI machine's pauses
CALL = [("calculator", {"expression": "1+1"})]


@dataclass
class Vendor:
    name: str          # the provider name in agent YAML
    fixture: str       # the fake server's fixture
    reply: type
    agent: object      # agent YAML builder
    delta_fault_at: dict  # Reply keywords placing a fault right after the first delta

    def fake(self, request):
        return request.getfixturevalue(self.fixture)


VENDORS = {
    "openai": Vendor("openai", "fake_openai", OpenAIReply, openai_agent, {}),  # its faults come at chunk 2
    "anthropic": Vendor("anthropic", "fake_anthropic", AnthropicReply, anthropic_agent, {"fault_at": 4}),
    "google": Vendor("google", "fake_gemini", GeminiReply, gemini_agent, {"fault_at": 1}),
}
NEXT = {"openai": "anthropic", "anthropic": "google", "google": "openai"}


@pytest.fixture(params=list(VENDORS))
def vendor(request):
    return VENDORS[request.param]


@pytest.fixture(params=[False, True], ids=["json", "sse"])
def stream(request):
    return request.param


def fallback_block(request, name: str) -> dict:
    """A model block for the fake of another vendor, with its answer scripted."""
    other = VENDORS[name]
    fake = other.fake(request)
    fake.script(other.reply(content=f"{name} saved the day"))
    model = {"openai": "fake-model", "anthropic": "claude-fake", "google": "gemini-fake"}[name]
    url = fake.url
    return {"provider": name, "name": model, "base_url": url, "retries": 0}


def chat(server, stream: bool, message: str = "Hi"):
    """(status, final body or error, streamed events)."""
    response = server.chat("bot", message, stream=stream)
    if not stream:
        return response.status_code, response.json(), []
    assert response.status_code == 200, response.text
    events = sse_events(response)
    last = events[-1]
    body = last["message"] if last["type"] == "done" else {"error": last["error"]}
    return (200 if last["type"] == "done" else None), body, events


def error_code(status, body, stream: bool) -> str:
    assert "error" in body, body
    if not stream:
        assert status == {"MODEL_ERROR": 502, "PROVIDER_UNAVAILABLE": 503}[body["error"]["code"]]
    return body["error"]["code"]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- retries ---------------------------------------------------------------------------

def test_rate_limited_then_success(agentd_server, request, vendor, stream):
    fake = vendor.fake(request)
    server = agentd_server({"bot": vendor.agent(fake, model={"retries": 1})})
    sleeps = []
    server.state.router.policy.sleep = sleeps.append
    fake.script(vendor.reply(status=429, headers={"Retry-After": "7"}), vendor.reply(content="Finally"))
    status, body, _ = chat(server, stream)
    assert (status, body["content"]) == (200, "Finally")
    assert fake.calls == 2 and sleeps == [7.0]  # waited as told, not a backoff of its own


def test_retry_after_is_capped(agentd_server, fake_anthropic):
    server = agentd_server({"bot": anthropic_agent(fake_anthropic, model={"retries": 1})})
    sleeps = []
    server.state.router.policy.sleep = sleeps.append
    fake_anthropic.script(AnthropicReply(status=529, headers={"Retry-After": "3600"}))
    assert chat(server, False)[1]["content"] == "echo: Hi"
    assert sleeps == [server.state.router.policy.retry_after_cap]


def test_client_errors_are_not_retried(agentd_server, request, vendor):
    fake = vendor.fake(request)
    server = agentd_server({"bot": vendor.agent(fake, model={"retries": 3})})
    fake.script(vendor.reply(status=400))
    status, body, _ = chat(server, False)
    assert error_code(status, body, False) == "MODEL_ERROR" and fake.calls == 1


# -- fallbacks ---------------------------------------------------------------------------

def test_repeated_500_falls_back_to_the_next_model(agentd_server, request, vendor, stream):
    fake = vendor.fake(request)
    backup = fallback_block(request, NEXT[vendor.name])
    server = agentd_server({"bot": vendor.agent(fake, model={"retries": 2, "fallbacks": [backup]})})
    fake.script(*[vendor.reply(status=500)] * 3)
    status, body, events = chat(server, stream)
    assert status == 200, body
    assert body["content"] == f"{NEXT[vendor.name]} saved the day"
    assert body["provider"] == NEXT[vendor.name] and fake.calls == 3
    if stream:
        assert not [e for e in events if e["type"] == "error"]


@pytest.mark.parametrize("fault", ["truncate", "malformed", "error_event"])
def test_stream_fault_before_the_first_delta_falls_back(agentd_server, request, vendor, fault):
    fake = vendor.fake(request)
    backup = fallback_block(request, NEXT[vendor.name])
    server = agentd_server({"bot": vendor.agent(fake, model={"fallbacks": [backup]})})
    fake.script(vendor.reply(tool_calls=CALL, fault=fault))  # fails while the call streams
    status, body, events = chat(server, True)
    assert body["content"] == f"{NEXT[vendor.name]} saved the day"
    assert not [e for e in events if e["type"] in ("error", "tool_call")]


# -- connection refused and garbage ------------------------------------------------------------

def test_connection_refused_is_provider_unavailable(agentd_server, request, vendor, stream):
    fake = vendor.fake(request)
    agent = vendor.agent(fake, model={"base_url": closed_port_url()})
    if vendor.name == "openai":
        agent = vendor.agent(fake, model={"base_url": closed_port_url() + "/v1"})
    server = agentd_server({"bot": agent})
    status, body, _ = chat(server, stream)
    assert error_code(status, body, stream) == "PROVIDER_UNAVAILABLE"


def test_garbage_answer_is_model_error(agentd_server, request, vendor):
    fake = vendor.fake(request)
    server = agentd_server({"bot": vendor.agent(fake)})
    fake.script(vendor.reply(fault="garbage"))
    status, body, _ = chat(server, False)
    assert error_code(status, body, False) == "MODEL_ERROR"


# -- faults inside a stream ----------------------------------------------------------------

@pytest.mark.parametrize("fault,code", [("truncate", "MODEL_ERROR"), ("malformed", "MODEL_ERROR"),
                                        ("error_event", "MODEL_ERROR"),
                                        ("stall", "PROVIDER_UNAVAILABLE")])
def test_stream_fault_ends_with_an_error_event(agentd_server, request, vendor, fault, code):
    fake = vendor.fake(request)
    server = agentd_server({"bot": vendor.agent(fake, model={"timeouts": STALL_TIMEOUTS})})
    fake.script(vendor.reply(tool_calls=CALL, fault=fault))
    status, body, events = chat(server, True)
    assert events[0]["type"] == "start" and events[-1]["type"] == "error"
    assert error_code(status, body, True) == code


@pytest.mark.parametrize("fault,code", [("truncate", "MODEL_ERROR"), ("malformed", "MODEL_ERROR"),
                                        ("error_event", "MODEL_ERROR"),
                                        ("stall", "PROVIDER_UNAVAILABLE")])
def test_fault_after_the_first_delta_is_final_and_keeps_the_text(agentd_server, request, vendor,
                                                                 fault, code):
    fake = vendor.fake(request)
    backup = fallback_block(request, NEXT[vendor.name])
    model = {"retries": 2, "timeouts": STALL_TIMEOUTS, "fallbacks": [backup]}
    server = agentd_server({"bot": vendor.agent(fake, model=model)})
    fake.script(vendor.reply(content="Hello world", fault=fault, **vendor.delta_fault_at))
    status, body, events = chat(server, True)
    assert [e["content"] for e in events if e["type"] == "delta"] == ["Hello "]
    assert error_code(status, body, True) == code
    assert fake.calls == 1 and VENDORS[NEXT[vendor.name]].fake(request).calls == 0
    history = server.history("bot").json()["messages"]
    assert [(m["role"], m["content"]) for m in history] == [("user", "Hi"), ("assistant", "Hello ")]
    assert history[1]["status"] == "error"


@pytest.mark.parametrize("name", ["anthropic", "google"])  # the OpenAI fake only stalls streams
def test_stall_before_the_answer_is_a_first_byte_timeout(agentd_server, request, name):
    vendor = VENDORS[name]
    fake = vendor.fake(request)
    server = agentd_server({"bot": vendor.agent(fake, model={"timeouts": STALL_TIMEOUTS})})
    fake.script(vendor.reply(content="never", fault="stall"))
    status, body, _ = chat(server, False)
    assert error_code(status, body, False) == "PROVIDER_UNAVAILABLE"
    assert "first_byte timeout" in body["error"]["message"]


def test_stream_stall_names_the_idle_timeout(agentd_server, fake_anthropic):
    server = agentd_server({"bot": anthropic_agent(fake_anthropic, model={"timeouts": STALL_TIMEOUTS})})
    fake_anthropic.script(AnthropicReply(content="Hello world", fault="stall", fault_at=4))
    _, body, _ = chat(server, True)
    assert "idle timeout" in body["error"]["message"]


def test_a_slow_stream_meets_the_total_timeout(agentd_server, fake_gemini):
    timeouts = {"idle": 5, "total": 0.5}
    server = agentd_server({"bot": gemini_agent(fake_gemini, model={"timeouts": timeouts})})
    fake_gemini.script(GeminiReply(content="one two three four five six seven", chunk_delay=0.2))
    _, body, events = chat(server, True)
    assert any(e["type"] == "delta" for e in events)  # alive all along, just too slow
    assert body["error"]["code"] == "PROVIDER_UNAVAILABLE"
    assert "total timeout" in body["error"]["message"]


@pytest.mark.parametrize("name", list(VENDORS))
def test_client_going_away_closes_the_upstream_stream(agentd_server, request, name):
    vendor = VENDORS[name]
    fake = vendor.fake(request)
    # `on_disconnect: stop`: by default the run would go on without its client (tests/test_runs.py).
    server = agentd_server({"bot": vendor.agent(fake, runs={"on_disconnect": "stop"})})
    fake.script(vendor.reply(content=" ".join(["word"] * 200), chunk_delay=0.02))
    body = {"message": "Talk", "stream": True}
    with server.client.stream("POST", "/api/agents/bot/chat", json=body) as response:
        for line in response.iter_lines():
            if '"delta"' in line:
                break
    for _ in range(500):  # the fake notices at its next write; wait for it, not for a time
        if fake.streams_closed_early:
            break
        threading.Event().wait(0.02)
    assert fake.streams_closed_early == 1 and fake.streams_finished == 0


@pytest.mark.parametrize("name", ["anthropic", "google"])  # their overload errors are retryable
def test_overload_error_event_before_the_first_delta_is_retried(agentd_server, request, name):
    vendor = VENDORS[name]
    fake = vendor.fake(request)
    server = agentd_server({"bot": vendor.agent(fake, model={"retries": 1})})
    fake.script(vendor.reply(tool_calls=CALL, fault="error_event"), vendor.reply(content="Recovered"))
    _, body, events = chat(server, True)
    assert body["content"] == "Recovered" and fake.calls == 2
    assert not [e for e in events if e["type"] == "error"]
