"""A fake Gemini server speaking the real generateContent / streamGenerateContent wire format.

Same shape as `openai_server.FakeOpenAI`: `fake.script(Reply(...), ...)`; each
request takes the next reply (or a default echo) and is recorded in
`fake.requests` (bodies), `fake.headers` and `fake.paths` (the model and the
method are in the path).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from werkzeug.wrappers import Request, Response

from tests.fakes.strict import gemini_problem
from tests.fakes.server import ScriptedFake, ScriptedReply, agent_yaml, pieces

_ROUTE = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$")
STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass
class Reply(ScriptedReply):
    fault_at: int = 0
    model: str = "gemini-fake"


def _usage(reply: Reply) -> dict:
    return {"promptTokenCount": reply.usage[0], "candidatesTokenCount": reply.usage[1],
            "totalTokenCount": sum(reply.usage)}


def _call_parts(reply: Reply) -> list[dict]:
    parts = []
    for name, args in reply.tool_calls:
        parts.append({"functionCall": {"name": name,
                                       "args": json.loads(args) if isinstance(args, str) else args}})
    if parts:
        parts[0]["thoughtSignature"] = "sig-fake"  # Gemini signs the first call of a step
    return parts


def _response(parts: list[dict], reply: Reply, finish: bool) -> dict:
    candidate = {"content": {"role": "model", "parts": parts}, "index": 0}
    data = {"candidates": [candidate], "modelVersion": reply.model}
    if finish:
        candidate["finishReason"] = "STOP"
        data["usageMetadata"] = _usage(reply)
    return data


class FakeGemini(ScriptedFake):
    def default_reply(self, body: dict) -> Reply:
        return Reply(content=f"echo: {_last_user_text(body)}")

    # -- the HTTP side -------------------------------------------------------------
    def wsgi(self, environ, start_response):
        request = Request(environ)
        route = _ROUTE.match(request.path)
        if not route or request.method != "POST":
            return _json(_error_body(404), 404)(environ, start_response)
        body = json.loads(request.get_data() or b"{}")
        self.record(request, body)
        problem = gemini_problem(body)
        if problem is not None:  # what the real API answers to an unpaired tool exchange
            return Response(json.dumps(problem), 400, mimetype="application/json")(environ, start_response)
        reply = self.next_reply(body)
        if reply.status != 200:
            return _json(_error_body(reply.status), reply.status, reply.headers)(environ, start_response)
        if route["method"] == "streamGenerateContent":
            if request.args.get("alt") != "sse":
                return _json(_error_body(400), 400)(environ, start_response)
            return Response(self._stream(reply), mimetype="text/event-stream")(environ, start_response)
        if reply.fault in ("garbage", "malformed"):
            return Response("<html>not json</html>", 200, mimetype="text/html")(environ, start_response)
        if reply.fault == "stall":
            self.stopping.wait(30)
        return _json(self._whole(reply))(environ, start_response)

    def _whole(self, reply: Reply) -> dict:
        parts = [{"text": reply.reasoning, "thought": True}] if reply.reasoning else []
        parts += [{"text": reply.content}] if reply.content else []
        return _response(parts + _call_parts(reply), reply, finish=True)

    def _chunks(self, reply: Reply):
        if reply.reasoning:
            yield _response([{"text": reply.reasoning, "thought": True}], reply, finish=False)
        words = pieces(reply.content or "")
        for piece in words[:-1]:
            yield _response([{"text": piece}], reply, finish=False)
        # The last chunk carries the last text, the calls, finishReason and usage together.
        last = [{"text": words[-1]}] if words else []
        yield _response(last + _call_parts(reply), reply, finish=True)

    def _stream(self, reply: Reply):
        finished = False
        try:
            for number, chunk in enumerate(self._chunks(reply)):
                if reply.fault and number == reply.fault_at:
                    yield from self._fault(reply.fault)
                    if reply.fault != "error_event":
                        return
                yield f"data: {json.dumps(chunk)}\r\n\r\n".encode()
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
            finished = True
        finally:
            self.count_stream(finished)

    def _fault(self, fault: str):
        if fault == "malformed":
            yield b"data: {not json\r\n\r\n"
        elif fault == "error_event":
            yield (b'data: {"error": {"code": 500, "message": "Internal error encountered.", '
                   b'"status": "INTERNAL"}}\r\n\r\n')
        elif fault == "stall":
            self.stopping.wait(30)



def _error_body(status: int) -> dict:
    return {"error": {"code": status, "message": "fake failure",
                      "status": STATUS_NAMES.get(status, "UNKNOWN")}}


def _json(payload: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(payload), status, headers=headers or {}, mimetype="application/json")


def _last_user_text(body: dict) -> str:
    for content in reversed(body.get("contents", [])):
        if content.get("role") != "user":
            continue
        texts = [p["text"] for p in content.get("parts", []) if "text" in p]
        if texts:
            return texts[-1]
        if any("inlineData" in p for p in content.get("parts", [])):
            return "image message"
    return ""


def gemini_agent(fake: FakeGemini, **extra) -> str:
    """YAML for an agent on this fake (like conftest.openai_agent); `extra` keys are merged in."""
    return agent_yaml("google", "gemini-fake", fake.url, **extra)
