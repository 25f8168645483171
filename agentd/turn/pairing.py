"""Every tool call answered: what keeps a stored history valid for the model.

OpenAI, Anthropic and Gemini all refuse (400) a history in which an assistant
message's tool call has no tool result right after it, or a tool result
answers no call. A run ended during a tool step (cancel, shutdown, a crash, a
failed insert) could leave such rows, and older versions of agentd did. The
recorder stores `cancelled: …` results for the calls a run leaves open
(`missing_result`); the history builder passes what it read through `paired`,
which repairs rows written before that, or by a process that died.
"""
from __future__ import annotations

from agentd.store.recorder import missing_text
from agentd.vocab import Message


def missing_result(call_id: str, name: str | None, reason: str | None = None) -> Message:
    return Message("tool", missing_text(reason), tool_call_id=call_id, name=name)


def paired(messages: list[Message]) -> list[Message]:
    """The messages with each tool call followed by exactly one result for it.

    A missing result becomes a `cancelled: …` error result; a result that
    answers no call of the assistant message before it (or answers one twice)
    is left out, since no vendor accepts it.
    """
    out: list[Message] = []
    open_calls: dict[str, str | None] = {}   # call id -> tool name, of the last tool step
    for message in messages:
        if message.role == "tool":
            if message.tool_call_id in open_calls:
                open_calls.pop(message.tool_call_id)
                out.append(message)
            continue
        _close(out, open_calls)
        out.append(message)
        if message.role == "assistant" and message.tool_calls:
            open_calls = {call.id: call.name for call in message.tool_calls}
    _close(out, open_calls)
    return out


def _close(out: list[Message], open_calls: dict[str, str | None]) -> None:
    for call_id, name in open_calls.items():
        out.append(missing_result(call_id, name))
    open_calls.clear()
