"""The plain values every layer speaks: messages, tool calls, usage and events.

Nothing here knows about Flask, peewee or any provider's wire format. The loop
yields `Event`s; the chat service stores what they carry; the API layer only
frames their public form as JSON, SSE or WebSocket frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ToolCall:
    """One function call requested by the model; `arguments` is a JSON string."""

    id: str
    name: str
    arguments: str = "{}"

    def to_dict(self) -> dict:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_dict(cls, data: dict) -> "ToolCall":
        fn = data.get("function") or {}
        return cls(id=data["id"], name=fn.get("name", ""), arguments=fn.get("arguments") or "{}")


@dataclass
class Image:
    """An image attached to a user message (raw base64 data, as the API received it)."""

    data: str
    mime_type: str


@dataclass
class Message:
    """One chat message in the provider-neutral shape."""

    role: str  # system | user | assistant | tool
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None  # tool name, on tool messages
    images: list[Image] = field(default_factory=list)
    reasoning: str | None = None


@dataclass
class Usage:
    """Token counts normalised across providers."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens)

    def to_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass
class ToolSpec:
    """What the model is told about a tool."""

    name: str
    description: str
    parameters: dict


@dataclass
class ModelRequest:
    """Everything a provider needs for one model call."""

    model: str
    messages: list[Message]
    system: str | None = None
    tools: list[ToolSpec] = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None
    options: dict = field(default_factory=dict)


@dataclass
class Completion:
    """The finished result of one model call."""

    message: Message
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    duration_ms: int | None = None  # the whole call, request to its last chunk (set by the loop)


@dataclass
class ToolResult:
    """The outcome of one tool call; errors are data, not exceptions."""

    tool_call_id: str
    name: str
    content: str
    is_error: bool = False
    duration_ms: int | None = None  # how long the call ran (set by the tool runner)


@dataclass
class Event:
    """One step of a turn. `public()` is the API form; `payload` carries internal values."""

    type: str
    data: dict = field(default_factory=dict)
    payload: Any = None

    def public(self) -> dict:
        return {"type": self.type, **self.data}


# Event types the API forwards to clients; anything else is internal to the server.
PUBLIC_EVENTS = frozenset(
    {"start", "reasoning", "tool_call", "status", "tool_result", "delta", "done", "error"})


@dataclass
class ProviderChunk:
    """A piece of a streamed answer: `delta` text, `reasoning` text, or the final `completion`.

    `progress` (no content) says the stream is alive while the model writes
    something that is not text yet (tool-call arguments, pings); the router
    uses it for the idle timeout and does not pass it on.
    """

    type: str  # delta | reasoning | progress | completion
    content: str = ""
    completion: Completion | None = None


@dataclass
class ChatInput:
    """A validated chat request (the POST body of `/api/agents/{id}/chat`)."""

    message: str
    conversation_id: str | None = None
    stream: bool = False
    context: dict | None = None
    system_prompt: str | None = None
    provider: str | None = None
    model: str | None = None
    mood: str | None = None
    web: bool = False
    images: list[Image] = field(default_factory=list)
    metadata: dict | None = None
    auto_title: bool = True
    channel: str = "api"
    # Earlier messages a client sent itself (the OpenAI-style protocols): stored before
    # `message` when the turn starts a new conversation, so they become its history.
    history: list[Message] = field(default_factory=list)
    # The id for the conversation this turn starts, when a client names its threads itself.
    new_conversation_id: str | None = None


@dataclass
class Principal:
    """Who is asking: a user id, and the agents their key may use (None: all)."""

    user_id: str
    agents: list[str] | None = None
    kind: str = "key"  # key | local | widget
    admin: bool = False        # may use the operator's routes and console
    key_id: str | None = None  # the API key's id, when a key was used (the usage ledger)


@dataclass(frozen=True)
class Verdict:
    """What a `check_message` hook decides: refuse (with the reason shown to the user) or rewrite.

    `stored` is the text kept in the history for a refused message when it must
    not be the original (the PII rule stores it masked).
    """

    refuse: str | None = None    # the reason, sent back in the 422's `message`
    rewrite: str | None = None   # the text to send to the model instead
    stored: str | None = None


@dataclass(frozen=True)
class MessageContext:
    """What a `check_message` hook knows besides the agent and the text."""

    agent_id: str
    user_id: str
    principal_kind: str
    channel: str
    conversation_id: str | None
    context: dict | None
