"""Conversation titles written by a model (`model.title_model` in the agent's YAML).

A new conversation is first titled from its first message (chat service).
When the agent names a `title_model`, that model is asked for a short title
once the first turn has answered. It runs in a background thread, off the
response's path; any failure keeps the first-message title, and a title set
by the user in the meantime (PATCH) is never overwritten.
"""
from __future__ import annotations

import logging
import threading

from agentd.hookspecs import hookimpl
from agentd.turn.prompting import title_from
from agentd.providers.router import model_chain
from agentd.store.conversations import set_title_if
from agentd.vocab import Message, ModelRequest

log = logging.getLogger("agentd.turn.titles")

TITLE_CHARS = 80
PROMPT = ("Write a short title (at most six words) for the conversation below. "
          "Answer with the title only: no quotes, no full stop.")
_STRIP = " \t\"'`*#“”‘’«»"


def title_block(model: dict) -> dict | None:
    """The model block for titles; a title model on the agent's provider inherits its connection."""
    wanted = model.get("title_model")
    if not wanted:
        return None
    primary = model_chain(model)[0]
    base = primary if wanted.get("provider") == primary.get("provider") else {}
    return {**base, **wanted, "fallbacks": []}


def clean_title(text: str | None) -> str | None:
    """The model's answer as a title: first non-empty line, no quotes or label, cut at a word."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[0]
    if line.lower().startswith("title:"):
        line = line[6:]
    line = line.strip(_STRIP).rstrip(".").strip(_STRIP)
    return title_from(line, TITLE_CHARS) if line else None


def ask_title(router, block: dict, question: str, answer: str | None) -> str | None:
    """One non-streamed call to the title model; None when it fails or says nothing."""
    transcript = f"User: {question[:2000]}\n\nAssistant: {(answer or '')[:2000]}"
    request = ModelRequest(model=block.get("name", ""), messages=[Message("user", transcript)],
                           system=PROMPT, temperature=block.get("temperature", 0.2),
                           max_tokens=block.get("max_tokens", 32))
    text = None
    for chunk in router.caller(block, stream=False)(request):
        if chunk.type == "completion" and chunk.completion is not None:
            text = chunk.completion.message.content
    return clean_title(text)


def _retitle(state, block: dict, conversation_id: str, first_title: str | None,
             question: str, answer: str | None) -> None:
    try:
        with state.db.connection_context():
            title = ask_title(state.router, block, question, answer)
            if title and title != first_title:
                set_title_if(conversation_id, first_title, title)
    except Exception:  # a title is a nicety: never let it disturb anything else
        log.warning("title model failed for %s; keeping the first-message title", conversation_id,
                    exc_info=True)


def title_observer(turn, outcome) -> None:
    """After the first turn of a new, auto-titled conversation, ask the title model."""
    if turn.inp.conversation_id is not None or not turn.inp.auto_title:
        return
    block = title_block(turn.agent.model)
    if block is None:
        return
    answer = outcome.completion.message.content if outcome and outcome.completion else None
    args = (turn.service.state, block, turn.conversation.id, turn.conversation.title, turn.inp.message, answer)
    threading.Thread(target=_retitle, args=args, daemon=True, name="agentd-title").start()


class TitlesPlugin:
    """Model titles as a plugin: after a run's answer, maybe ask the title model."""

    @hookimpl(trylast=True)
    def on_event(self, run, event):
        if event.type == "done":
            title_observer(run, run.outcome)


def install(state) -> None:
    """Register model titles on the app's plugin manager (called by the app factory)."""
    state.registry.manager.register(TitlesPlugin(), name="agentd.titles")
