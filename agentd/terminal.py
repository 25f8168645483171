"""`agentd chat AGENT`: a terminal chat over the streamed API, one conversation across lines."""
from __future__ import annotations

import json
import os
import sys

import httpx

from agentd.config import Config


def _events(response: httpx.Response):
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield json.loads(line[5:].strip())


def _turn(client: httpx.Client, url: str, headers: dict, body: dict, out) -> str | None:
    """Send one message and print the streamed answer; returns the conversation id."""
    conversation_id = body.get("conversation_id")
    with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            error = json.loads(response.read() or b"{}").get("error", {})
            out.write(f"[{response.status_code} {error.get('code')}] {error.get('message')}\n")
            return conversation_id
        for event in _events(response):
            kind = event["type"]
            if kind == "start":
                conversation_id = event["conversation_id"]
            elif kind == "delta":
                out.write(event["content"])
            elif kind == "status":
                out.write(f"\n  … {event['message']}\n")
            elif kind == "tool_call":
                out.write(f"\n  [tool {event['tool_call']['function']['name']}]\n")
            elif kind == "error":
                out.write(f"\n[error {event['error']['code']}] {event['error']['message']}")
            out.flush()
    out.write("\n")
    return conversation_id


def chat_loop(agent: str, url: str | None, key: str | None, stdin=None, out=None) -> int:
    stdin, out = stdin or sys.stdin, out or sys.stdout
    config = Config.from_env()
    base = (url or f"http://{config.host}:{config.port}").rstrip("/")
    key = key or os.environ.get("AGENTD_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    conversation_id = None
    with httpx.Client(timeout=httpx.Timeout(None, connect=5.0)) as client:
        while True:
            out.write("you> ")
            out.flush()
            line = stdin.readline()
            if not line:
                return 0
            if not line.strip():
                continue
            body = {"message": line.rstrip("\n"), "stream": True, "conversation_id": conversation_id}
            out.write(f"{agent}> ")
            conversation_id = _turn(client, f"{base}/api/agents/{agent}/chat", headers, body, out)
