"""The `idempotency_record` table: who owns an `Idempotency-Key`, and the answer to replay.

A key is claimed by INSERTING its record first: the database's unique key
(user_id, key) decides who runs, so this holds across processes and hosts.
agentd.policies.idempotency is the HTTP side and turns the outcomes into answers.
"""
from __future__ import annotations

import datetime as dt
import threading

import peewee as pw

from agentd.store.models import IdempotencyRecord, db, utcnow

PURGE_EVERY = dt.timedelta(minutes=10)

CLAIMED, DONE, REUSED, RUNNING = "claimed", "done", "reused", "running"


def _record(user_id: str, key: str):
    return (IdempotencyRecord.user_id == user_id) & (IdempotencyRecord.key == key)


def _insert(user_id: str, key: str, agent_id: str, digest: str, now: dt.datetime) -> bool:
    try:
        with db.atomic():  # a failed insert must not poison an outer transaction (PostgreSQL)
            IdempotencyRecord.insert(key=key, user_id=user_id, agent_id=agent_id, body_hash=digest,
                                     status="running", created_at=now).execute()
        return True
    except pw.IntegrityError:
        return False


def _outdated(record: IdempotencyRecord, now: dt.datetime, ttl: dt.timedelta, stale_after: dt.timedelta) -> bool:
    if record.created_at <= now - ttl:
        return True
    return record.status == "running" and record.created_at <= now - stale_after


def claim(user_id: str, key: str, agent_id: str, digest: str, ttl: dt.timedelta, stale_after: dt.timedelta,
          now: dt.datetime | None = None) -> tuple[str, IdempotencyRecord | None]:
    """(CLAIMED, None) when this request now owns the key and must run; (DONE, record) to replay;
    (REUSED, record) when the key came with another body; RUNNING while the first request runs.

    A record older than `ttl`, or still running after `stale_after` (a crashed
    process), is deleted and the key claimed afresh.
    """
    now = now or utcnow()
    for _ in range(3):
        if _insert(user_id, key, agent_id, digest, now):
            return CLAIMED, None
        record = IdempotencyRecord.get_or_none(_record(user_id, key))
        if record is None:
            continue  # deleted between our insert and our read: try again
        if _outdated(record, now, ttl, stale_after):
            # Only the exact row we judged: a concurrent taker's fresh row survives.
            IdempotencyRecord.delete().where(_record(user_id, key)
                                             & (IdempotencyRecord.created_at == record.created_at)).execute()
            continue
        if record.body_hash != digest:
            return REUSED, record
        if record.status != "done":
            return RUNNING, record
        return DONE, record
    return RUNNING, None


def finish(user_id: str, key: str, response: dict, status_code: int) -> None:
    (IdempotencyRecord.update(status="done", response=response, status_code=status_code)
     .where(_record(user_id, key) & (IdempotencyRecord.status == "running")).execute())


def abandon(user_id: str, key: str) -> None:
    """Forget a claim whose request failed, so a retry with the same key runs again."""
    IdempotencyRecord.delete().where(_record(user_id, key) & (IdempotencyRecord.status == "running")).execute()


_last_purge: list[dt.datetime] = []
_purge_lock = threading.Lock()


def purge_expired(ttl: dt.timedelta, now: dt.datetime | None = None, force: bool = False) -> int:
    """Delete records older than `ttl`, at most every PURGE_EVERY per process (claim() ignores them anyway)."""
    now = now or utcnow()
    with _purge_lock:
        if not force and _last_purge and _last_purge[0] > now - PURGE_EVERY:
            return 0
        _last_purge[:] = [now]
    return IdempotencyRecord.delete().where(IdempotencyRecord.created_at <= now - ttl).execute()
