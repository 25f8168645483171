"""A fake OpenAI-compatible server speaking the real Chat Completions wire format.

Tests script its replies: `fake.script(Reply(...), Reply(...))`. Each request
takes the next reply (or a default echo), and is recorded in `fake.requests`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from werkzeug.wrappers import Request, Response

from tests.fakes.strict import openai_problem
from tests.fakes.server import ScriptedFake, ScriptedReply, pieces


@dataclass
class Reply(ScriptedReply):
    fault_at: int = 2
    model: str = "fake-model"


def _tool_call_list(reply: Reply) -> list[dict]:
    calls = []
    for index, (name, args) in enumerate(reply.tool_calls):
        arguments = args if isinstance(args, str) else json.dumps(args)
        calls.append({"id": f"call_{index + 1}", "type": "function",
                      "function": {"name": name, "arguments": arguments}})
    return calls


class FakeOpenAI(ScriptedFake):
    @property
    def url(self) -> str:
        return self.server.url + "/v1"

    def default_reply(self, body: dict) -> Reply:
        last = next((m for m in reversed(body.get("messages", [])) if m["role"] == "user"), {})
        content = last.get("content")
        return Reply(content=f"echo: {content if isinstance(content, str) else 'image message'}")

    # -- the HTTP side -------------------------------------------------------------
    def wsgi(self, environ, start_response):
        request = Request(environ)
        if request.path != "/v1/chat/completions" or request.method != "POST":
            return Response("not found", 404)(environ, start_response)
        body = json.loads(request.get_data() or b"{}")
        self.record(request, body)
        problem = openai_problem(body)
        if problem is not None:  # what the real API answers to an unpaired tool exchange
            return Response(json.dumps(problem), 400, mimetype="application/json")(environ, start_response)
        reply = self.next_reply(body)
        if reply.status != 200:
            payload = {"error": {"message": "fake failure", "type": "server_error"}}
            return Response(json.dumps(payload), reply.status, headers=reply.headers,
                            mimetype="application/json")(environ, start_response)
        if body.get("stream"):
            return Response(self._stream(reply), mimetype="text/event-stream")(environ, start_response)
        if reply.fault == "garbage":
            return Response("<html>not json</html>", 200, mimetype="text/html")(environ, start_response)
        return Response(json.dumps(self._completion(reply)), mimetype="application/json")(environ, start_response)

    def _completion(self, reply: Reply) -> dict:
        message = {"role": "assistant", "content": reply.content}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        if reply.tool_calls:
            message["tool_calls"] = _tool_call_list(reply)
        return {"id": "chatcmpl-fake", "object": "chat.completion", "model": reply.model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
                "usage": {"prompt_tokens": reply.usage[0], "completion_tokens": reply.usage[1],
                          "total_tokens": sum(reply.usage)}}

    def _chunks(self, reply: Reply):
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": reply.model}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
        if reply.reasoning:
            yield {**base, "choices": [{"index": 0, "delta": {"reasoning_content": reply.reasoning}}]}
        for word in pieces(reply.content or ""):
            yield {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        for index, call in enumerate(_tool_call_list(reply)):
            args = call["function"]["arguments"]
            half = len(args) // 2
            yield {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{
                "index": index, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": args[:half]}}]}}]}
            yield {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{
                "index": index, "function": {"arguments": args[half:]}}]}}]}
        yield {**base, "choices": [{"index": 0, "delta": {},
                                    "finish_reason": "tool_calls" if reply.tool_calls else "stop"}]}
        yield {**base, "choices": [], "usage": {"prompt_tokens": reply.usage[0],
                                                "completion_tokens": reply.usage[1],
                                                "total_tokens": sum(reply.usage)}}

    def _stream(self, reply: Reply):
        finished = False
        try:
            chunks = list(self._chunks(reply))
            for number, chunk in enumerate(chunks):
                if reply.fault and number == reply.fault_at:
                    yield from self._fault(reply.fault)
                    if reply.fault != "error_event":
                        return
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()  # raw UTF-8, as OpenAI sends it
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            self.count_stream(finished)

    def _fault(self, fault: str):
        if fault == "malformed":
            yield b"data: {not json\n\n"
        elif fault == "error_event":
            yield b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
        elif fault == "stall":
            self.stopping.wait(30)

