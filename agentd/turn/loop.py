"""The tool loop: model → tool calls → results → model … until a text answer.

No Flask or peewee here. The loop speaks `vocab` values and yields `Event`s:
public ones (`reasoning`, `delta`, `tool_call`, `status`, `tool_result`) and
internal ones the chat service stores (`assistant_message`, `answer`).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from agentd.vocab import ProviderChunk
from agentd.turn.toolrun import ToolHooks, ToolRunSettings, run_tool_calls
from agentd.tools import Tool, ToolContext
from agentd.vocab import Completion, Event, Message, ModelRequest, ToolCall, ToolSpec, Usage

# call_model(request) yields ProviderChunks, the last one carrying the Completion.
ModelCaller = Callable[[ModelRequest], Iterator[ProviderChunk]]


@dataclass
class LoopSettings:
    max_tool_rounds: int = 8
    repeat_limit: int = 3
    tools: ToolRunSettings = None
    # hold(call) -> True when a person must approve the call before it runs.
    hold: Callable[[ToolCall], bool] | None = None

    def __post_init__(self):
        self.tools = self.tools or ToolRunSettings()


@dataclass
class TurnOutcome:
    """What the final `answer` event carries."""

    completion: Completion
    usage: Usage
    rounds: int


@dataclass
class Pause:
    """What the internal `approval` event carries: the step's calls held for a person.

    The loop ends there; no model call follows until every held call is decided.
    """

    outcome: TurnOutcome
    held: list[ToolCall]


def held_calls(calls: list[ToolCall], settings: LoopSettings) -> list[ToolCall]:
    return [call for call in calls if settings.hold is not None and settings.hold(call)]


def tool_specs(tools: dict[str, tuple[Tool, ToolContext]]) -> list[ToolSpec]:
    return [ToolSpec(t.name, t.description, t.parameters) for t, _ in tools.values()]


def _call(call_model: ModelCaller, request: ModelRequest) -> Iterator[Event]:
    """Forward a model call's deltas; the last event is an internal `completion`."""
    completion, started = None, time.monotonic()
    for chunk in call_model(request):
        if chunk.type == "completion":
            completion = chunk.completion
        elif chunk.content:
            yield Event(chunk.type, {"content": chunk.content})
    if completion is not None:
        completion.duration_ms = round((time.monotonic() - started) * 1000)
    yield Event("completion", payload=completion)


def _repeated(seen: Counter, message: Message, limit: int) -> bool:
    """True when the same tool with the same arguments was asked for more than `limit` times."""
    for call in message.tool_calls or []:
        try:
            key = (call.name, json.dumps(json.loads(call.arguments), sort_keys=True))
        except (ValueError, RecursionError):  # broken or absurdly deep JSON: compare the text
            key = (call.name, call.arguments)
        seen[key] += 1
    return any(count > limit for count in seen.values())


def run_loop(request: ModelRequest, call_model: ModelCaller,
             tools: dict[str, tuple[Tool, ToolContext]], settings: LoopSettings,
             hooks: ToolHooks | None = None) -> Iterator[Event]:
    """Run one turn. `request.messages` is the history ending with the new user message."""
    messages = list(request.messages)
    specs = tool_specs(tools)
    usage, seen, rounds, final = Usage(), Counter(), 0, not specs
    while True:
        final = final or rounds >= settings.max_tool_rounds
        step = replace(request, messages=messages, tools=[] if final else specs)
        completion = None
        for event in _call(call_model, step):
            if event.type == "completion":
                completion = event.payload
            else:
                yield event
        usage = usage + completion.usage
        message = completion.message
        if final or not message.tool_calls:
            message.tool_calls = None
            yield Event("answer", payload=TurnOutcome(completion, usage, rounds))
            return
        rounds += 1
        yield Event("assistant_message", payload=completion)
        for call in message.tool_calls:
            yield Event("tool_call", {"tool_call": call.to_dict()})
        messages.append(message)
        # Calls past max_parallel get their error result and are never held for a person.
        within, over = message.tool_calls[:settings.tools.max_parallel], message.tool_calls[settings.tools.max_parallel:]
        held = held_calls(within, settings)
        now = [call for call in within if all(call is not h for h in held)]
        run_settings = replace(settings.tools, max_parallel=len(now))
        for event in run_tool_calls(now + over, tools, run_settings, hooks):
            if event.type == "tool_result":
                result = event.payload
                messages.append(Message("tool", result.content, tool_call_id=result.tool_call_id,
                                        name=result.name))
            yield event
        if held:  # the other calls ran; these wait for a person, the run ends here
            yield Event("approval", payload=Pause(TurnOutcome(completion, usage, rounds), held))
            return
        final = _repeated(seen, message, settings.repeat_limit)
