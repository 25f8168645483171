"""Opening the database named by AGENTD_DATABASE_URL (SQLite in WAL mode by default)."""
from __future__ import annotations

import os

from playhouse.db_url import connect

from agentd.store.migrations import migrate
from agentd.store.models import db

SQLITE_PRAGMAS = {"journal_mode": "wal", "busy_timeout": 10000, "foreign_keys": 1,
                  "synchronous": "normal", "cache_size": -16000}


def _prepare_sqlite_path(url: str) -> None:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def open_database(url: str):
    """A peewee Database for a URL; PostgreSQL URLs get a connection pool."""
    if url.startswith("sqlite"):
        _prepare_sqlite_path(url)
        return connect(url, pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    if url.startswith(("postgres://", "postgresql://")):
        url = url.replace("postgres://", "postgresql+pool://", 1).replace(
            "postgresql://", "postgresql+pool://", 1)
        return connect(url, max_connections=int(os.environ.get("AGENTD_DB_POOL_SIZE", "32")),
                       stale_timeout=300)
    return connect(url)


def connect_database(url: str, run_migrations: bool = True):
    """Bind the models to the database at `url` and bring its schema up to date."""
    database = open_database(url)
    db.initialize(database)
    if run_migrations:
        with database.connection_context():
            migrate(database)
    return database


def close_database() -> None:
    if db.obj is not None and not db.is_closed():
        db.close()
