"""The `cache_entry` table: answers kept until they expire (agentd.policies.cache decides what)."""
from __future__ import annotations

import datetime as dt

from peewee import EXCLUDED

from agentd.store.models import CacheEntry, utcnow


def get(key: str) -> dict | None:
    """The value stored under `key`, unless it expired."""
    entry = CacheEntry.get_or_none((CacheEntry.key == key) & (CacheEntry.expires_at > utcnow()))
    return entry.value if entry else None


def put(key: str, value: dict, ttl: int, prefix: str) -> None:
    """Keep `value` for `ttl` seconds (replacing an older one), and drop expired entries under `prefix`."""
    now = utcnow()
    (CacheEntry.insert(key=key, value=value, expires_at=now + dt.timedelta(seconds=ttl))
     .on_conflict(conflict_target=[CacheEntry.key],
                  update={CacheEntry.value: EXCLUDED.value, CacheEntry.expires_at: EXCLUDED.expires_at})
     .execute())
    CacheEntry.delete().where((CacheEntry.expires_at <= now) & CacheEntry.key.startswith(prefix)).execute()
