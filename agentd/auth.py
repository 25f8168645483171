"""API keys and who a request comes from.

Keys are random, shown once and stored only as a SHA-256 hash (they carry 256
bits of entropy, so a slow hash would add nothing). With no key at all the
server is in open local mode: everyone is user `local`.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from agentd.vocab import Principal
from agentd.errors import InvalidRequest, Unauthorized
from agentd.store import keys
from agentd.store.keys import any_key_exists, touch  # noqa: F401 — part of this module's API

KEY_PREFIX = "agd_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(user_id: str, agents: list[str] | None = None, admin: bool = False) -> tuple[object, str]:
    """A new key for `user_id` (optionally limited to some agents, or an admin key); returns
    the row and the key."""
    if not user_id or not user_id.strip():
        raise InvalidRequest("user: must not be empty")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = keys.create(secrets.token_hex(6), user_id.strip(), hash_key(key), list(agents) if agents else None,
                      admin=bool(admin))
    return row, key


def list_keys() -> list:
    return keys.all_keys()


def revoke_key(key_id: str) -> bool:
    return keys.revoke(key_id)


def _refused() -> Unauthorized:
    # One message and one header for every reason (missing, malformed, unknown,
    # revoked): the body must not help anyone tell a revoked key from a wrong one.
    return Unauthorized("A valid API key is required", headers={"WWW-Authenticate": "Bearer"})


def principal_for_key(key: str) -> Principal:
    """The principal of a bearer key; 401 with no detail for anything wrong."""
    digest = hash_key(key)
    row = keys.by_hash(digest)
    # The lookup is by hash; compare again in constant time so timing says nothing.
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        raise _refused()
    touch(row)
    return Principal(user_id=row.user_id, agents=row.agents, kind="key", admin=bool(row.is_admin),
                     key_id=row.id)


def bearer_principal(authorization: str | None, open_mode: bool) -> Principal:
    """Resolve `Authorization: Bearer …`; in open local mode, everyone is `local`."""
    if open_mode:
        return Principal(user_id="local", kind="local", admin=True)  # the machine's own user
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise _refused()
    return principal_for_key(credential.strip())
