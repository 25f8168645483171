"""OpenTelemetry spans for each run, following the GenAI semantic conventions.

`invoke_agent {agent}` spans the run; under it, one `chat {model}` span per
model call and one `execute_tool {tool}` span per tool call, with `gen_ai.*`
attributes. Configured only by the standard `OTEL_*` variables: with neither
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) nor
`OTEL_TRACES_EXPORTER` set, `from_env()` returns None, nothing is registered
and the SDK is never imported. Message contents go into spans only with
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`.
"""
from __future__ import annotations

import json
import logging
import os
import time
import weakref
from dataclasses import dataclass, field

from agentd.hookspecs import hookimpl

log = logging.getLogger("agentd.tracing")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def configured() -> bool:
    """Whether the environment asks for traces."""
    if _truthy("OTEL_SDK_DISABLED") or os.environ.get("OTEL_TRACES_EXPORTER", "").strip() == "none":
        return False
    return any(os.environ.get(name) for name in ENDPOINT_VARS + ("OTEL_TRACES_EXPORTER",))


def _exporter():
    kind = (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")[0].strip()
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        return ConsoleSpanExporter()
    if kind != "otlp":
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported; using otlp (http/protobuf)", kind)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: from OTEL_EXPORTER_OTLP_*


def from_env() -> "RunTracer | None":
    """A tracer plugin when OTEL_* asks for traces, else None (and no SDK import)."""
    if not configured():
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; agentd is the default name.
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "agentd"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter()))  # OTEL_BSP_* tune it
    capture = _truthy("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    return RunTracer(provider, capture)


def _now() -> int:
    return time.time_ns()


@dataclass
class _RunSpans:
    root: object
    context: object
    call_started: int
    tools: dict = field(default_factory=dict)  # tool call id -> open span


class RunTracer:
    """The `on_event` consumer that turns a run's events into spans."""

    def __init__(self, provider, capture_content: bool = False):
        from opentelemetry import trace
        self.provider = provider
        self.tracer = provider.get_tracer("agentd")
        self.trace = trace
        self.capture = capture_content
        self.runs: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def shutdown(self) -> None:
        self.provider.shutdown()

    @hookimpl(trylast=True)
    def on_event(self, run, event):
        handler = getattr(self, "_on_" + event.type, None)
        if handler is None:
            return
        if event.type == "start":
            handler(run, event)
        elif run in self.runs:
            handler(run, self.runs[run], event)

    # -- the run -------------------------------------------------------------------
    def _base(self, run) -> dict:
        return {"gen_ai.provider.name": run.block.get("provider"),
                "gen_ai.request.model": run.block.get("name") or "",
                "gen_ai.conversation.id": run.conversation_id}

    def _on_start(self, run, event):
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": run.agent.id,
                      "gen_ai.agent.name": run.agent.name, **self._base(run)}
        if self.capture:
            attributes["gen_ai.input.messages"] = json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": run.inp.message}]}])
        root = self.tracer.start_span(f"invoke_agent {run.agent.name}", kind=self.trace.SpanKind.INTERNAL,
                                      attributes=attributes)
        self.runs[run] = _RunSpans(root, self.trace.set_span_in_context(root), _now())

    def _on_error(self, run, spans, event):
        code = (event.data.get("error") or {}).get("code", "error")
        spans.root.set_attribute("error.type", code)
        spans.root.set_status(self.trace.Status(self.trace.StatusCode.ERROR, code))

    def _on_finish(self, run, spans, event):
        for span in spans.tools.values():  # cancelled mid-step: end them with the run
            span.end()
        spans.root.end()
        self.runs.pop(run, None)

    # -- model calls -----------------------------------------------------------------
    def _chat_span(self, run, spans, completion, finish_reason: str):
        model = run.recorder.model or run.block.get("name") or ""
        usage = completion.usage
        attributes = {"gen_ai.operation.name": "chat", **self._base(run),
                      "gen_ai.provider.name": run.recorder.provider or run.block.get("provider"),
                      "gen_ai.request.model": model, "gen_ai.response.model": completion.model or model,
                      "gen_ai.usage.input_tokens": usage.prompt_tokens,
                      "gen_ai.usage.output_tokens": usage.completion_tokens,
                      "gen_ai.response.finish_reasons": [finish_reason]}
        if self.capture:
            attributes["gen_ai.output.messages"] = json.dumps([_output_message(completion, finish_reason)])
        span = self.tracer.start_span(f"chat {model}", context=spans.context, kind=self.trace.SpanKind.CLIENT,
                                      attributes=attributes, start_time=spans.call_started)
        span.end()

    def _on_assistant_message(self, run, spans, event):
        self._chat_span(run, spans, event.payload, "tool_calls")

    def _on_answer(self, run, spans, event):
        outcome = event.payload
        self._chat_span(run, spans, outcome.completion, "stop")
        spans.root.set_attribute("gen_ai.usage.input_tokens", outcome.usage.prompt_tokens)  # the whole run
        spans.root.set_attribute("gen_ai.usage.output_tokens", outcome.usage.completion_tokens)

    # -- tool calls ------------------------------------------------------------------
    def _on_tool_call(self, run, spans, event):
        call = event.data["tool_call"]
        name = call["function"]["name"]
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                      "gen_ai.tool.call.id": call["id"], "gen_ai.tool.type": "function"}
        if self.capture:
            attributes["gen_ai.tool.call.arguments"] = call["function"]["arguments"]
        spans.tools[call["id"]] = self.tracer.start_span(
            f"execute_tool {name}", context=spans.context, kind=self.trace.SpanKind.INTERNAL,
            attributes=attributes)

    def _on_tool_result(self, run, spans, event):
        span = spans.tools.pop(event.data["tool_call_id"], None)
        if span is not None:
            if self.capture:
                span.set_attribute("gen_ai.tool.call.result", event.data.get("content") or "")
            if event.data.get("is_error"):
                span.set_attribute("error.type", "tool_error")
                span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, "tool_error"))
            span.end()
        spans.call_started = _now()  # the next model call starts after the step's last result


def _output_message(completion, finish_reason: str) -> dict:
    message = completion.message
    parts = [{"type": "text", "content": message.content}] if message.content else []
    parts += [{"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
              for c in message.tool_calls or []]
    return {"role": "assistant", "parts": parts, "finish_reason": finish_reason}
