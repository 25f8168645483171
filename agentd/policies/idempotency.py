"""`Idempotency-Key` for POST /api/agents/{id}/chat (docs/api.md).

A retried request with the same key and body gets the first result (same
message ids) and the provider is called once. The record is claimed by
INSERTING it first: the database's unique key (user_id, key) decides who runs,
so this holds across processes and hosts. Whoever loses the insert reads the
record: another body → 422, still running → 409, finished → the stored answer.

- Keys are scoped per user (two users may use the same key) and expire after
  24 h; an expired record is deleted and the key claimed afresh.
- A request that fails (validation, busy conversation, provider error) drops
  its record, so the client may retry with the same key and really retry.
- A running record older than the turn lease is taken to be from a crashed
  process and is taken over.
- Streamed requests (`"stream": true`) with a key run as usual the first time,
  and the final message is recorded when the run ends, whether or not its
  client is still reading (a run goes on when its client leaves): a retry in
  the meantime gets 409 (the client may attach to the run's stream instead),
  a retry after it gets the answer. A replay answers with a short stream:
  `start` then `done` carrying the stored message. The stream flag is part of
  the body, so a streamed and a non-streamed request never share a record (422).

This is the HTTP side of the feature (it reads the header and wraps the
response); the records are kept by agentd.store.idempotency.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Callable

from flask import Response, current_app, g, jsonify, request

from agentd.errors import ApiError, InvalidRequest
from agentd.store import idempotency as records
from agentd.store.idempotency import abandon, finish

log = logging.getLogger("agentd.policies.idempotency")

HEADER = "Idempotency-Key"
TTL = dt.timedelta(hours=24)
MAX_KEY_CHARS = 255


class IdempotencyInProgress(ApiError):
    status, code = 409, "IDEMPOTENCY_IN_PROGRESS"


class IdempotencyKeyReused(ApiError):
    status, code = 422, "IDEMPOTENCY_KEY_REUSED"


# --- storage ---------------------------------------------------------------------

def body_hash(agent_id: str, body: dict) -> str:
    """A digest of what the request asks for: the agent and the body, key order aside."""
    canonical = json.dumps({"agent_id": agent_id, "body": body}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(user_id: str, key: str, agent_id: str, digest: str, stale_after: dt.timedelta,
          now: dt.datetime | None = None):
    """None when this request now owns the key and must run; the finished record to replay; or 409/422."""
    outcome, record = records.claim(user_id, key, agent_id, digest, TTL, stale_after, now)
    if outcome == records.REUSED:
        raise IdempotencyKeyReused(f"{HEADER}: already used with a different request body")
    if outcome == records.RUNNING:
        raise IdempotencyInProgress(f"{HEADER}: the first request with this key is still running")
    return record


def purge_expired(now: dt.datetime | None = None, force: bool = False) -> int:
    """Delete expired records, at most every few minutes per process (claim() ignores them anyway)."""
    return records.purge_expired(TTL, now, force)


# --- the HTTP side ------------------------------------------------------------------

def valid_key(raw: str) -> str:
    key = raw.strip()
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise InvalidRequest(f"{HEADER}: must be 1 to {MAX_KEY_CHARS} printable characters")
    return key


def _sse(kind: str, data: dict) -> str:
    payload = json.dumps({"type": kind, **data}, ensure_ascii=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {payload}\n\n"


def _replay(record, stream: bool) -> Response:
    message = record.response
    if not stream:
        response = jsonify(message)
        response.status_code = record.status_code or 200
    else:
        start = {"id": message.get("id"), "conversation_id": message.get("conversation_id"),
                 "provider": message.get("provider"), "model": message.get("model")}
        done = {"message": dict(message), "usage": message.get("usage")}
        response = Response([_sse("start", start), _sse("done", done)], mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache, no-transform"})
    response.headers["Idempotent-Replayed"] = "true"
    return response


def expect_run(user_id: str, key: str) -> None:
    """The streamed run this request starts records its answer under `key` (bind_run)."""
    g.idempotency_stream = (user_id, key)


def bind_run(run) -> None:
    """If this request claimed a key for a stream: record the run's answer when it ends.

    The key follows the run, not the connection: a client that leaves mid-stream and
    retries with the same key must not start the turn a second time.
    """
    claimed = g.pop("idempotency_stream", None)
    if claimed is None:
        return
    user_id, key = claimed
    database = current_app.extensions["agentd"].db

    def record(final: dict | None) -> None:
        with database.connection_context():
            finish(user_id, key, final, 200) if final is not None else abandon(user_id, key)
    run.when_ended(record)
    g.idempotency_bound = True


def run_bound() -> bool:
    """True once bind_run gave this request's claim to a run (which then ends it)."""
    g.pop("idempotency_stream", None)
    return bool(g.pop("idempotency_bound", False))


def guard(agent_id: str, body: dict, send: Callable[[], Response]) -> Response:
    """Run `send()` at most once per (user, Idempotency-Key); without the header, just run it."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return send()
    key, user_id = valid_key(raw), g.principal.user_id
    state = current_app.extensions["agentd"]
    purge_expired()
    stale_after = dt.timedelta(seconds=state.config.turn_lease_seconds)
    stream = body.get("stream") is True
    record = claim(user_id, key, agent_id, body_hash(agent_id, body), stale_after)
    if record is not None:
        return _replay(record, stream)
    if stream:
        expect_run(user_id, key)
    try:
        response = send()
    except BaseException:
        run_bound()
        abandon(user_id, key)
        raise
    if stream:
        if not run_bound():  # every streamed turn is a run (bind_run): this only guards that rule
            abandon(user_id, key)
    else:
        finish(user_id, key, response.get_json(), response.status_code)
    return response
