"""OpenTelemetry spans of a run, received by a real OTLP/HTTP receiver on 127.0.0.1.

The receiver decodes each ExportTraceServiceRequest with opentelemetry-proto,
so the test sees exactly what a collector would.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from werkzeug.wrappers import Request, Response

from tests.admin_support import start_operator_server
from tests.conftest import Reply
from tests.fakes.server import LoopbackServer
from tests.support import REPO, wait_for


class OtlpReceiver:
    """POST /v1/traces → spans, flattened to dicts with their attributes."""

    def __init__(self):
        self.spans: list[dict] = []
        self.resources: list[dict] = []
        self.lock = threading.Lock()
        self.server = LoopbackServer(self.wsgi).start()
        self.url = self.server.url

    def wsgi(self, environ, start_response):
        request = Request(environ)
        if request.path != "/v1/traces" or request.method != "POST":
            return Response("not found", 404)(environ, start_response)
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(request.get_data())
        with self.lock:
            for resource_spans in message.resource_spans:
                self.resources.append(_attributes(resource_spans.resource.attributes))
                for scope in resource_spans.scope_spans:
                    self.spans += [_span(s) for s in scope.spans]
        return Response(b"", 200, content_type="application/x-protobuf")(environ, start_response)

    def stop(self):
        self.server.stop()


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def _attributes(pairs) -> dict:
    return {pair.key: _value(pair.value) for pair in pairs}


def _span(span) -> dict:
    return {"name": span.name, "id": span.span_id.hex(), "parent": span.parent_span_id.hex() or None,
            "trace": span.trace_id.hex(), "kind": span.kind, "start": span.start_time_unix_nano,
            "end": span.end_time_unix_nano, "status": span.status.code,
            "attributes": _attributes(span.attributes)}


@pytest.fixture
def receiver(monkeypatch):
    otlp = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "agentd-test")
    yield otlp
    otlp.stop()


def run_tool_turn(server, fake):
    fake.script(Reply(tool_calls=[("lookup_order", {"order_id": 9}), ("explode", {"reason": "no disk"})],
                      usage=(90, 15)),
                Reply(content="Order 9 is on its way.", usage=(130, 11)))
    response = server.chat("priced", "Where is order 9?")
    assert response.status_code == 200, response.text
    return response.json()["conversation_id"]


def spans_of_one_run(receiver) -> dict[str, list[dict]]:
    wait_for(lambda: len(receiver.spans) >= 5, what="five spans at the OTLP receiver")
    by_name: dict[str, list[dict]] = {}
    for span in receiver.spans:
        by_name.setdefault(span["name"], []).append(span)
    return by_name


def test_a_run_exports_genai_spans_with_the_right_parents(agentd_server, fake_openai, tmp_path, receiver):
    server = start_operator_server(agentd_server, fake_openai, tmp_path)
    conversation = run_tool_turn(server, fake_openai)
    spans = spans_of_one_run(receiver)
    assert sorted(spans) == ["chat fake-model", "execute_tool explode", "execute_tool lookup_order",
                             "invoke_agent Test agent"]
    [root] = spans["invoke_agent Test agent"]
    chats = sorted(spans["chat fake-model"], key=lambda s: s["start"])
    [lookup], [explode] = spans["execute_tool lookup_order"], spans["execute_tool explode"]
    assert root["parent"] is None
    assert all(s["parent"] == root["id"] and s["trace"] == root["trace"] for s in chats + [lookup, explode])
    assert root["attributes"] == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "priced", "gen_ai.agent.name": "Test agent",
        "gen_ai.provider.name": "openai", "gen_ai.request.model": "fake-model",
        "gen_ai.conversation.id": conversation, "gen_ai.usage.input_tokens": 220,
        "gen_ai.usage.output_tokens": 26}
    first, second = chats
    assert first["attributes"]["gen_ai.operation.name"] == "chat"
    assert first["attributes"]["gen_ai.provider.name"] == "openai"
    assert first["attributes"]["gen_ai.request.model"] == "fake-model"
    assert (first["attributes"]["gen_ai.usage.input_tokens"], first["attributes"]["gen_ai.usage.output_tokens"]) == (90, 15)
    assert (second["attributes"]["gen_ai.usage.input_tokens"], second["attributes"]["gen_ai.usage.output_tokens"]) == (130, 11)
    assert first["attributes"]["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert lookup["attributes"] == {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
                                    "gen_ai.tool.call.id": "call_1", "gen_ai.tool.type": "function"}
    assert explode["attributes"]["gen_ai.tool.call.id"] == "call_2"
    assert explode["attributes"]["error.type"] == "tool_error" and explode["status"] == 2  # STATUS_CODE_ERROR
    # In time: first call, then the tools, then the second call, all inside the run.
    assert root["start"] <= first["start"] <= first["end"] <= lookup["start"] <= lookup["end"] <= second["end"] <= root["end"]
    assert receiver.resources[0]["service.name"] == "agentd-test"
    # No message content without the opt-in.
    assert not any(k.endswith(("messages", "arguments", "result")) for s in receiver.spans for k in s["attributes"])


def test_message_content_only_when_opted_in(agentd_server, fake_openai, tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    server = start_operator_server(agentd_server, fake_openai, tmp_path)
    run_tool_turn(server, fake_openai)
    spans = spans_of_one_run(receiver)
    [root] = spans["invoke_agent Test agent"]
    assert json.loads(root["attributes"]["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Where is order 9?"}]}]
    [lookup] = spans["execute_tool lookup_order"]
    assert json.loads(lookup["attributes"]["gen_ai.tool.call.arguments"]) == {"order_id": 9}
    assert json.loads(lookup["attributes"]["gen_ai.tool.call.result"]) == {"order_id": 9, "status": "shipped"}
    last = max(spans["chat fake-model"], key=lambda s: s["start"])
    output = json.loads(last["attributes"]["gen_ai.output.messages"])
    assert output == [{"role": "assistant", "parts": [{"type": "text", "content": "Order 9 is on its way."}],
                       "finish_reason": "stop"}]


def test_a_failed_run_marks_its_span_as_an_error(agentd_server, fake_openai, tmp_path, receiver):
    server = start_operator_server(agentd_server, fake_openai, tmp_path)
    fake_openai.script(Reply(status=500), Reply(status=500), Reply(status=500))
    assert server.chat("unknown", "hello").status_code in (502, 503)
    wait_for(lambda: any(s["name"].startswith("invoke_agent") for s in receiver.spans), what="the run's span")
    [root] = [s for s in receiver.spans if s["name"].startswith("invoke_agent")]
    assert root["status"] == 2 and root["attributes"]["error.type"] in ("MODEL_ERROR", "PROVIDER_UNAVAILABLE")


def test_without_otel_variables_tracing_is_off_and_the_sdk_never_loads(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENTD_"))}
    env["AGENTD_DATABASE_URL"] = f"sqlite:///{tmp_path / 'off.db'}"
    code = ("import sys; from agentd.app import create_app; app = create_app(); "
            "state = app.extensions['agentd']; "
            "print([type(c).__name__ for c in state.operators], "
            "any(m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter')) for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['UsageLedger'] False"
