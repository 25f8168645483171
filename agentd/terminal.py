"""`agentd chat AGENT`: a terminal chat over the streamed API, one conversation across lines.

Each line is one turn, streamed as it comes. The conversation id of the first
`start` event is sent with every later line, so the agent sees the whole
exchange. Ctrl-C during an answer stops it (the server keeps the partial
answer) and returns to the prompt; Ctrl-C or end of input at the prompt quits.
"""
from __future__ import annotations

import json
import os
import re
import sys

import httpx

from agentd.config import Config
from agentd.providers.sse import iter_sse_data


def _events(response: httpx.Response):
    for data in iter_sse_data(response):
        yield json.loads(data)


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
    elif kind == "error":
        out.write(f"\n[error {printable(event['error']['code'])}] {printable(event['error']['message'])}")
    out.flush()


def _refused(response: httpx.Response, out) -> None:
    try:
        error = json.loads(response.read() or b"{}").get("error", {})
    except ValueError:
        error = {"code": "HTTP", "message": response.reason_phrase}
    out.write(f"[{response.status_code} {printable(error.get('code'))}] {printable(error.get('message'))}\n")


def _turn(client: httpx.Client, url: str, headers: dict, body: dict, out) -> str | None:
    """Send one message and print the streamed answer; returns the conversation id."""
    conversation_id = body.get("conversation_id")
    with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            _refused(response, out)
            return conversation_id
        try:
            for event in _events(response):
                if event["type"] == "start":
                    conversation_id = event["conversation_id"]
                _show(event, out)
        except KeyboardInterrupt:
            out.write("\n[stopped]")  # leaving the stream makes the server keep the partial answer
    out.write("\n")
    return conversation_id


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
                conversation_id = _turn(client, f"{base}/api/agents/{agent}/chat", headers, body, out)
            except httpx.TransportError as exc:
                out.write(f"\n[cannot reach {base}: {exc.__class__.__name__}]\n")
                return 1
