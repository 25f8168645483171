"""The response cache: a repeated first question answered from storage, not by the model.

Opt-in per agent with `cache: {ttl: SECONDS}`. Only a conversation's first
message is cached, and only when nothing personal shapes the answer: no
`context`, no images, no system prompt, provider or model override, and no
tool call (tools know the user, so their results may be personal). The key
is the normalised text (case-folded, whitespace collapsed, trailing
punctuation dropped) with the agent's id and fingerprint (a hash of its YAML
file, so editing the agent invalidates its entries), plus `mood` and `web`.

Entries live in the `cache_entry` table, so every process serving the same
database shares them. A hit is served like a fresh answer (the same JSON and
SSE shapes, stored as a normal turn in a new conversation) with `X-Cache: hit`;
it reports zero token usage, since no model was called. The answer cached is
the model's raw text: answer guardrails run again on every hit.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import weakref
from typing import Iterator

from flask import g, has_request_context

from agentd.store import cache as entries
from agentd.vocab import ProviderChunk
from agentd.vocab import Completion, Message, Usage

log = logging.getLogger("agentd.policies.cache")

KEY_PREFIX = "answer:"
TRAILING_PUNCTUATION = " \t\n.,;:!?¿¡…。！？"


def normalise(text: str) -> str:
    """The question as the cache sees it: `What is X?` and `what  is x` are the same."""
    return " ".join(text.casefold().split()).rstrip(TRAILING_PUNCTUATION)


def cacheable(agent, inp) -> bool:
    """Only a first message with nothing personal in it, for an agent that opted in."""
    if not (agent.setting("cache") or {}).get("ttl"):
        return False
    return not (inp.conversation_id or inp.history or inp.context or inp.images
                or inp.system_prompt is not None or inp.provider or inp.model)


def cache_key(agent, inp) -> str:
    parts = [agent.id, agent.fingerprint, normalise(inp.message), inp.mood or "", bool(inp.web)]
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()
    return KEY_PREFIX + digest


def lookup(key: str) -> dict | None:
    return entries.get(key)


def store(key: str, value: dict, ttl: int) -> None:
    """Keep an answer for `ttl` seconds (replacing an older one), and drop expired answers."""
    entries.put(key, value, ttl, KEY_PREFIX)


class CachedCaller:
    """A ModelCaller that answers from a cache entry: the text as deltas, then the completion."""

    from_cache = True  # no model is called: the usage ledger records nothing for it

    def __init__(self, value: dict):
        self.value = value
        self.used = {"provider": value.get("provider"), "name": value.get("model")}

    def __call__(self, request) -> Iterator[ProviderChunk]:
        content = self.value["content"]
        for piece in re.findall(r"\s*\S+\s*", content) or [content]:
            yield ProviderChunk("delta", content=piece)
        message = Message("assistant", content)
        yield ProviderChunk("completion", completion=Completion(message, Usage(), model=self.value.get("model")))


class ResponseCache:
    """`wrap` wraps a run's model caller; `observe` stores its answer (see `agentd.policies`)."""

    def __init__(self):
        self.misses: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # turn -> key

    def wrap(self, turn, caller):
        if not cacheable(turn.agent, turn.inp):
            return None
        key = cache_key(turn.agent, turn.inp)
        try:
            value = lookup(key)
        except Exception:
            log.exception("response cache lookup failed; asking the model")
            value = None
        _mark("hit" if value else "miss")
        if value is None:
            self.misses[turn] = key
            return None
        return CachedCaller(value)

    def observe(self, turn, outcome) -> None:
        key = self.misses.pop(turn, None)
        content = outcome.completion.message.content
        if key is None or not content or turn.cancelled:
            return
        if outcome.rounds:
            # Tools see who is asking (ToolContext.user_id, the conversation): an answer
            # built from their results may be one user's data, never to be served to another.
            return
        value = {"content": content, "provider": turn.caller.used.get("provider"),
                 "model": outcome.completion.model or turn.caller.used.get("name")}
        try:
            store(key, value, int(turn.agent.setting("cache")["ttl"]))
        except Exception:
            log.exception("could not store an answer in the response cache")


def _mark(result: str) -> None:
    """Remember for the response's `X-Cache` header (set by `add_header`)."""
    if has_request_context():
        g.agentd_cache = result


def add_header(response):
    """An after_request hook: `X-Cache: hit|miss` on chat answers of agents that cache."""
    result = g.get("agentd_cache")
    if result:
        response.headers["X-Cache"] = result
    return response
