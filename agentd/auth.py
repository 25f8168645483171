"""API keys and who a request comes from.

Keys are random, shown once and stored only as a SHA-256 hash (they carry 256
bits of entropy, so a slow hash would add nothing). With no key at all the
server is in open local mode: everyone is user `local`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import weakref

from agentd.vocab import Principal
from agentd.errors import InvalidRequest, Unauthorized
from agentd.store.models import ApiKey, db, utcnow

KEY_PREFIX = "agd_"
LAST_USED_EVERY = dt.timedelta(minutes=1)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(user_id: str, agents: list[str] | None = None) -> tuple[ApiKey, str]:
    """A new key for `user_id` (optionally limited to some agents); returns the row and the key."""
    if not user_id or not user_id.strip():
        raise InvalidRequest("user: must not be empty")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.create(id=secrets.token_hex(6), user_id=user_id.strip(), key_hash=hash_key(key),
                        agents=list(agents) if agents else None)
    return row, key


def list_keys() -> list[ApiKey]:
    return list(ApiKey.select().order_by(ApiKey.created_at))


def revoke_key(key_id: str) -> bool:
    return bool(ApiKey.update(revoked_at=utcnow()).where(
        (ApiKey.id == key_id) & ApiKey.revoked_at.is_null()).execute())


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


def _refused() -> Unauthorized:
    # One message and one header for every reason (missing, malformed, unknown,
    # revoked): the body must not help anyone tell a revoked key from a wrong one.
    return Unauthorized("A valid API key is required", headers={"WWW-Authenticate": "Bearer"})


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


def principal_for_key(key: str) -> Principal:
    """The principal of a bearer key; 401 with no detail for anything wrong."""
    digest = hash_key(key)
    row = ApiKey.get_or_none(ApiKey.key_hash == digest)
    # The lookup is by hash; compare again in constant time so timing says nothing.
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        raise _refused()
    touch(row)
    return Principal(user_id=row.user_id, agents=row.agents, kind="key")


def bearer_principal(authorization: str | None, open_mode: bool) -> Principal:
    """Resolve `Authorization: Bearer …`; in open local mode, everyone is `local`."""
    if open_mode:
        return Principal(user_id="local", kind="local")
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise _refused()
    return principal_for_key(credential.strip())
