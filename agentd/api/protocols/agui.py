"""AG-UI: `POST /api/agents/{id}/agui` takes a `RunAgentInput` and answers AG-UI events over SSE.

Events are the `ag-ui-protocol` package's models, framed by its EventEncoder.
`threadId` is the conversation id: a conversation of the caller continues
(only the last user message is new); a new thread starts a new conversation,
seeded with the client's earlier messages, under the thread's own id when it
is a hard-to-guess one (see `client_thread`), and the events name it. The client's own `tools`,
`state` and `context` are not used: the agent's tools run server-side and
their calls and results are reported as `TOOL_CALL_*` events.

A run that pauses for a person (tool approvals) ends with `RUN_FINISHED` whose
`outcome` is `{"type": "interrupt", "interrupts": [{"id": "apr_…", "reason":
"tool_approval", "message", "toolCallId", "expiresAt", "responseSchema"}]}`; the
client resumes with a `RunAgentInput` on the same thread whose `resume` entries
answer them: `status: "resolved"` with `payload: {"approved": true|false,
"reason"?}` (or a bare boolean), `status: "cancelled"` to deny.
"""
from __future__ import annotations

from ag_ui.core import (Interrupt, RunAgentInput, RunErrorEvent, RunFinishedEvent, RunFinishedInterruptOutcome,
                        RunStartedEvent,
                        TextMessageContentEvent, TextMessageEndEvent, TextMessageStartEvent,
                        TokenUsage, ToolCallArgsEvent, ToolCallEndEvent, ToolCallResultEvent,
                        ToolCallStartEvent)
from ag_ui.encoder import EventEncoder
from flask import Blueprint, request
from pydantic import ValidationError

from agentd.api.protocols.base import Adapter, client_thread, refuse_widget_sessions, serve
from agentd.api.protocols.messages import client_chat
from agentd.api.validation import json_body
from agentd.errors import InvalidRequest
from agentd.vocab import ChatInput

bp = Blueprint("agui", __name__)
bp.before_request(refuse_widget_sessions)


def validation_message(exc: ValidationError, prefix: str = "") -> str:
    """The first pydantic error as `field: problem`, for a 400."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "body"
    return f"{prefix}{where}: {first.get('msg', 'invalid')}"


def _plain(message) -> dict:
    """An AG-UI message as the OpenAI-style dict the history parser takes."""
    data = message.model_dump(by_alias=False, exclude_none=True)
    out = {"role": data["role"], "content": data.get("content")}
    if data["role"] == "tool":
        out["tool_call_id"] = data.get("tool_call_id")
    if data.get("tool_calls"):
        out["tool_calls"] = [{"id": c["id"], "type": "function", "function": c["function"]}
                             for c in data["tool_calls"]]
    if isinstance(out["content"], list):  # parts: keep the text, as agentd stores text
        out["content"] = "".join(p.get("text", "") for p in out["content"] if isinstance(p, dict))
    return out


class AgUi(Adapter):
    """AG-UI events over one turn."""

    name = "agui"
    channel = "agui"

    def _validated(self) -> RunAgentInput:
        try:
            self.run = RunAgentInput.model_validate(self.body)
        except ValidationError as exc:
            raise InvalidRequest(validation_message(exc)) from None
        return self.run

    def decisions(self):
        """`resume` entries answering the interrupts of a paused run, as approval decisions."""
        run = self._validated()
        if not run.resume:
            return None
        return run.thread_id, [(entry.interrupt_id, *_decision(entry)) for entry in run.resume]

    def chat_input(self) -> ChatInput:
        self._validated()
        messages = [_plain(m) for m in self.run.messages if m.role in ("user", "assistant", "tool",
                                                                       "system", "developer")]
        chat = client_chat(messages)
        conversation_id, new_id = client_thread(self.run.thread_id, self.agent_id)
        return ChatInput(message=chat.message, stream=True, channel=self.channel, conversation_id=conversation_id,
                         new_conversation_id=new_id, history=[] if conversation_id else chat.history)

    def frames(self, events):
        encoder, projection = EventEncoder(), _Projection(self.run.run_id)
        for event in events:
            if event is None:
                yield ": ping\n\n"
                continue
            for out in projection.events(event):
                yield encoder.encode(out)


APPROVAL_SCHEMA = {"type": "object", "required": ["approved"],
                   "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string"}}}


def _decision(entry) -> tuple[bool, str | None]:
    """(approve?, reason) from a resume entry; anything but an explicit yes denies."""
    payload = entry.payload
    if entry.status != "resolved":
        return False, "cancelled"
    if isinstance(payload, dict):
        reason = payload.get("reason")
        return payload.get("approved") is True, reason if isinstance(reason, str) else None
    return payload is True, None


def _interrupt(approval: dict) -> Interrupt:
    return Interrupt(id=approval["id"], reason="tool_approval", message=approval.get("message"),
                     tool_call_id=approval["tool_call"]["id"], expires_at=approval.get("expires_at"),
                     response_schema=APPROVAL_SCHEMA)


class _Projection:
    """Keeps what AG-UI needs across events: the thread, the open text message."""

    def __init__(self, run_id: str):
        self.run_id, self.thread_id = run_id, ""
        self.text_id: str | None = None
        self.texts = 0
        self.streamed = False

    def events(self, event):
        handler = getattr(self, f"_on_{event.type}", None)
        return handler(event.data) if handler else []

    def _on_start(self, data):
        self.thread_id = data["conversation_id"]
        self.base = f"msg_{data.get('id') or self.run_id}"
        return [RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id)]

    def _open_text(self):
        if self.text_id is not None:
            return []
        self.texts += 1
        self.text_id = f"{self.base}_{self.texts}"
        return [TextMessageStartEvent(message_id=self.text_id, role="assistant")]

    def _close_text(self):
        if self.text_id is None:
            return []
        closed, self.text_id = self.text_id, None
        return [TextMessageEndEvent(message_id=closed)]

    def _on_delta(self, data):
        if not data["content"]:
            return []
        self.streamed = True
        return [*self._open_text(), TextMessageContentEvent(message_id=self.text_id, delta=data["content"])]

    def _on_tool_call(self, data):
        call = data["tool_call"]
        return [*self._close_text(),
                ToolCallStartEvent(tool_call_id=call["id"], tool_call_name=call["function"]["name"]),
                ToolCallArgsEvent(tool_call_id=call["id"], delta=call["function"]["arguments"] or "{}"),
                ToolCallEndEvent(tool_call_id=call["id"])]

    def _on_tool_result(self, data):
        return [ToolCallResultEvent(message_id=f"{data['tool_call_id']}_result", role="tool",
                                    tool_call_id=data["tool_call_id"], content=data["content"] or "")]

    def _on_done(self, data):
        out = []
        content = data["message"].get("content")
        if content and not self.streamed:  # answered without deltas (a replay): the text in one piece
            out += [*self._open_text(), TextMessageContentEvent(message_id=self.text_id, delta=content)]
        usage = data.get("usage") or {}
        message = data["message"]
        tokens = TokenUsage(provider=message.get("provider"), model=message.get("model"),
                            input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens"))
        outcome = None
        if data.get("approvals"):  # the run paused: the calls wait for a person's decision
            outcome = RunFinishedInterruptOutcome(interrupts=[_interrupt(a) for a in data["approvals"]])
        return [*out, *self._close_text(),
                RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, usage=[tokens], outcome=outcome)]

    def _on_error(self, data):
        error = data["error"]
        return [*self._close_text(), RunErrorEvent(message=error["message"], code=error["code"])]


@bp.post("/api/agents/<agent_id>/agui")
def run_agent(agent_id):
    body = json_body(request)
    return serve(AgUi(agent_id, body))

