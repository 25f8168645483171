"""`POST /v1/responses`: the Open Responses subset over one turn.

`input` is a string or a list of message items; `instructions` replaces the
system prompt only where the agent allows overrides (else 400, as on
`POST …/chat`); `previous_response_id` continues that response's
conversation (then only the last user message of `input` is new). A response
id names its conversation and its message: `resp_<message id>_<conversation id>`.
Streamed, each `response.*` event carries a growing `sequence_number`.
"""
from __future__ import annotations

from flask import Blueprint, request

from agentd.api.protocols.base import Adapter, error_of, now, refuse_widget_sessions, serve, sse
from agentd.api.protocols.messages import client_chat
from agentd.api.protocols.openai import CONVERSATION_HEADER, conversation_header, flag, model_field
from agentd.api.validation import json_body
from agentd.errors import InvalidRequest
from agentd.vocab import ChatInput

bp = Blueprint("responses", __name__)
bp.before_request(refuse_widget_sessions)


def response_id(message_id, conversation_id: str) -> str:
    return f"resp_{message_id}_{conversation_id}"


def conversation_of(previous) -> str:
    """The conversation a `previous_response_id` continues (ownership is checked by the turn)."""
    if not isinstance(previous, str):
        raise InvalidRequest("previous_response_id: must be a string")
    prefix, _, rest = previous.partition("_")
    message_id, _, conversation_id = rest.partition("_")
    if prefix != "resp" or not message_id.isdigit() or not conversation_id:
        raise InvalidRequest("previous_response_id: not a response id of this server")
    return conversation_id


def _items(raw) -> list:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise InvalidRequest("input: required, a string or an array of message items")
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            raise InvalidRequest(f"input[{i}]: only message items are accepted")
    return [{k: v for k, v in item.items() if k != "type"} for item in raw]


def _usage(usage: dict | None) -> dict | None:
    if usage is None:
        return None
    return {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"], "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


class Responses(Adapter):
    """`response` objects and `response.*` stream events over one turn."""

    name = "openai.responses"
    channel = "openai"

    def chat_input(self) -> ChatInput:
        body = self.body
        stream = flag(body, "stream")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise InvalidRequest("instructions: must be a string")
        self.previous = body.get("previous_response_id")
        conversation_id = conversation_of(self.previous) if self.previous is not None else None
        conversation_id = conversation_id or conversation_header()
        chat = client_chat(_items(body.get("input")), where="input")
        self.instructions = instructions
        return ChatInput(message=chat.message, images=chat.images, stream=stream, channel=self.channel,
                         conversation_id=conversation_id, system_prompt=instructions,
                         history=[] if conversation_id else chat.history)

    def response_headers(self, conversation_id: str) -> dict:
        return {CONVERSATION_HEADER: conversation_id}

    def _response(self, ident: str, status: str, output: list, usage=None, error=None) -> dict:
        return {"id": ident, "object": "response", "created_at": self.created, "status": status,
                "model": self.agent_id, "output": output, "usage": _usage(usage), "error": error,
                "previous_response_id": self.previous, "instructions": self.instructions,
                "incomplete_details": None, "parallel_tool_calls": True, "tool_choice": "auto",
                "tools": [], "metadata": {}, "temperature": None, "top_p": None,
                "text": {"format": {"type": "text"}}}

    @staticmethod
    def _item(ident: str, text: str | None, status: str = "completed") -> dict:
        content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
        return {"id": f"msg_{ident[5:]}", "type": "message", "role": "assistant", "status": status,
                "content": content}

    def answer(self, final: dict) -> dict:
        self.created = now()
        ident = response_id(final["id"], final["conversation_id"])
        return self._response(ident, "completed", [self._item(ident, final.get("content") or "")],
                              final.get("usage"))

    def frames(self, events):
        self.created, self.sequence = now(), 0
        ident, text = "resp_0", []
        for event in events:
            if event is None:
                yield ": ping\n\n"
            elif event.type == "start":
                ident = response_id(event.data.get("id"), event.data["conversation_id"])
                yield from self._opening(ident)
            elif event.type == "delta":
                text.append(event.data["content"])
                yield self._event("response.output_text.delta", item_id=self._item(ident, "")["id"],
                                  output_index=0, content_index=0, delta=event.data["content"], logprobs=[])
            elif event.type == "done":
                yield from self._closing(ident, "".join(text), event.data)
                return
            elif event.type == "error":
                exc = error_of(event)
                error = {"code": exc.code, "message": exc.message}
                yield self._event("response.failed", response=self._response(ident, "failed", [], error=error))
                return

    def _event(self, kind: str, **data) -> str:
        self.sequence += 1
        return sse({"type": kind, "sequence_number": self.sequence, **data}, event=kind)

    def _opening(self, ident: str):
        yield self._event("response.created", response=self._response(ident, "in_progress", []))
        yield self._event("response.in_progress", response=self._response(ident, "in_progress", []))
        yield self._event("response.output_item.added", output_index=0,
                          item=self._item(ident, None, "in_progress"))
        yield self._event("response.content_part.added", item_id=self._item(ident, "")["id"], output_index=0,
                          content_index=0, part={"type": "output_text", "text": "", "annotations": []})

    def _closing(self, ident: str, streamed: str, done: dict):
        item_id = self._item(ident, "")["id"]
        final = done["message"].get("content") or ""
        if final and not streamed:  # answered without deltas (a replay): the text in one piece
            yield self._event("response.output_text.delta", item_id=item_id, output_index=0,
                              content_index=0, delta=final, logprobs=[])
        part = {"type": "output_text", "text": final, "annotations": []}
        yield self._event("response.output_text.done", item_id=item_id, output_index=0, content_index=0,
                          text=final, logprobs=[])
        yield self._event("response.content_part.done", item_id=item_id, output_index=0, content_index=0,
                          part=part)
        item = self._item(ident, final)
        yield self._event("response.output_item.done", output_index=0, item=item)
        yield self._event("response.completed",
                          response=self._response(ident, "completed", [item], done.get("usage")))


@bp.post("/v1/responses")
def create_response():
    body = json_body(request)
    return serve(Responses(model_field(body), body))
