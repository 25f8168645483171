"""The `demo` provider: deterministic, offline, no key. It shows a real tool loop.

Rules (documented in the README):
- a message containing `use TOOL` calls that tool if the agent has it; a JSON
  object in the message becomes the arguments, otherwise the text after the
  tool's name fills its first required parameter (`use calculator 6*7`);
- `use all tools` calls every tool at once (parallel calls);
- after tool results arrive, it answers with what the tools returned;
- anything else is echoed back.
"""
from __future__ import annotations

import json
import re
from typing import Iterator

from agentd.providers.base import Provider, ProviderChunk
from agentd.vocab import Completion, Message, ModelRequest, ToolCall, ToolSpec, Usage

_USE = re.compile(r"\buse\s+([A-Za-z_][\w-]*)\s*(.*)", re.IGNORECASE | re.DOTALL)


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _arguments(tool: ToolSpec, rest: str) -> dict:
    start = rest.find("{")
    if start >= 0:
        try:
            value = json.loads(rest[start:rest.rfind("}") + 1])
            if isinstance(value, dict):
                return value
        except (ValueError, RecursionError):  # the user's text: it may be `{{{{…` thousands deep
            pass
    required = tool.parameters.get("required") or list(tool.parameters.get("properties", {}))[:1]
    return {required[0]: rest.strip()} if required and rest.strip() else {}


def _calls_for(text: str, tools: list[ToolSpec]) -> list[ToolCall]:
    by_name = {t.name: t for t in tools}
    match = _USE.search(text)
    if not match:
        return []
    name, rest = match.group(1), match.group(2)
    if name.lower() == "all" and rest.lower().startswith("tools"):
        return [ToolCall(f"call_demo_{i}", t.name, json.dumps(_arguments(t, "")))
                for i, t in enumerate(tools)]
    if name in by_name:
        return [ToolCall("call_demo_0", name, json.dumps(_arguments(by_name[name], rest)))]
    return []


def _answer(request: ModelRequest) -> Message:
    last = request.messages[-1] if request.messages else Message("user", "")
    if last.role == "tool":
        results = [m for m in request.messages[_last_user_index(request.messages):] if m.role == "tool"]
        summary = "; ".join(f"{m.name or 'tool'} returned {m.content}" for m in results)
        return Message("assistant", f"Here is what I found: {summary}")
    calls = _calls_for(last.content or "", request.tools) if request.tools else []
    if calls:
        return Message("assistant", None, tool_calls=calls)
    return Message("assistant", f"Demo agent here. You said: {last.content or ''}")


def _last_user_index(messages: list[Message]) -> int:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return index
    return 0


class DemoProvider(Provider):
    """Answers without a network; see the module docstring for its rules."""

    def __init__(self, config: dict, http=None):
        self.config = config
        self.http = None

    def complete(self, request: ModelRequest) -> Completion:
        message = _answer(request)
        prompt = sum(_words(m.content or "") for m in request.messages)
        return Completion(message, Usage(prompt, _words(message.content or "")), request.model)

    def stream(self, request: ModelRequest) -> Iterator[ProviderChunk]:
        completion = self.complete(request)
        for piece in re.findall(r"\S+\s*", completion.message.content or ""):
            yield ProviderChunk("delta", piece)
        yield ProviderChunk("completion", completion=completion)

    def close(self) -> None:
        pass
