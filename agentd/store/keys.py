"""The `api_key` table: keys stored as hashes, revoked but never deleted (agentd.auth uses it)."""
from __future__ import annotations

import datetime as dt
import weakref

from agentd.store.models import ApiKey, db, utcnow

LAST_USED_EVERY = dt.timedelta(minutes=1)


def create(key_id: str, user_id: str, key_hash: str, agents: list[str] | None, admin: bool = False) -> ApiKey:
    return ApiKey.create(id=key_id, user_id=user_id, key_hash=key_hash, agents=agents, is_admin=admin)


def all_keys() -> list[ApiKey]:
    return list(ApiKey.select().order_by(ApiKey.created_at))


def revoke(key_id: str) -> bool:
    return bool(ApiKey.update(revoked_at=utcnow()).where(
        (ApiKey.id == key_id) & ApiKey.revoked_at.is_null()).execute())


def by_hash(key_hash: str) -> ApiKey | None:
    return ApiKey.get_or_none(ApiKey.key_hash == key_hash)


# Databases known to hold a key. Keys are never deleted (only revoked), so once
# a database has one it always will: the answer is cached for the process's
# life and the query leaves the per-request path. "No key" is never cached, so
# `agentd keys create` in another process ends open mode on the next request.
_databases_with_keys: "weakref.WeakSet" = weakref.WeakSet()
_ANY_KEY_SQL = f'SELECT 1 FROM "{ApiKey._meta.table_name}" LIMIT 1'


def any_key_exists() -> bool:
    database = db.obj
    if database is not None and database in _databases_with_keys:
        return True
    # Plain SQL: in open mode this runs on every request, and peewee's query
    # builder costs several times the query itself.
    if db.execute_sql(_ANY_KEY_SQL).fetchone() is None:
        return False
    if database is not None:
        _databases_with_keys.add(database)
    return True


def touch(row: ApiKey, now: dt.datetime | None = None) -> bool:
    """Stamp `last_used_at`, at most once a minute per key, so requests are not each a write."""
    now = now or utcnow()
    cutoff = now - LAST_USED_EVERY
    if row.last_used_at is not None and row.last_used_at > cutoff:
        return False  # decided from the row already read: no query at all
    # Conditional, so processes racing on the same key write once between them.
    return bool(ApiKey.update(last_used_at=now).where(
        (ApiKey.id == row.id) & (ApiKey.last_used_at.is_null() | (ApiKey.last_used_at <= cutoff)))
        .execute())
