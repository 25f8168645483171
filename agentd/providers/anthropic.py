"""Anthropic Messages API adapter (POST {base_url}/v1/messages), plain and streamed.

Wire quirks kept here: the system prompt is a top-level field, tool results
travel as `tool_result` blocks inside a *user* message, roles must alternate
(so consecutive same-role messages are merged), `max_tokens` is mandatory, and
thinking blocks must be sent back unchanged (with their signature) while a
tool loop is running.
"""
from __future__ import annotations

import json
import os
from typing import Iterator

import httpx

from agentd.providers.base import HttpProvider, ProviderChunk, ProviderError, upstream_error
from agentd.providers.sse import iter_sse_events
from agentd.vocab import Completion, Message, ModelRequest, ToolCall, Usage

NAME = "anthropic"
DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
# The API requires signed thinking blocks to come back verbatim on the assistant
# message that asked for tools; the neutral Message has no field for them, so the
# adapter hangs them on the Message object it returned (the loop passes it back).
THINKING_ATTR = "_anthropic_thinking"
RETRYABLE_ERROR_TYPES = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


def _user_blocks(message: Message) -> list[dict]:
    blocks = [{"type": "image", "source": {"type": "base64", "media_type": image.mime_type,
                                           "data": image.data}} for image in message.images]
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    return blocks


def _tool_input(arguments: str) -> dict:
    try:
        value = json.loads(arguments or "{}")
    except (ValueError, RecursionError):
        value = None
    # The API insists on an object; a model's broken JSON is sent back as an empty one.
    return value if isinstance(value, dict) else {}


def _assistant_blocks(message: Message) -> list[dict]:
    blocks = list(getattr(message, THINKING_ATTR, None) or []) if message.tool_calls else []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls or []:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name,
                       "input": _tool_input(call.arguments)})
    return blocks


def _tool_result_block(message: Message) -> dict:
    return {"type": "tool_result", "tool_use_id": message.tool_call_id,
            "content": message.content or ""}


def wire_messages(messages: list[Message]) -> tuple[list[dict], list[str]]:
    """(Anthropic messages, extra system texts found in the history)."""
    wire: list[dict] = []
    system: list[str] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content or "")
            continue
        if message.role == "tool":
            role, blocks = "user", [_tool_result_block(message)]
        elif message.role == "assistant":
            role, blocks = "assistant", _assistant_blocks(message)
        else:
            role, blocks = "user", _user_blocks(message)
        if not blocks:
            continue  # the API refuses empty content
        if wire and wire[-1]["role"] == role:
            wire[-1]["content"].extend(blocks)  # roles must alternate
        else:
            wire.append({"role": role, "content": blocks})
    return wire, system


def request_body(request: ModelRequest, config: dict, stream: bool) -> dict:
    messages, extra_system = wire_messages(request.messages)
    system = "\n\n".join(s for s in [request.system or "", *extra_system] if s)
    body = {"model": request.model, "messages": messages,
            "max_tokens": request.max_tokens or config.get("max_tokens") or DEFAULT_MAX_TOKENS}
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                         for t in request.tools]
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if stream:
        body["stream"] = True
    # `options` pass through as extra body fields (e.g. thinking: {type: enabled, budget_tokens}).
    body.update(config.get("options") or {})
    body.update(request.options or {})
    return body


def parse_usage(data: dict | None) -> Usage:
    data = data or {}
    # Cached prompt tokens are reported apart from input_tokens; all of them are prompt.
    prompt = sum(int(data.get(k) or 0) for k in
                 ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    return Usage(prompt, int(data.get("output_tokens") or 0))


def _message_from_blocks(blocks: list[dict]) -> Message:
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    reasoning = "".join(b.get("thinking", "") for b in blocks if b.get("type") == "thinking")
    calls = [ToolCall(id=b["id"], name=b["name"], arguments=_arguments_text(b.get("input")))
             for b in blocks if b.get("type") == "tool_use"]
    message = Message(role="assistant", content=text or None, tool_calls=calls or None,
                      reasoning=reasoning or None)
    thinking = [b for b in blocks if b.get("type") in ("thinking", "redacted_thinking")]
    if thinking:
        setattr(message, THINKING_ATTR, thinking)
    return message


def _arguments_text(value) -> str:
    if isinstance(value, str):
        return value or "{}"
    return json.dumps(value if value is not None else {})


def parse_response(data: dict) -> Completion:
    if data.get("type") == "error":
        raise stream_error(data)
    blocks = data["content"]
    if not isinstance(blocks, list):
        raise TypeError("content is not a list")
    return Completion(message=_message_from_blocks(blocks), usage=parse_usage(data.get("usage")),
                      model=data.get("model"))


def stream_error(event: dict) -> ProviderError:
    """An `error` event (or error body) as a ProviderError; overload-type errors may be retried."""
    error = event.get("error") if isinstance(event.get("error"), dict) else {}
    kind = error.get("type") or "error"
    return upstream_error(NAME, kind, str(error.get("message", "")), retryable=kind in RETRYABLE_ERROR_TYPES)


class _StreamState:
    """Assembles one streamed answer from Messages API events."""

    def __init__(self):
        self.blocks: dict[int, dict] = {}
        self.json_parts: dict[int, list[str]] = {}
        self.usage_data: dict = {}
        self.model: str | None = None
        self.finished = False
        self.produced = False

    def feed(self, event: dict) -> Iterator[ProviderChunk]:
        kind = event.get("type")
        handler = getattr(self, f"_on_{kind}", None)
        if kind == "error":
            raise stream_error(event)
        if handler is not None:
            yield from handler(event) or ()
        else:
            yield ProviderChunk("progress")  # ping and future event types: the stream is alive

    def _on_message_start(self, event: dict):
        message = event["message"]
        self.model = message.get("model")
        self.usage_data.update(message.get("usage") or {})

    def _on_content_block_start(self, event: dict):
        block = dict(event["content_block"])
        self.blocks[int(event["index"])] = block
        if block.get("type") == "tool_use":
            self.json_parts[int(event["index"])] = []
            return [ProviderChunk("progress")]
        text = block.get("text") or block.get("thinking")
        return self._text_chunks(block, text) if text else None

    def _on_content_block_delta(self, event: dict):
        index, delta = int(event["index"]), event["delta"]
        block = self.blocks[index]
        kind = delta.get("type")
        if kind == "input_json_delta":
            self.json_parts[index].append(delta.get("partial_json") or "")
            return [ProviderChunk("progress")]  # tool arguments carry no text, but keep idle at bay
        if kind == "signature_delta":
            block["signature"] = block.get("signature", "") + delta.get("signature", "")
            return None
        text = delta.get("text") if kind == "text_delta" else delta.get("thinking")
        key = "text" if kind == "text_delta" else "thinking"
        block[key] = block.get(key, "") + (text or "")
        return self._text_chunks(block, text)

    def _text_chunks(self, block: dict, text: str | None) -> list[ProviderChunk]:
        if not text:
            return []
        self.produced = True
        return [ProviderChunk("reasoning" if block.get("type") == "thinking" else "delta", text)]

    def _on_content_block_stop(self, event: dict):
        index = int(event["index"])
        if index in self.json_parts:
            self.blocks[index]["input"] = "".join(self.json_parts.pop(index)) or "{}"

    def _on_message_delta(self, event: dict):
        self.usage_data.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})

    def _on_message_stop(self, event: dict):
        self.finished = True

    def completion(self) -> Completion:
        blocks = [self.blocks[i] for i in sorted(self.blocks)]
        return Completion(message=_message_from_blocks(blocks), usage=parse_usage(self.usage_data),
                          model=self.model)


def _json_event(data: str) -> dict:
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise ProviderError(f"{NAME} sent a malformed stream event") from exc
    if not isinstance(event, dict):
        raise ProviderError(f"{NAME} sent a malformed stream event")
    return event


class AnthropicProvider(HttpProvider):
    """Claude models over the Messages API."""

    @property
    def base_url(self) -> str:
        return (self.config.get("base_url") or DEFAULT_BASE_URL).rstrip("/")

    def headers(self) -> dict:
        headers = {"anthropic-version": API_VERSION}
        key = os.environ.get(self.config.get("api_key_env") or "ANTHROPIC_API_KEY")
        if key:
            headers["x-api-key"] = key
        return headers

    label = NAME

    def endpoint(self, request: ModelRequest, stream: bool) -> str:
        return f"{self.base_url}/v1/messages"

    def body(self, request: ModelRequest, stream: bool) -> dict:
        return request_body(request, self.config, stream)

    def parse_answer(self, data, request: ModelRequest) -> Completion:
        return parse_response(data)

    def stream_state(self, request: ModelRequest) -> _StreamState:
        return _StreamState()

    def stream_chunks(self, response: httpx.Response, state: _StreamState) -> Iterator[ProviderChunk]:
        return self._events(response, state)

    def _events(self, response: httpx.Response, state: _StreamState) -> Iterator[ProviderChunk]:
        for _, data in iter_sse_events(response):
            try:
                yield from state.feed(_json_event(data))
            except (KeyError, TypeError, ValueError) as exc:
                raise ProviderError(f"{NAME} sent a malformed stream event: {exc!r}") from exc
            if state.finished:
                return
