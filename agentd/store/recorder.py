"""Storing what a turn produces: assistant rows, tool rows, their final status.

A streamed turn creates its assistant row when the model starts answering, so
the `start` event can name it and a crash leaves a row to mark; text piles up
in memory (no write per delta) and lands when the row is finished. A
non-streamed turn writes all its messages in one transaction at the end.
"""
from __future__ import annotations

import logging
import threading
import time

from agentd.store import messages as store
from agentd.store import prepared
from agentd.store.models import Message, db, utcnow
from agentd.vocab import Completion, ToolResult


AWAITING = "awaiting_approval"  # a tool step whose held calls wait for a person


class TurnRecorder:
    def __init__(self, conversation_id: str, agent_id: str, user_id: str, eager: bool,
                 turn_id: int | None = None):
        self.base = {"conversation": conversation_id, "agent_id": agent_id, "user_id": user_id,
                     "turn_id": turn_id}
        # Callables run inside the transaction that ends the turn (the usage ledger's rows):
        # whatever they write costs no commit of its own.
        self.at_commit: list = []
        self.eager = eager
        self.pending: list[dict] = []
        self.row_id: int | None = None   # the open assistant row (eager mode)
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.provider: str | None = None
        self.model: str | None = None
        self._checkpointed = 0  # how many text pieces the open row holds in the database
        self._opened_at = None   # created_at of the open assistant row
        self.last_row: dict | None = None  # the fields of the last row finished, as stored
        # Calls of the last tool step with no result stored yet: a turn ending now stores
        # `cancelled: <end_reason>` for each, so the history stays valid (agentd.turn.pairing).
        self.open_calls: dict[str, str] = {}
        self.end_reason: str | None = None
        self.step_id: int | None = None   # the last tool step's assistant row
        self._step_fields: dict | None = None

    # -- the open assistant row ----------------------------------------------------
    def open_row(self) -> int | None:
        """Make sure an assistant row exists for the current model call (eager mode)."""
        if self.eager and self.row_id is None:
            self._opened_at = utcnow()
            self.row_id = prepared.insert(Message, {
                "role": "assistant", "status": "streaming", "content": None, "provider": self.provider,
                "model": self.model, "created_at": self._opened_at, **self.base})
        return self.row_id

    def add_text(self, kind: str, content: str) -> None:
        (self.reasoning if kind == "reasoning" else self.text).append(content)

    def partial_text(self) -> str:
        return "".join(self.text)

    def checkpoint(self) -> tuple[int, str] | None:
        """The open row and its text so far, when the text grew since the last checkpoint.

        Called from the lease heartbeat (agentd.turn.liveturns), not per delta: a
        process killed mid-stream loses at most one heartbeat's worth of text.
        """
        pieces = len(self.text)
        if not self.eager or self.row_id is None or pieces == self._checkpointed:
            return None
        self._checkpointed = pieces
        return self.row_id, "".join(self.text[:pieces])

    def _assistant_fields(self, completion: Completion | None, status: str, content=None) -> dict:
        message = completion.message if completion else None
        usage = completion.usage if completion else None
        text = content if content is not None else (message.content if message else self.partial_text())
        return {"role": "assistant", "content": text or None, "status": status,
                "tool_calls": [c.to_dict() for c in message.tool_calls] if message and message.tool_calls else None,
                "reasoning": (message.reasoning if message else None) or ("".join(self.reasoning) or None),
                "provider": self.provider, "model": (completion.model if completion else None) or self.model,
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
                "duration_ms": completion.duration_ms if completion else None}

    def _finish_row(self, fields: dict) -> int:
        """Close the open assistant row (eager) or queue it (buffered); returns its id or 0."""
        self.text, self.reasoning, self._checkpointed = [], [], 0
        if not self.eager:
            self.pending.append(fields)
            return 0
        row_id = self.open_row()
        prepared.update_by_id(Message, row_id, fields)
        self.row_id = None
        self.last_row = as_stored({**self.base, **fields, "id": row_id, "created_at": self._opened_at})
        return row_id

    # -- what the loop reports -------------------------------------------------------
    def tool_step(self, completion: Completion) -> None:
        fields = self._assistant_fields(completion, "complete")
        self.step_id = self._finish_row(fields) or None  # eager: the row's id; buffered: at flush
        self._step_fields = fields
        self.open_calls = {c.id: c.name for c in completion.message.tool_calls or []}

    def tool_result(self, result: ToolResult) -> None:
        # The name and id come from the model: a made-up 300-character name must not fail
        # the insert (PostgreSQL enforces the column's length), so they are cut to fit.
        fields = {"role": "tool", "content": result.content, "tool_call_id": _fit(result.tool_call_id),
                  "name": _fit(result.name), "is_error": result.is_error, "status": "complete",
                  "duration_ms": result.duration_ms}
        self._store_result(fields)
        self.open_calls.pop(result.tool_call_id, None)

    def _store_result(self, fields: dict) -> None:
        if self.eager:
            prepared.insert(Message, {"created_at": utcnow(), **fields, **self.base})
        else:
            self.pending.append(fields)

    def answer(self, completion: Completion, content: str | None, also=None) -> int:
        """Store the final answer; returns its id. `also()` runs in the same transaction."""
        fields = self._assistant_fields(completion, "complete", content=content)
        if self.eager:
            with db.atomic():
                row_id = self._finish_row(fields)
                if also is not None:
                    also()
                self._run_at_commit()
            return row_id
        self.pending.append(fields)
        return self.flush(also)

    def pause(self, also) -> int:
        """Store the last tool step as `awaiting_approval` (its calls held for a person);
        `also(step_id)` runs in the same transaction. Returns the step's row id."""
        self._step_fields["status"] = AWAITING
        if not self.eager:
            self.flush(lambda: also(self.step_id))
            return self.step_id
        with db.atomic():
            prepared.update_by_id(Message, self.step_id, {"status": AWAITING})
            also(self.step_id)
            self._run_at_commit()  # the model calls so far (the usage ledger) commit with the pause
        return self.step_id

    def fail(self, status: str) -> int | None:
        """End the turn as `partial` or `error`, keeping any text already produced.

        With no text, no assistant row is left (docs/api.md: an error turn leaves an
        assistant message only if some content was produced); an eager row opened
        for the `start` event is removed again.
        """
        with db.atomic():  # one commit, the ledger's rows included
            return self._fail(status)

    def _fail(self, status: str) -> int | None:
        self._answer_open_calls()
        text = self.partial_text()
        if not text and self.eager and self.row_id is not None and not self.reasoning:
            Message.delete().where(Message.id == self.row_id).execute()
            self.row_id = None
        if not text and self.row_id is None:
            self.flush()
            return None
        fields = self._assistant_fields(None, status if text else "error", content=text or None)
        if self.eager and self.row_id is not None:
            row_id = self._finish_row(fields)
            self._run_at_commit()
            return row_id
        if text:
            self.pending.append(fields)
        return self.flush() or None

    def _answer_open_calls(self) -> None:
        """Store an error result for each call of the last tool step that has none."""
        calls, self.open_calls = self.open_calls, {}
        for call_id, name in calls.items():
            self._store_result({"role": "tool", "content": missing_text(self.end_reason),
                                "tool_call_id": _fit(call_id), "name": _fit(name), "is_error": True,
                                "status": "complete"})

    def flush(self, also=None) -> int:
        """Write the buffered messages in one transaction; returns the last id.

        `also()` runs in that transaction too (the turn lock's release), so a
        turn's end is one commit.
        """
        last = 0
        if not self.pending:
            if self.at_commit:
                with db.atomic():
                    self._run_at_commit()
            return last
        with db.atomic():
            for fields in self.pending:
                created_at = utcnow()
                last = prepared.insert(Message, {"created_at": created_at, **fields, **self.base})
                if fields is self._step_fields:
                    self.step_id = last
            if also is not None:
                also()
            self._run_at_commit()
        self.last_row = as_stored({**self.base, **fields, "id": last, "created_at": created_at})
        self.pending = []
        return last


    def _run_at_commit(self) -> None:
        # Kept for the turn's later commits: a resumed or multi-commit turn writes what
        # each writer gathered since the previous commit (a writer with nothing writes nothing).
        for write in self.at_commit:
            write()


def _fit(value: str | None, limit: int = 255) -> str | None:
    return value[:limit] if isinstance(value, str) else value


MISSING_REASON = "the turn ended before this tool call returned"


def missing_text(reason: str | None = None) -> str:
    """The content of the error result stored for a tool call that never returned."""
    return f"cancelled: {reason or MISSING_REASON}"


def as_stored(values: dict) -> dict:
    """Message field values as a read of the row would return them (each field's db_value,
    then python_value), so a row just written need not be read back."""
    fields = Message._meta.fields
    return {name: fields[name].python_value(fields[name].db_value(value)) for name, value in values.items()}


def save_checkpoints(rows: list[tuple[int, str]]) -> None:
    """Store streaming rows' text so far in one transaction; finished rows are left alone."""
    with db.atomic():
        for row_id, text in rows:
            (Message.update(content=text)
             .where((Message.id == row_id) & (Message.status == store.UNFINISHED)).execute())


# -- rows a dead process left behind ---------------------------------------------------
log = logging.getLogger("agentd.recovery")


def recover_unfinished(database) -> int:
    """Mark rows a crashed run left `streaming` (start-up); returns how many.

    A row whose conversation still holds an unexpired lease may belong to a
    live turn in another process, so it is left alone now; a background thread
    looks again when that lease runs out (live turns renew theirs, a dead
    process's does not), until no such row remains.
    """
    with database.connection_context():
        recovered = store.mark_unfinished()
        pending = store.unfinished_lease_expiry()
    if recovered:
        log.warning("marked %d message(s) left unfinished by a previous run", recovered)
    if pending is not None:
        threading.Thread(target=_recover_later, args=(database,), daemon=True,
                         name="agentd-recovery").start()
    return recovered


def _recover_later(database) -> None:
    while True:
        try:
            with database.connection_context():
                expiry = store.unfinished_lease_expiry()
                if expiry is None:
                    return
                wait = (expiry - utcnow()).total_seconds()
                if wait <= 0:
                    recovered = store.mark_unfinished()
                    if recovered:
                        log.warning("marked %d message(s) whose turn lease ran out", recovered)
        except Exception:  # noqa: BLE001 — the database may be briefly away; try again later
            log.exception("recovering unfinished messages failed")
            wait = 5.0
        time.sleep(min(max(wait, 0.0) + 0.2, 60.0))
