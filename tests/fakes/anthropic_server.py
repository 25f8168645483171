"""A fake Anthropic server speaking the real Messages API wire format (plain and SSE).

Same shape as `openai_server.FakeOpenAI`: `fake.script(Reply(...), ...)`; each
request takes the next reply (or a default echo) and is recorded in
`fake.requests` (bodies), `fake.headers` and `fake.paths`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from werkzeug.wrappers import Request, Response

from tests.fakes.strict import anthropic_problem
from tests.fakes.server import ScriptedFake, ScriptedReply, agent_yaml, pieces


@dataclass
class Reply(ScriptedReply):
    fault_at: int = 2
    model: str = "claude-fake"


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
               500: "api_error", 529: "overloaded_error"}


def _blocks(reply: Reply) -> list[dict]:
    blocks = []
    if reply.reasoning:
        blocks.append({"type": "thinking", "thinking": reply.reasoning, "signature": "sig-fake"})
    if reply.content:
        blocks.append({"type": "text", "text": reply.content})
    for index, (name, args) in enumerate(reply.tool_calls):
        value = json.loads(args) if isinstance(args, str) else args
        blocks.append({"type": "tool_use", "id": f"toolu_{index + 1}", "name": name, "input": value})
    return blocks


def _block_events(index: int, block: dict):
    kind = block["type"]
    start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}} \
        if kind == "tool_use" else {"type": kind, kind: ""}
    yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
    if kind == "tool_use":
        args = json.dumps(block["input"])
        half = len(args) // 2
        for piece in (args[:half], args[half:]):
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "input_json_delta", "partial_json": piece}}
    else:
        delta_type = "thinking_delta" if kind == "thinking" else "text_delta"
        for piece in pieces(block[kind]):
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": delta_type, kind: piece}}
        if kind == "thinking":
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "signature_delta", "signature": block["signature"]}}
    yield "content_block_stop", {"type": "content_block_stop", "index": index}


class FakeAnthropic(ScriptedFake):
    def default_reply(self, body: dict) -> Reply:
        return Reply(content=f"echo: {_last_user_text(body)}")

    # -- the HTTP side -------------------------------------------------------------
    def wsgi(self, environ, start_response):
        request = Request(environ)
        if request.path != "/v1/messages" or request.method != "POST":
            return Response("not found", 404)(environ, start_response)
        body = json.loads(request.get_data() or b"{}")
        self.record(request, body)
        problem = anthropic_problem(body)
        if problem is not None:  # what the real API answers to an unpaired tool exchange
            return Response(json.dumps(problem), 400, mimetype="application/json")(environ, start_response)
        reply = self.next_reply(body)
        if reply.status != 200:
            return _json(_error_body(reply.status), reply.status, reply.headers)(environ, start_response)
        if body.get("stream"):
            return Response(self._stream(reply), mimetype="text/event-stream")(environ, start_response)
        if reply.fault in ("garbage", "malformed"):
            return Response("<html>not json</html>", 200, mimetype="text/html")(environ, start_response)
        if reply.fault == "stall":
            self.stopping.wait(30)
        return _json(self._message(reply))(environ, start_response)

    def _message(self, reply: Reply) -> dict:
        return {"id": "msg_fake", "type": "message", "role": "assistant", "model": reply.model,
                "content": _blocks(reply), "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": reply.usage[0], "output_tokens": reply.usage[1]}}

    def _events(self, reply: Reply):
        start = {**self._message(reply), "content": [], "stop_reason": None,
                 "usage": {"input_tokens": reply.usage[0], "output_tokens": 1}}
        yield "message_start", {"type": "message_start", "message": start}
        yield "ping", {"type": "ping"}
        for index, block in enumerate(_blocks(reply)):
            yield from _block_events(index, block)
        yield "message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": "tool_use" if reply.tool_calls else "end_turn",
                                          "stop_sequence": None},
                                "usage": {"output_tokens": reply.usage[1]}}
        yield "message_stop", {"type": "message_stop"}

    def _stream(self, reply: Reply):
        finished = False
        try:
            for number, (name, data) in enumerate(self._events(reply)):
                if reply.fault and number == reply.fault_at:
                    yield from self._fault(reply.fault)
                    if reply.fault != "error_event":
                        return
                yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
            finished = True
        finally:
            self.count_stream(finished)

    def _fault(self, fault: str):
        if fault == "malformed":
            yield b"event: content_block_delta\ndata: {not json\n\n"
        elif fault == "error_event":
            yield (b'event: error\ndata: {"type": "error", "error": '
                   b'{"type": "overloaded_error", "message": "Overloaded"}}\n\n')
        elif fault == "stall":
            self.stopping.wait(30)



def _error_body(status: int) -> dict:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"),
                                       "message": "fake failure"}}


def _json(payload: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(payload), status, headers=headers or {}, mimetype="application/json")


def _last_user_text(body: dict) -> str:
    for message in reversed(body.get("messages", [])):
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        return texts[-1] if texts else "image message"
    return ""



def anthropic_agent(fake: FakeAnthropic, **extra) -> str:
    """YAML for an agent on this fake (like conftest.openai_agent); `extra` keys are merged in."""
    return agent_yaml("anthropic", "claude-fake", fake.url, **extra)
