"""The AI SDK UI message stream (v1, npm `ai` 7.x): `POST /api/agents/{id}/ui-chat`.

Takes the body `useChat` sends (`id` = the chat, `messages` as UIMessages with
`parts`) and answers SSE parts ending `data: [DONE]`, with the header
`x-vercel-ai-ui-message-stream: v1`. `id` is the conversation id, as for AG-UI
threads (`client_thread`): a conversation of the caller continues, a new id
starts a conversation seeded with the client's earlier messages; `start`
carries `messageMetadata.conversation_id` either way. Server-side tool calls
appear as `tool-input-available` / `tool-output-available` parts.

A call held for a person's approval is a `tool-approval-request` part (its
`reason` is the question to ask), and the answer ends with `finishReason:
"tool-calls"`. The client answers with `addToolApprovalResponse` and sends its
messages again: the tool parts of the last assistant message in state
`approval-responded` are the decisions, and the resumed run streams on.

`GET …/ui-chat/{id}/stream` is where `useChat({resume: true})` reconnects: the
running turn's parts from its start, then the live ones (the conversation's run,
as `GET /api/conversations/{id}/stream` serves it); 204 when none is in progress.
"""
from __future__ import annotations

import json

from flask import Blueprint, Response, g, request, stream_with_context

from agentd.api.protocols.base import (Adapter, client_thread, followed, refuse_widget_sessions, serve, sse,
                                       state)
from agentd.api.streaming import SSE_HEADERS
from agentd.api.protocols.messages import client_chat
from agentd.api.validation import json_body
from agentd.errors import InvalidRequest
from agentd.store import messages as store
from agentd.vocab import ChatInput

bp = Blueprint("ui_stream", __name__)
bp.before_request(refuse_widget_sessions)
STREAM_HEADER = {"x-vercel-ai-ui-message-stream": "v1"}


def _message(item, i: int) -> dict:
    """A UIMessage as the OpenAI-style dict the history parser takes (text parts kept)."""
    where = f"messages[{i}]"
    if not isinstance(item, dict) or not isinstance(item.get("parts"), list):
        raise InvalidRequest(f"{where}: must be a UIMessage with 'role' and 'parts'")
    texts = [p["text"] for p in item["parts"]
             if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)]
    return {"role": item.get("role"), "content": "".join(texts)}


class UiMessageStream(Adapter):
    """UI message stream parts over one turn."""

    name = "ui-chat"
    channel = "ui"
    headers = STREAM_HEADER

    def decisions(self):
        """The approval responses in the last assistant message (`addToolApprovalResponse`)."""
        messages = self.body.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages else None
        if not isinstance(last, dict) or last.get("role") != "assistant" or not isinstance(last.get("parts"), list):
            return None
        answered = [p["approval"] for p in last["parts"] if isinstance(p, dict) and p.get("state") == "approval-responded"
                    and isinstance(p.get("approval"), dict) and isinstance(p["approval"].get("id"), str)
                    and isinstance(p["approval"].get("approved"), bool)]
        chat_id = self.body.get("id")
        if not answered or not isinstance(chat_id, str):
            return None
        reasons = [a.get("reason") if isinstance(a.get("reason"), str) else None for a in answered]
        return chat_id, [(a["id"], a["approved"], reason) for a, reason in zip(answered, reasons)]

    def chat_input(self) -> ChatInput:
        messages = self.body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("messages: required, a non-empty array of UIMessages")
        chat = client_chat([_message(m, i) for i, m in enumerate(messages)])
        chat_id = self.body.get("id")
        if chat_id is not None and not isinstance(chat_id, str):
            raise InvalidRequest("id: must be a string")
        conversation_id, new_id = client_thread(chat_id, self.agent_id)
        return ChatInput(message=chat.message, stream=True, channel=self.channel, conversation_id=conversation_id,
                         new_conversation_id=new_id, history=[] if conversation_id else chat.history)

    def frames(self, events):
        projection = _Projection()
        for event in events:
            if event is None:
                yield ": ping\n\n"
                continue
            for part in projection.parts(event):
                yield sse(part)
            if event.type in ("done", "error"):
                yield sse("[DONE]")
                return


class _Projection:
    def __init__(self):
        self.text_id: str | None = None
        self.texts = 0
        self.streamed = False

    def parts(self, event) -> list[dict]:
        handler = getattr(self, f"_on_{event.type}", None)
        return handler(event.data) if handler else []

    def _on_start(self, data):
        self.base = f"msg_{data.get('id')}"
        start = {"type": "start", "messageId": self.base, "messageMetadata": {"conversation_id": data["conversation_id"]}}
        if data.get("id") is None:  # a run resuming a paused step: it goes on in the client's message
            del start["messageId"]
        return [start, {"type": "start-step"}]

    def _open_text(self):
        if self.text_id is not None:
            return []
        self.texts += 1
        self.text_id = f"text_{self.texts}"
        return [{"type": "text-start", "id": self.text_id}]

    def _close_text(self):
        if self.text_id is None:
            return []
        closed, self.text_id = self.text_id, None
        return [{"type": "text-end", "id": closed}]

    def _on_delta(self, data):
        if not data["content"]:
            return []
        self.streamed = True
        return [*self._open_text(), {"type": "text-delta", "id": self.text_id, "delta": data["content"]}]

    def _on_tool_call(self, data):
        call = data["tool_call"]
        try:
            arguments = json.loads(call["function"]["arguments"] or "{}")
        except ValueError:
            arguments = call["function"]["arguments"]  # the model's malformed JSON, as it was
        return [*self._close_text(),
                # dynamic: the client has no typed definition of the agent's tools;
                # providerExecuted: the server ran it, so useChat must not run it itself.
                {"type": "tool-input-available", "toolCallId": call["id"], "toolName": call["function"]["name"],
                 "input": arguments, "dynamic": True, "providerExecuted": True}]

    def _on_tool_result(self, data):
        if data.get("is_error"):
            return [{"type": "tool-output-error", "toolCallId": data["tool_call_id"], "dynamic": True,
                     "providerExecuted": True, "errorText": data["content"] or "the tool failed"}]
        return [{"type": "tool-output-available", "toolCallId": data["tool_call_id"], "dynamic": True,
                 "providerExecuted": True, "output": data["content"]}]

    def _on_approval_required(self, data):
        approval = data["approval"]
        return [*self._close_text(), {"type": "tool-approval-request", "approvalId": approval["id"],
                                      "toolCallId": approval["tool_call"]["id"], "reason": approval["message"]}]

    def _on_done(self, data):
        out = []
        content = data["message"].get("content")
        if content and not self.streamed:  # answered without deltas (a replay): the text in one piece
            out += [*self._open_text(), {"type": "text-delta", "id": self.text_id, "delta": content}]
        paused = bool(data.get("approvals"))  # the calls wait for the person's approval responses
        return [*out, *self._close_text(), {"type": "finish-step"},
                {"type": "finish", "finishReason": "tool-calls" if paused else "stop",
                 "messageMetadata": {"usage": data.get("usage")}}]

    def _on_error(self, data):
        error = data["error"]
        return [*self._close_text(), {"type": "error", "errorText": f"{error['code']}: {error['message']}"}]


@bp.post("/api/agents/<agent_id>/ui-chat")
def ui_chat(agent_id):
    body = json_body(request)
    return serve(UiMessageStream(agent_id, body))


@bp.get("/api/agents/<agent_id>/ui-chat/<chat_id>/stream")
def resume(agent_id, chat_id):
    """Reconnect to a running turn of the chat: its parts from the start; 204 when none runs."""
    state().chat.agent(agent_id, g.principal)
    conversation = store.get_owned_conversation(chat_id, g.principal.user_id, agent_id)
    watched = state().runs.watch(conversation.id, store.running(conversation))
    if watched is None:
        return Response(status=204, headers=STREAM_HEADER)
    events = followed(watched[1])
    frames = UiMessageStream(agent_id, {}).frames(events)
    return Response(stream_with_context(frames), mimetype="text/event-stream",
                    headers={**SSE_HEADERS, **STREAM_HEADER})
