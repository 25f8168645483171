"""The usage ledger: one row per model call, written in the turn's own final transaction.

An `on_event` consumer. Each model call ends with an `assistant_message` (a
tool step) or an `answer` event carrying its `Completion` (usage, duration);
the row is built then and kept in memory. At `start` the ledger asks the
turn's recorder to run one multi-row INSERT inside the transaction that ends
the turn (the answer's, or the failure's): the ledger adds no commit and no
statement outside that transaction.
"""
from __future__ import annotations

import datetime as dt
import logging
import weakref

from agentd.hookspecs import hookimpl
from agentd.operators.pricing import call_cost
from agentd.store import ledger as store

log = logging.getLogger("agentd.ledger")


class UsageLedger:
    """The built-in ledger plugin (registered on the plugin manager by the app factory)."""

    def __init__(self):
        self._rows: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # run -> [row]

    @hookimpl(trylast=True)
    def on_event(self, run, event):
        if event.type == "start":
            rows: list[dict] = []
            self._rows[run] = rows
            run.recorder.at_commit.append(lambda: write_rows(rows))
        elif event.type in ("assistant_message", "answer"):
            rows = self._rows.get(run)
            completion = event.payload if event.type == "assistant_message" else event.payload.completion
            if rows is not None and completion is not None and not getattr(run.caller, "from_cache", False):
                rows.append(ledger_row(run, completion))
        elif event.type == "finish":
            self._rows.pop(run, None)


def ledger_row(run, completion) -> dict:
    """The ledger row of one model call of `run` (a Turn)."""
    provider, model = run.recorder.provider, run.recorder.model
    usage = completion.usage
    principal = run.principal
    return {"created_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),  # when the call ended
            "run_id": getattr(run, "run_id", None),
            "turn_id": getattr(run.conversation, "user_message_id", None),
            "conversation_id": run.conversation_id, "agent_id": run.agent.id,
            "user_id": principal.user_id, "key_id": getattr(principal, "key_id", None),
            "provider": provider, "model": completion.model or model,
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "duration_ms": completion.duration_ms,
            "cost_nanousd": call_cost(run.block, provider, model, completion.model,
                                      usage.prompt_tokens, usage.completion_tokens)}


def write_rows(rows: list[dict]) -> None:
    """Insert the turn's ledger rows gathered since its last commit, in one statement
    (called inside the turn's transaction); nothing when there are none."""
    if not rows:
        return
    store.insert(rows)
    rows.clear()
