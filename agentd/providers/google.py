"""Google Gemini adapter: generateContent and streamGenerateContent?alt=sse (v1beta).

Wire quirks kept here: the assistant role is `model`, the system prompt is
`systemInstruction`, tool results are `functionResponse` parts whose
`response` must be an object, tool schemas accept only an OpenAPI subset,
function calls carry no ids (we make them up and map results back by name),
and thought signatures must go back with the function calls they came with.
"""
from __future__ import annotations

import json
import os
from typing import Iterator

import httpx

from agentd.providers.base import HttpProvider, ProviderChunk, ProviderError, upstream_error
from agentd.providers.sse import iter_sse_data
from agentd.vocab import Completion, Message, ModelRequest, ToolCall, Usage

NAME = "google"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
# Gemini wants each functionCall part back with its thoughtSignature during a tool
# loop; the neutral Message has no field for it, so the adapter hangs the raw parts
# on the Message object it returned (the loop passes that same object back).
PARTS_ATTR = "_gemini_parts"
# Keys of Gemini's OpenAPI-subset Schema; anything else (additionalProperties,
# $schema, …) makes the API refuse the whole request.
SCHEMA_KEYS = {"type", "format", "description", "nullable", "enum", "maxItems", "minItems",
               "properties", "required", "items", "anyOf", "minimum", "maximum", "minLength",
               "maxLength", "pattern", "title", "default", "propertyOrdering"}


def clean_schema(schema):
    """A JSON schema reduced to what Gemini's function declarations accept."""
    if isinstance(schema, list):
        return [clean_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    options = schema.get("anyOf")
    if options and any(o.get("type") == "null" for o in options if isinstance(o, dict)):
        rest = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
        merged = {**{k: v for k, v in schema.items() if k != "anyOf"},
                  **(rest[0] if len(rest) == 1 else {"anyOf": rest}), "nullable": True}
        return clean_schema(merged)
    cleaned = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            cleaned[key] = {name: clean_schema(sub) for name, sub in value.items()}
        elif key in SCHEMA_KEYS:
            cleaned[key] = clean_schema(value) if key in ("items", "anyOf") else value
    if "enum" in cleaned and "type" not in cleaned and all(isinstance(v, str) for v in cleaned["enum"]):
        cleaned["type"] = "string"  # Gemini's enums are typed strings
    return cleaned


def _declaration(tool) -> dict:
    declaration = {"name": tool.name, "description": tool.description}
    # An OBJECT with no properties is refused, so parameterless tools declare none.
    if (tool.parameters or {}).get("properties"):
        declaration["parameters"] = clean_schema(tool.parameters)
    return declaration


def _response_object(content: str | None) -> dict:
    try:
        value = json.loads(content or "")
    except (ValueError, RecursionError):
        return {"result": content or ""}
    return value if isinstance(value, dict) else {"result": value}


def _call_names(messages: list[Message]) -> dict[str, str]:
    return {call.id: call.name for m in messages for call in (m.tool_calls or [])}


def _user_parts(message: Message) -> list[dict]:
    parts = [{"text": message.content}] if message.content else []
    parts += [{"inlineData": {"mimeType": image.mime_type, "data": image.data}}
              for image in message.images]
    return parts


def _args(arguments: str) -> dict:
    try:
        value = json.loads(arguments or "{}")
    except (ValueError, RecursionError):
        value = None
    return value if isinstance(value, dict) else {}


def _model_parts(message: Message) -> list[dict]:
    raw = getattr(message, PARTS_ATTR, None)
    if raw and message.tool_calls:
        return raw  # exactly what Gemini sent, signatures included
    parts = [{"text": message.content}] if message.content else []
    parts += [{"functionCall": {"name": c.name, "args": _args(c.arguments)}}
              for c in message.tool_calls or []]
    return parts


def _tool_parts(message: Message, names: dict[str, str]) -> list[dict]:
    name = message.name or names.get(message.tool_call_id or "", "")
    return [{"functionResponse": {"name": name, "response": _response_object(message.content)}}]


def wire_contents(messages: list[Message]) -> tuple[list[dict], list[str]]:
    """(Gemini contents, extra system texts found in the history)."""
    names = _call_names(messages)
    contents: list[dict] = []
    system: list[str] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content or "")
            continue
        if message.role == "assistant":
            role, parts = "model", _model_parts(message)
        elif message.role == "tool":
            role, parts = "user", _tool_parts(message, names)
        else:
            role, parts = "user", _user_parts(message)
        if not parts:
            continue
        # Parallel calls need all their responses in one turn; merging same-role turns does that.
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents, system


def request_body(request: ModelRequest, config: dict) -> dict:
    contents, extra_system = wire_contents(request.messages)
    body: dict = {"contents": contents}
    system = "\n\n".join(s for s in [request.system or "", *extra_system] if s)
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
    generation = {}
    if request.temperature is not None:
        generation["temperature"] = request.temperature
    if request.max_tokens:
        generation["maxOutputTokens"] = request.max_tokens
    # `options` go to generationConfig (e.g. thinkingConfig: {includeThoughts: true}).
    generation.update(config.get("options") or {})
    generation.update(request.options or {})
    if generation:
        body["generationConfig"] = generation
    return body


def parse_usage(data: dict | None) -> Usage:
    data = data or {}
    # Thinking tokens are billed as output but reported apart from the candidates.
    output = int(data.get("candidatesTokenCount") or 0) + int(data.get("thoughtsTokenCount") or 0)
    return Usage(int(data.get("promptTokenCount") or 0), output)


def chunk_error(data: dict) -> ProviderError:
    """An error object (in a body or a stream chunk) as a ProviderError."""
    error = data.get("error") if isinstance(data.get("error"), dict) else {}
    code = error.get("code")
    retryable = isinstance(code, int) and (code == 429 or code >= 500)
    return upstream_error(NAME, str(error.get("status") or code or "error"), str(error.get("message", "")),
                          retryable=retryable)


class _Answer:
    """Assembles one answer from one or more GenerateContentResponse objects."""

    def __init__(self, first_call_number: int):
        self.next_call = first_call_number
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[ToolCall] = []
        self.parts: list[dict] = []
        self.usage = Usage()
        self.model: str | None = None
        self.finished = False

    def feed(self, data: dict) -> Iterator[ProviderChunk]:
        if "error" in data:
            raise chunk_error(data)
        blocked = (data.get("promptFeedback") or {}).get("blockReason")
        if blocked:
            raise ProviderError(f"{NAME} refused the prompt: {blocked}")
        self.model = data.get("modelVersion") or self.model
        if data.get("usageMetadata"):
            self.usage = parse_usage(data["usageMetadata"])
        for candidate in (data.get("candidates") or [])[:1]:
            for part in (candidate.get("content") or {}).get("parts") or []:
                yield from self._part(part)
            if candidate.get("finishReason"):
                self.finished = True

    def _part(self, part: dict) -> Iterator[ProviderChunk]:
        self.parts.append(part)
        if "functionCall" in part:
            call = part["functionCall"]
            # Gemini gives no ids (newer models may); number them across the conversation.
            call_id = call.get("id") or f"call_{self.next_call}"
            self.next_call += 1
            self.calls.append(ToolCall(call_id, call["name"], json.dumps(call.get("args") or {})))
            yield ProviderChunk("progress")
        elif part.get("text"):
            kind = "reasoning" if part.get("thought") else "delta"
            (self.reasoning if part.get("thought") else self.text).append(part["text"])
            yield ProviderChunk(kind, part["text"])

    @property
    def produced(self) -> bool:
        return bool(self.text or self.reasoning)

    def completion(self) -> Completion:
        message = Message(role="assistant", content="".join(self.text) or None,
                          tool_calls=self.calls or None, reasoning="".join(self.reasoning) or None)
        if self.calls:
            setattr(message, PARTS_ATTR, _merged_text_parts(self.parts))
        return Completion(message=message, usage=self.usage, model=self.model)


def _merged_text_parts(parts: list[dict]) -> list[dict]:
    """Streamed text arrives split over many parts; join neighbours of the same kind."""
    merged: list[dict] = []
    for part in parts:
        plain = set(part) <= {"text", "thought"}
        if plain and merged and set(merged[-1]) <= {"text", "thought"} \
                and merged[-1].get("thought") == part.get("thought"):
            merged[-1] = {**merged[-1], "text": merged[-1]["text"] + part.get("text", "")}
        else:
            merged.append(dict(part))
    return merged


def _calls_so_far(messages: list[Message]) -> int:
    return sum(len(m.tool_calls or []) for m in messages)


def _json_chunk(data: str) -> dict:
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise ProviderError(f"{NAME} sent a malformed stream chunk") from exc
    if not isinstance(chunk, dict):
        raise ProviderError(f"{NAME} sent a malformed stream chunk")
    return chunk


class GoogleProvider(HttpProvider):
    """Gemini models over the Generative Language API."""

    @property
    def base_url(self) -> str:
        return (self.config.get("base_url") or DEFAULT_BASE_URL).rstrip("/")

    def url(self, model: str, stream: bool) -> str:
        model = model.removeprefix("models/")
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self.base_url}/v1beta/models/{model}:{method}"

    def headers(self) -> dict:
        key = os.environ.get(self.config.get("api_key_env") or "GEMINI_API_KEY")
        return {"x-goog-api-key": key} if key else {}

    label = NAME

    def endpoint(self, request: ModelRequest, stream: bool) -> str:
        return self.url(request.model, stream)

    def body(self, request: ModelRequest, stream: bool) -> dict:
        return request_body(request, self.config)

    def parse_answer(self, data, request: ModelRequest) -> Completion:
        answer = _Answer(_calls_so_far(request.messages))
        for _ in answer.feed(data):
            pass
        return answer.completion()

    def stream_state(self, request: ModelRequest) -> _Answer:
        return _Answer(_calls_so_far(request.messages))

    def stream_chunks(self, response: httpx.Response, answer: _Answer) -> Iterator[ProviderChunk]:
        return self._chunks(response, answer)

    def _chunks(self, response: httpx.Response, answer: _Answer) -> Iterator[ProviderChunk]:
        for data in iter_sse_data(response):
            try:
                yield from answer.feed(_json_chunk(data))
            except (KeyError, TypeError, AttributeError) as exc:
                raise ProviderError(f"{NAME} sent a malformed stream chunk: {exc!r}") from exc
