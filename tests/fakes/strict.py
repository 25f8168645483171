"""What each vendor refuses in a history: a tool call without its result, a result without its call.

The fakes answer such a request as the real APIs do (400, the vendor's own
message), so no test can pass on a history a real vendor would refuse.
"""
from __future__ import annotations


def _results_after(messages: list[dict], index: int) -> tuple[set, int]:
    answered, j = set(), index + 1
    while j < len(messages) and messages[j].get("role") == "tool":
        answered.add(messages[j].get("tool_call_id"))
        j += 1
    return answered, j


def openai_problem(body: dict) -> dict | None:
    """The error OpenAI's Chat Completions answers to an unpaired history, else None."""
    messages = body.get("messages") or []
    answering: set = set()
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            answered, _ = _results_after(messages, index)
            missing = [c["id"] for c in message["tool_calls"] if c["id"] not in answered]
            if missing:
                return _openai_error(
                    "An assistant message with 'tool_calls' must be followed by tool messages responding "
                    "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                    + ", ".join(missing), f"messages.[{index}].role")
            answering = {c["id"] for c in message["tool_calls"]}
        elif role == "tool":
            if message.get("tool_call_id") not in answering:
                return _openai_error("Invalid parameter: messages with role 'tool' must be a response to a "
                                     "preceeding message with 'tool_calls'.", f"messages.[{index}].role")
        else:
            answering = set()
    return None


def _openai_error(message: str, param: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}


def _blocks(message: dict, kind: str) -> list[dict]:
    content = message.get("content")
    return [b for b in content if b.get("type") == kind] if isinstance(content, list) else []


def anthropic_problem(body: dict) -> dict | None:
    """The error Anthropic's Messages API answers to an unpaired history, else None."""
    messages = body.get("messages") or []
    for index, message in enumerate(messages):
        uses = [b["id"] for b in _blocks(message, "tool_use")]
        following = messages[index + 1] if index + 1 < len(messages) else {}
        answered = {b.get("tool_use_id") for b in _blocks(following, "tool_result")}
        missing = [u for u in uses if u not in answered]
        if uses and missing:
            return _anthropic_error(
                f"messages.{index + 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                "`tool_result` block in the next message.")
        previous = {b["id"] for b in _blocks(messages[index - 1], "tool_use")} if index else set()
        for number, block in enumerate(_blocks(message, "tool_result")):
            if block.get("tool_use_id") not in previous:
                return _anthropic_error(
                    f"messages.{index}.content.{number}: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {block.get('tool_use_id')}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message.")
    return None


def _anthropic_error(message: str) -> dict:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


def _parts(content: dict, kind: str) -> list[dict]:
    return [p for p in content.get("parts") or [] if kind in p]


def gemini_problem(body: dict) -> dict | None:
    """The error Gemini's generateContent answers to an unpaired history, else None."""
    contents = body.get("contents") or []
    for index, content in enumerate(contents):
        calls = len(_parts(content, "functionCall"))
        following = contents[index + 1] if index + 1 < len(contents) else {}
        responses = len(_parts(following, "functionResponse"))
        previous = len(_parts(contents[index - 1], "functionCall")) if index else 0
        if (calls and responses != calls) or (_parts(content, "functionResponse") and not previous):
            return {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message":
                              "Please ensure that the number of function response parts is equal to the "
                              "number of function call parts of the function call turn."}}
    return None
