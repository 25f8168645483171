"""Opening the database named by AGENTD_DATABASE_URL.

SQLite runs in WAL mode with a busy timeout, and its transactions take the
write lock when they begin (BEGIN IMMEDIATE): a deferred transaction that reads
and then writes fails at once with "database is locked" when another process
wrote in between, whatever the busy timeout says.

PostgreSQL goes through peewee's pooled database with the psycopg 3 driver.
Under gevent, psycopg 3 is cooperative only if it waits on its socket through
the (patched) `select`/`selectors` modules; it picks its wait function when it
is imported, so `_green_psycopg()` corrects that choice when the monkey-patching
came later (see docs/deploy.md for the experiment).
"""
from __future__ import annotations

import logging
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import peewee
from playhouse.db_url import connect

from agentd.errors import ApiError
from agentd.store.migrations import migrate
from agentd.store.models import db

log = logging.getLogger("agentd.store")

# busy_timeout first: processes starting together wait for the lock the switch to WAL takes.
SQLITE_PRAGMAS = {"busy_timeout": 10000, "journal_mode": "wal", "foreign_keys": 1,
                  "synchronous": "normal", "cache_size": -16000}
POOL_SIZE = 32          # connections per process (AGENTD_DB_POOL_SIZE)
POOL_WAIT_SECONDS = 10  # wait this long for a free pooled connection before failing
STALE_SECONDS = 300     # recycle pooled connections older than this
# While PostgreSQL is away, a request must fail fast (503) instead of waiting for the
# worker's timeout: a refused connection fails at once; an address that does not
# answer at all gives up after CONNECT_TIMEOUT (libpq's minimum is 2 s), and TCP
# keepalives notice a server that vanished under an open connection.
CONNECT_TIMEOUT = 2
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 2, "keepalives_count": 3}


class DatabaseUnavailable(ApiError):
    status, code = 503, "SERVICE_UNAVAILABLE"


def unavailable_error(exc: BaseException) -> ApiError | None:
    """503 SERVICE_UNAVAILABLE for a database that cannot be reached or used right now.

    peewee raises OperationalError/InterfaceError for a refused or dropped connection
    (and for SQLite's "database is locked" past its busy timeout); a pooled connection
    that broke is dropped by the pool's check on its next checkout, so agentd
    recovers by itself once the database is back.
    """
    if not isinstance(exc, (peewee.OperationalError, peewee.InterfaceError)):
        return None
    text = str(exc).lower()
    if "sqlite" in type(exc.__cause__ or exc.__context__).__module__ and not any(
            sign in text for sign in _SQLITE_UNAVAILABLE):
        return None  # "no such table" and other SQLite OperationalErrors are bugs, not outages
    return DatabaseUnavailable("the database is unavailable right now; try again shortly")


_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly database")


def _prepare_sqlite_path(url: str) -> None:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def redact_url(url: str) -> str:
    """The URL with its password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _green_psycopg() -> None:
    """Make psycopg 3 wait through gevent's patched select when gevent has patched it."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("select"):
        return
    import selectors

    from psycopg import waiting
    if waiting.wait is getattr(waiting, "wait_c", None):
        # psycopg was imported before the patching: its C wait blocks the whole hub.
        waiting.wait = waiting.wait_poll
        log.info("psycopg imported before gevent patching; switched it to cooperative waits")
    waiting.DefaultSelector = selectors.DefaultSelector  # used by wait_conn (connecting)


def _postgres(url: str):
    _green_psycopg()
    scheme, rest = url.split("://", 1)
    pool_size = int(os.environ.get("AGENTD_DB_POOL_SIZE", POOL_SIZE))
    # prefer_psycopg3: peewee would pick psycopg2 if both drivers were installed.
    return connect("postgresql+pool://" + rest, max_connections=pool_size, stale_timeout=STALE_SECONDS,
                   timeout=POOL_WAIT_SECONDS, prefer_psycopg3=True, unquote_password=True,
                   unquote_user=True, connect_timeout=CONNECT_TIMEOUT, **PG_KEEPALIVES)


def open_database(url: str):
    """A peewee Database for a URL; PostgreSQL URLs get a connection pool."""
    if url.startswith("sqlite"):
        _prepare_sqlite_path(url)
        # Pooled, so a request hands its connection back instead of closing it: opening one
        # costs the pragmas, and closing the last one on a WAL file checkpoints it, which cost
        # more than the rest of a turn (docs/benchmarks.md). No cap: greenlets each hold one.
        url = url.replace("sqlite://", "sqlite+pool://", 1) if url.startswith("sqlite://") else url
        return connect(url, pragmas=SQLITE_PRAGMAS, check_same_thread=False, lock_type="IMMEDIATE",
                       max_connections=None, stale_timeout=STALE_SECONDS)
    if url.startswith(("postgres://", "postgresql://")):
        return _postgres(url)
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


def connection():
    """A context in which this thread's queries share one connection, handed back at its end."""
    return db.connection_context()


def ping(database) -> None:
    """Raise unless `database` answers a trivial query (the health check)."""
    database.execute_sql("SELECT 1")


def current_database():
    """The database agentd's models are bound to now (None before `connect_database`)."""
    return db.obj
