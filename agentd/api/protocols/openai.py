"""The OpenAI-compatible API: `GET /v1/models`, `POST /v1/chat/completions` (model = agent id).

The agent's own system prompt and tools run server-side; a client only ever
sees the final answer (tool steps are stored, never streamed as `tool_calls`,
which an OpenAI client would try to run itself). Without `X-Conversation-Id`
each request starts a conversation (channel `openai`) whose history is the
client's earlier messages; with it, the stored conversation continues and
only the last user message is new. Errors take OpenAI's shape (`openai_error`).
"""
from __future__ import annotations

import json

from flask import Blueprint, g, jsonify, request

from agentd.api.protocols.base import Adapter, error_of, now, refuse_widget_sessions, serve, sse, state
from agentd.api.protocols.messages import client_chat
from agentd.api.validation import json_body
from agentd.errors import InvalidRequest
from agentd.vocab import ChatInput

bp = Blueprint("openai", __name__)
bp.before_request(refuse_widget_sessions)
CONVERSATION_HEADER = "X-Conversation-Id"

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
                413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error(code: str, message: str, status: int) -> dict:
    """agentd's error as OpenAI's `{"error": {"message", "type", "code", "param"}}`."""
    return {"error": {"message": message, "type": error_type(status), "code": code, "param": None}}


def reshape_errors(response):
    """after_request for /v1/…: every agentd error body in OpenAI's shape, status kept."""
    if not request.path.startswith("/v1/") or response.status_code < 400 or not response.is_json:
        return response
    body = response.get_json(silent=True) or {}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "type" not in error:
        response.set_data(json.dumps(openai_error(error.get("code"), error.get("message"),
                                                  response.status_code)))
    return response


def flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name}: must be true or false")
    return value


def model_field(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: required, the id of an agent (GET /v1/models lists them)")
    return model


def conversation_header() -> str | None:
    value = request.headers.get(CONVERSATION_HEADER, "").strip()
    return value or None


class ChatCompletions(Adapter):
    """`chat.completion` / `chat.completion.chunk` over one turn."""

    name = "openai.chat"
    channel = "openai"

    def chat_input(self) -> ChatInput:
        body = self.body
        stream = flag(body, "stream")
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise InvalidRequest("stream_options: must be an object")
        self.include_usage = bool((options or {}).get("include_usage"))
        chat = client_chat(body.get("messages"))
        conversation_id = conversation_header()
        agent = state().chat.agent(self.agent_id, g.principal)
        system = chat.system if agent.setting("allow_system_prompt_override") else None
        return ChatInput(message=chat.message, images=chat.images, stream=stream, channel=self.channel,
                         conversation_id=conversation_id, system_prompt=system,
                         history=[] if conversation_id else chat.history)

    def response_headers(self, conversation_id: str) -> dict:
        return {CONVERSATION_HEADER: conversation_id}

    def answer(self, final: dict) -> dict:
        return {"id": f"chatcmpl-{final['id']}", "object": "chat.completion", "created": now(),
                "model": self.agent_id, "system_fingerprint": None,
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": final.get("content") or "",
                                         "refusal": None}}],
                "usage": final.get("usage")}

    def _chunk(self, ident: str, delta: dict, finish=None) -> dict:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": now(), "model": self.agent_id,
                 "system_fingerprint": None,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def frames(self, events):
        ident, streamed = "chatcmpl-0", False
        for event in events:
            if event is None:
                yield ": ping\n\n"
            elif event.type == "start":
                ident = f"chatcmpl-{event.data.get('id')}"
                yield sse(self._chunk(ident, {"role": "assistant", "content": ""}))
            elif event.type == "delta":
                streamed = True
                yield sse(self._chunk(ident, {"content": event.data["content"]}))
            elif event.type == "done":
                yield from self._end(ident, event.data, streamed)
                return
            elif event.type == "error":
                exc = error_of(event)
                yield sse(openai_error(exc.code, exc.message, exc.status))
                yield sse("[DONE]")
                return

    def _end(self, ident: str, done: dict, streamed: bool):
        content = done["message"].get("content")
        if content and not streamed:  # answered without deltas (a replay): the text in one piece
            yield sse(self._chunk(ident, {"content": content}))
        yield sse(self._chunk(ident, {}, finish="stop"))
        if self.include_usage:
            yield sse({"id": ident, "object": "chat.completion.chunk", "created": now(),
                       "model": self.agent_id, "system_fingerprint": None, "choices": [],
                       "usage": done.get("usage")})
        yield sse("[DONE]")


@bp.get("/v1/models")
def list_models():
    allowed = g.principal.agents
    created = now()
    return jsonify({"object": "list", "data": [
        {"id": agent.id, "object": "model", "created": created, "owned_by": "agentd"}
        for agent in state().agents.values() if allowed is None or agent.id in allowed]})


@bp.get("/v1/models/<model>")
def get_model(model):
    agent = state().chat.agent(model, g.principal)
    return jsonify({"id": agent.id, "object": "model", "created": now(), "owned_by": "agentd"})


@bp.post("/v1/chat/completions")
def chat_completions():
    body = json_body(request)
    return serve(ChatCompletions(model_field(body), body))
