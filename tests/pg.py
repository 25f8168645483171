"""A fresh PostgreSQL database per test, on the server AGENTD_TEST_POSTGRES_URL names.

`.ci/start-postgres` starts a throwaway server and prints its admin URL.
"""
from __future__ import annotations

import contextlib
import secrets
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql


def _with_database(admin_url: str, name: str) -> str:
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin(admin_url: str, statement: sql.Composed) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)


@contextlib.contextmanager
def fresh_database(admin_url: str):
    """Create agentd_test_<random>, yield its URL, drop it (and its connections) afterwards."""
    name = "agentd_test_" + secrets.token_hex(6)
    _admin(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(admin_url, name)
    finally:
        _admin(admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
