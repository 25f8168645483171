"""OpenAI-compatible Chat Completions adapter (OpenAI, Groq, OpenRouter, Ollama, any base_url)."""
from __future__ import annotations

import json
import os
from typing import Iterator

import httpx

from agentd.providers.base import HttpProvider, ProviderChunk, ProviderError, upstream_error
from agentd.providers.sse import iter_sse_data
from agentd.vocab import Completion, Message, ModelRequest, ToolCall, Usage

PRESETS = {
    "openai": {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"},
    "groq": {"base_url": "https://api.groq.com/openai/v1", "api_key_env": "GROQ_API_KEY"},
    "openrouter": {"base_url": "https://openrouter.ai/api/v1", "api_key_env": "OPENROUTER_API_KEY"},
    "ollama": {"base_url": "http://127.0.0.1:11434/v1", "api_key_env": None},
}


def _content_parts(message: Message):
    if not message.images:
        return message.content or ""
    parts = [{"type": "text", "text": message.content or ""}]
    for image in message.images:
        url = f"data:{image.mime_type};base64,{image.data}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def wire_message(message: Message) -> dict:
    """A neutral message in Chat Completions form."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content or ""}
    wire = {"role": message.role, "content": _content_parts(message)}
    if message.tool_calls:
        wire["tool_calls"] = [call.to_dict() for call in message.tool_calls]
        wire["content"] = message.content or None
    return wire


def request_body(request: ModelRequest, stream: bool) -> dict:
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages += [wire_message(m) for m in request.messages]
    body = {"model": request.model, "messages": messages, "stream": stream}
    if request.tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in request.tools]
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens:
        body["max_tokens"] = request.max_tokens
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def parse_usage(data: dict | None) -> Usage:
    data = data or {}
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


def _reasoning_of(payload: dict) -> str | None:
    # Providers disagree on the field: DeepSeek/vLLM say reasoning_content, OpenRouter/Ollama reasoning.
    return payload.get("reasoning_content") or payload.get("reasoning") or None


def parse_message(payload: dict) -> Message:
    calls = [ToolCall(id=c.get("id") or f"call_{i}", name=c["function"]["name"],
                      arguments=c["function"].get("arguments") or "{}")
             for i, c in enumerate(payload.get("tool_calls") or [])]
    return Message(role="assistant", content=payload.get("content"), tool_calls=calls or None,
                   reasoning=_reasoning_of(payload))


class _StreamState:
    """Assembles one streamed answer from Chat Completions chunks."""

    def __init__(self):
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict] = {}
        self.usage = Usage()
        self.model: str | None = None
        self.finished = False

    @property
    def produced(self) -> bool:
        return bool(self.text or self.calls)

    def feed(self, chunk: dict) -> Iterator[ProviderChunk]:
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            raise upstream_error("openai-compatible", error.get("type") or error.get("code") or "error",
                                 json.dumps(error))
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = parse_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            yield from self._feed_delta(choice.get("delta") or {})
            if choice.get("finish_reason"):
                self.finished = True

    def _feed_delta(self, delta: dict) -> Iterator[ProviderChunk]:
        reasoning = _reasoning_of(delta)
        if reasoning:
            self.reasoning.append(reasoning)
            yield ProviderChunk("reasoning", reasoning)
        if delta.get("content"):
            self.text.append(delta["content"])
            yield ProviderChunk("delta", delta["content"])
        for fragment in delta.get("tool_calls") or []:
            self._feed_call(fragment)
            yield ProviderChunk("progress")  # long arguments must not look like an idle stream

    def _feed_call(self, fragment: dict) -> None:
        call = self.calls.setdefault(fragment.get("index", 0), {"id": None, "name": "", "args": ""})
        call["id"] = fragment.get("id") or call["id"]
        function = fragment.get("function") or {}
        call["name"] += function.get("name") or ""
        call["args"] += function.get("arguments") or ""

    def completion(self) -> Completion:
        calls = [ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["args"] or "{}")
                 for i, c in sorted(self.calls.items())]
        message = Message(role="assistant", content="".join(self.text) or None,
                          tool_calls=calls or None, reasoning="".join(self.reasoning) or None)
        return Completion(message=message, usage=self.usage, model=self.model)


class OpenAICompatible(HttpProvider):
    """Chat Completions over httpx; `base_url` points it at any compatible server."""

    preset = "openai"

    @property
    def base_url(self) -> str:
        return (self.config.get("base_url") or PRESETS[self.preset]["base_url"]).rstrip("/")

    def headers(self) -> dict:
        env = self.config.get("api_key_env") or PRESETS[self.preset]["api_key_env"]
        key = os.environ.get(env) if env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def label(self) -> str:
        return self.preset

    def endpoint(self, request: ModelRequest, stream: bool) -> str:
        return f"{self.base_url}/chat/completions"

    def body(self, request: ModelRequest, stream: bool) -> dict:
        return request_body(request, stream)

    def parse_answer(self, data, request: ModelRequest) -> Completion:
        message = parse_message(data["choices"][0]["message"])
        return Completion(message=message, usage=parse_usage(data.get("usage")), model=data.get("model"))

    def stream_state(self, request: ModelRequest) -> "_StreamState":
        return _StreamState()

    def stream_chunks(self, response: httpx.Response, state: "_StreamState") -> Iterator[ProviderChunk]:
        for data in iter_sse_data(response):
            if data == "[DONE]":
                state.finished = True
                return
            yield from state.feed(_json_chunk(data, self.preset))


def _json_chunk(data: str, provider: str) -> dict:
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProviderError(f"{provider} sent a malformed stream chunk") from exc
    if not isinstance(chunk, dict):
        raise ProviderError(f"{provider} sent a malformed stream chunk")
    return chunk


def preset_factory(name: str):
    """A provider factory bound to one preset (groq, openrouter, ollama, openai)."""
    return type(f"{name.title()}Provider", (OpenAICompatible,), {"preset": name})
