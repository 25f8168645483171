"""Client-sent chat histories (OpenAI Chat Completions and Responses forms) as agentd messages.

A client of an OpenAI-style API sends the whole conversation each time. Its
last message must be the user's new one; the earlier ones become the new
conversation's history. `system`/`developer` messages replace the agent's
system prompt only where the agent allows overrides; elsewhere they are
dropped, as the agent's own prompt is the point of talking to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from agentd.api.validation import _image
from agentd.errors import InvalidRequest
from agentd.vocab import Image, Message, ToolCall

TEXT_PARTS = ("text", "input_text", "output_text")


@dataclass
class ClientChat:
    """What a client's message list says: the new message, its history, a system prompt."""

    message: str
    images: list[Image] = field(default_factory=list)
    history: list[Message] = field(default_factory=list)
    system: str | None = None


def _data_url_image(url, where: str) -> Image:
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise InvalidRequest(f"{where}: only base64 data: URLs are accepted for images")
    mime = url[5:].split(";", 1)[0]
    try:
        return _image({"data": url, "mime_type": mime}, 0)
    except InvalidRequest as exc:  # its message names `images[0]`; name the client's field instead
        raise InvalidRequest(f"{where}: {exc.message.split(': ', 1)[-1]}") from None


def content_of(content, where: str) -> tuple[str, list[Image]]:
    """A message's text and images from a string or a list of content parts."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}: must be a string or an array of content parts")
    texts, images = [], []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            images.append(_data_url_image(part["image_url"].get("url"), f"{where}[{i}].image_url.url"))
        elif kind == "input_image":
            images.append(_data_url_image(part.get("image_url"), f"{where}[{i}].image_url"))
        else:
            raise InvalidRequest(f"{where}[{i}]: unsupported content part")
    return "".join(texts), images


def _tool_calls(raw, where: str) -> list[ToolCall] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidRequest(f"{where}: must be an array")
    calls = []
    for i, call in enumerate(raw):
        fn = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(fn, dict) and isinstance(call.get("id"), str) and isinstance(fn.get("name"), str)):
            raise InvalidRequest(f"{where}[{i}]: must be {{id, type: function, function: {{name, arguments}}}}")
        arguments = fn.get("arguments")
        calls.append(ToolCall(call["id"], fn["name"], arguments if isinstance(arguments, str) else "{}"))
    return calls or None


def _message(item, where: str) -> Message:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where}: must be an object")
    role = item.get("role")
    if role not in ("system", "developer", "user", "assistant", "tool"):
        raise InvalidRequest(f"{where}.role: must be one of system, developer, user, assistant, tool")
    text, images = content_of(item.get("content"), f"{where}.content")
    if role == "tool":
        if not isinstance(item.get("tool_call_id"), str):
            raise InvalidRequest(f"{where}.tool_call_id: required on tool messages")
        name = item.get("name") if isinstance(item.get("name"), str) else None
        return Message("tool", text, tool_call_id=item["tool_call_id"], name=name or None)
    calls = _tool_calls(item.get("tool_calls"), f"{where}.tool_calls") if role == "assistant" else None
    return Message(role, text or None, tool_calls=calls, images=images if role == "user" else [])


def _check_pairs(history: list[Message]) -> None:
    """Every tool call answered by a tool message, and no answer without its call (providers insist)."""
    open_calls: set[str] = set()
    for message in history:
        if message.role == "tool":
            if message.tool_call_id not in open_calls:
                raise InvalidRequest(f"messages: tool message for unknown tool call '{message.tool_call_id}'")
            open_calls.discard(message.tool_call_id)
            continue
        if open_calls:
            raise InvalidRequest(f"messages: tool call '{sorted(open_calls)[0]}' has no tool message")
        open_calls = {c.id for c in message.tool_calls or []}
    if open_calls:
        raise InvalidRequest(f"messages: tool call '{sorted(open_calls)[0]}' has no tool message")


def client_chat(items, where: str = "messages") -> ClientChat:
    """Split a client's message list into history, system prompt and the new user message."""
    if not isinstance(items, list) or not items:
        raise InvalidRequest(f"{where}: required, a non-empty array")
    messages = [_message(item, f"{where}[{i}]") for i, item in enumerate(items)]
    last = messages[-1]
    if last.role != "user":
        raise InvalidRequest(f"{where}: the last message must be the user's (role 'user')")
    if not (last.content or "").strip():
        raise InvalidRequest(f"{where}[{len(messages) - 1}].content: the user's message must not be empty")
    system = [m.content for m in messages if m.role in ("system", "developer") and m.content]
    history = [m for m in messages[:-1] if m.role not in ("system", "developer")]
    _check_pairs(history)
    return ClientChat(last.content, last.images, history, "\n\n".join(system) or None)
