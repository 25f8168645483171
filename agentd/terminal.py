"""`agentd chat AGENT`: a terminal chat over the streamed API, one conversation across lines.

Each line is one turn, streamed as it comes. The conversation id of the first
`start` event is sent with every later line, so the agent sees the whole
exchange. A connection dropped mid-answer is picked up again: the run goes on
on the server, and the client re-attaches (`GET /api/conversations/{id}/stream`
with the last event id it saw) and prints the rest. Ctrl-C during an answer
cancels the run (the server keeps the partial answer) and returns to the
prompt; Ctrl-C or end of input at the prompt quits. A tool call that needs a
person's approval is asked about (y/N, or a reason to deny it); the decision
resumes the answer, which is printed as it streams.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time

import httpx

from httpx_sse import EventSource, SSEError

from agentd.config import Config

REATTACH_TRIES = 5


class _Stream:
    """The events of one turn's stream, remembering the last event id seen."""

    def __init__(self):
        self.last_id: str | None = None
        self.conversation_id: str | None = None
        self.ended = False
        self.reattached = None  # the response of the last re-attach, closed when done
        self.approvals: list[dict] = []  # calls the run paused on, to ask about

    def events(self, response: httpx.Response):
        for sse in EventSource(response).iter_sse():
            if not sse.data:
                continue
            event = json.loads(sse.data)
            self.last_id = sse.id or self.last_id
            if event["type"] == "start":
                self.conversation_id = event["conversation_id"]
            elif event["type"] == "approval_required":
                self.approvals.append(event["approval"])
            self.ended = event["type"] in ("done", "error")
            yield event


# C0 controls but tab and newline, DEL, and C1 controls (U+009B is a one-character CSI).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text) -> str:
    """Text safe for a terminal: control characters shown as `\\x1b`, never obeyed.

    Model output (and what a web page put into it) could otherwise move the cursor,
    rewrite earlier lines, set the window title or, on some terminals, answer back.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text).replace("\r\n", "\n"))


def _show(event: dict, out) -> None:
    kind = event["type"]
    if kind == "delta":
        out.write(printable(event["content"]))
    elif kind == "status":
        out.write(f"\n  … {printable(event['message'])}\n")
    elif kind == "tool_call":
        out.write(f"\n  [tool {printable(event['tool_call']['function']['name'])}]\n")
    elif kind == "approval_required":
        out.write(f"\n  [waiting for approval: {printable(event['approval']['tool_call']['function']['name'])}]")
    elif kind == "error":
        out.write(f"\n[error {printable(event['error']['code'])}] {printable(event['error']['message'])}")
    out.flush()


def _refused(response: httpx.Response, out) -> None:
    try:
        error = json.loads(response.read() or b"{}").get("error", {})
    except ValueError:
        error = {"code": "HTTP", "message": response.reason_phrase}
    out.write(f"[{response.status_code} {printable(error.get('code'))}] {printable(error.get('message'))}\n")


def _turn(client: httpx.Client, base: str, agent: str, headers: dict, body: dict, out,
          stdin=None) -> str | None:
    """Send one message and print the streamed answer; returns the conversation id."""
    stream = _Stream()
    stream.conversation_id = body.get("conversation_id")
    try:
        with client.stream("POST", f"{base}/api/agents/{agent}/chat", json=body, headers=headers) as response:
            if response.status_code != 200:
                _refused(response, out)
                return stream.conversation_id
            _follow(client, base, headers, stream, response, out)
        _decide_all(client, base, agent, headers, stream, stdin or sys.stdin, out)
    except KeyboardInterrupt:
        _cancel(client, base, headers, stream, out)
    out.write("\n")
    return stream.conversation_id


def _decide_all(client, base, agent, headers, stream: _Stream, stdin, out) -> None:
    """Ask about each call the run paused on; the step's last decision resumes the answer here
    (which may pause again)."""
    while stream.approvals:
        approvals, stream.approvals = stream.approvals, []
        for approval in approvals:
            line = _prompt(stdin, out, f"\n  approve? {printable(approval['message'])} [y/N, or a reason to deny] ")
            answer = (line or "").strip()
            body = {"decision": "approve" if answer.lower() in ("y", "yes") else "deny", "stream": True}
            if body["decision"] == "deny" and answer.lower() not in ("", "n", "no"):
                body["reason"] = answer
            path = f"{base}/api/conversations/{stream.conversation_id}/approvals/{approval['id']}"
            with client.stream("POST", path, json=body, headers=headers) as response:
                if response.status_code == 202:
                    continue  # other calls of the step still wait for an answer
                if response.status_code != 200:
                    _refused(response, out)
                    return
                out.write(f"{agent}> ")
                _follow(client, base, headers, stream, response, out)


def _follow(client, base, headers, stream: _Stream, response, out) -> None:
    """Print the stream; when the connection drops before the end, re-attach and go on."""
    try:
        _follow_all(client, base, headers, stream, response, out)
    finally:
        if stream.reattached not in (None, RETRY):
            stream.reattached.close()


def _follow_all(client, base, headers, stream: _Stream, response, out) -> None:
    for attempt in range(REATTACH_TRIES + 1):
        try:
            if response is not RETRY:
                for event in stream.events(response):
                    _show(event, out)
            if stream.ended:
                return
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout, SSEError):
            if stream.conversation_id is None:
                raise
        if attempt == REATTACH_TRIES:
            break
        time.sleep(min(0.5 * 2 ** attempt, 4.0))
        if stream.reattached not in (None, RETRY):
            stream.reattached.close()
        response = stream.reattached = _reattach(client, base, headers, stream)
        if response is None:  # nothing runs any more, and its events are no longer kept
            out.write("\n[the answer ended while the connection was down; it is in the history]")
            return
    out.write("\n[the connection was lost; the answer goes on on the server]")


def _reattach(client, base, headers, stream: _Stream):
    """The run's stream again, after the last event seen; None when nothing runs (204)."""
    resume = {**headers, "Last-Event-ID": stream.last_id} if stream.last_id else headers
    try:
        request = client.build_request("GET", f"{base}/api/conversations/{stream.conversation_id}/stream",
                                       headers=resume)
        response = client.send(request, stream=True)
    except httpx.TransportError:
        return RETRY
    if response.status_code == 204:
        response.close()
        return None
    return response


RETRY = object()  # the server could not be reached to re-attach: try again after a pause


def _cancel(client, base, headers, stream: _Stream, out) -> None:
    """Ctrl-C during an answer: the run stops on the server, which keeps the partial answer."""
    out.write("\n[stopped]")
    if stream.conversation_id is None or stream.ended:
        return
    try:
        client.post(f"{base}/api/conversations/{stream.conversation_id}/cancel", headers=headers)
    except httpx.TransportError:
        pass


def _prompt(stdin, out, label: str) -> str | None:
    out.write(label)
    out.flush()
    try:
        line = stdin.readline()
    except KeyboardInterrupt:
        return None
    return line or None


def chat_loop(agent: str, url: str | None, key: str | None, stdin=None, out=None) -> int:
    stdin, out = stdin or sys.stdin, out or sys.stdout
    config = Config.from_env()
    base = (url or f"http://{config.host}:{config.port}").rstrip("/")
    key = key or os.environ.get("AGENTD_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    conversation_id = None
    with httpx.Client(timeout=httpx.Timeout(None, connect=5.0)) as client:
        while True:
            line = _prompt(stdin, out, "you> ")
            if line is None:
                out.write("\n")
                return 0
            if not line.strip():
                continue
            body = {"message": line.rstrip("\n"), "stream": True}
            if conversation_id:
                body["conversation_id"] = conversation_id
            out.write(f"{agent}> ")
            try:
                conversation_id = _turn(client, base, agent, headers, body, out, stdin)
            except httpx.TransportError as exc:
                out.write(f"\n[cannot reach {base}: {exc.__class__.__name__}]\n")
                return 1
