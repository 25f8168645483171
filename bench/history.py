"""History pages over a big store: 1,000,000 messages in 10,000 conversations.

The rows are bulk-loaded straight into the schema the migrations made
(executemany on SQLite, COPY on PostgreSQL), not through the API, then ANALYZEd
as any long-running database would be. Messages of all conversations are
interleaved in id order, so a conversation's rows are spread over the table as
in real traffic and only an index makes a page cheap.

Figures: the page through agentd over HTTP (`GET …/chat?conversation_id=…&limit=50&before=…`,
what a client sees) and the same queries in-process (get_owned_conversation +
history_page: the database's share).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import random
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

LOCAL_SHARE = 100      # every 100th conversation belongs to the open-mode user `local`
AGENT = "fast"


@dataclass
class HistoryResult:
    database: str
    messages: int
    conversations: int
    load_seconds: float = 0.0
    http: list[float] = field(default_factory=list)
    query: list[float] = field(default_factory=list)
    agent_wide_http: list[float] = field(default_factory=list)
    plan: str = ""
    note: str = ""


def conversation_id(number: int) -> str:
    return f"conv_bench{number:08d}"


def owner(number: int) -> str:
    return "local" if number % LOCAL_SHARE == 0 else f"user{number % LOCAL_SHARE}"


def _message_columns():
    """Every column of `message` with a value maker, so schema additions get their defaults."""
    from agentd.store.models import Message
    fields = [f for f in Message._meta.sorted_fields if f.name != "id"]
    return [f.column_name for f in fields], fields


def _default(field_):
    default = field_.default
    value = default() if callable(default) else default
    return field_.db_value(value) if value is not None else None


def message_rows(conversations: int, per_conversation: int):
    """Rows in id order: round r holds message r of every conversation."""
    columns, fields = _message_columns()
    base = {f.column_name: _default(f) for f in fields}
    start = dt.datetime(2024, 1, 1)
    text = "A message of ordinary length, about as long as a short chat reply tends to be. " * 2
    for turn in range(per_conversation):
        created = start + dt.timedelta(seconds=turn)
        role = "user" if turn % 2 == 0 else "assistant"
        for number in range(conversations):
            row = dict(base, conversation_id=conversation_id(number), agent_id=AGENT,
                       user_id=owner(number), role=role, content=text, status="complete",
                       is_error=False, created_at=created)
            yield tuple(row[c] for c in columns)


def conversation_rows(conversations: int):
    now = dt.datetime(2024, 1, 1)
    for number in range(conversations):
        yield (conversation_id(number), AGENT, owner(number), "api", now, now)


CONVERSATION_COLUMNS = ("id", "agent_id", "user_id", "channel", "created_at", "updated_at")


def load_sqlite(path: Path, conversations: int, per_conversation: int) -> None:
    import sqlite3
    columns, _ = _message_columns()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=off")   # a bulk load; the server reopens it normally
    with conn:
        conn.executemany(f"INSERT INTO conversation ({', '.join(CONVERSATION_COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(CONVERSATION_COLUMNS))})",
                         ((c[0], c[1], c[2], c[3], c[4].isoformat(" "), c[5].isoformat(" "))
                          for c in conversation_rows(conversations)))
        marks = ", ".join("?" * len(columns))
        conn.executemany(f"INSERT INTO message ({', '.join(columns)}) VALUES ({marks})",
                         (tuple(v.isoformat(" ") if isinstance(v, dt.datetime) else v for v in row)
                          for row in message_rows(conversations, per_conversation)))
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def load_postgres(url: str, conversations: int, per_conversation: int) -> None:
    import psycopg
    columns, _ = _message_columns()
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY conversation ({', '.join(CONVERSATION_COLUMNS)}) FROM STDIN") as copy:
                for row in conversation_rows(conversations):
                    copy.write_row(row)
            with cur.copy(f"COPY message ({', '.join(columns)}) FROM STDIN") as copy:
                for row in message_rows(conversations, per_conversation):
                    copy.write_row(row)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE conversation")
        conn.execute("VACUUM ANALYZE message")


def migrate_empty(url: str) -> None:
    """The schema exactly as agentd makes it, through its own migrations."""
    from agentd.store import connect_database
    database = connect_database(url)
    database.close()


@contextlib.contextmanager
def postgres_database(admin_url: str):
    """A throwaway database on the server, dropped afterwards."""
    import psycopg
    from psycopg import sql
    from urllib.parse import urlsplit, urlunsplit
    name = "agentd_bench_" + secrets.token_hex(4)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- the plan ------------------------------------------------------------------------------
def page_sql(database) -> tuple[str, list]:
    """The SQL of a conversation's history page with a `before` cursor, as agentd builds it."""
    from agentd.store.models import Message
    query = (Message.select().where((Message.conversation == conversation_id(0)) & (Message.id < 500000))
             .order_by(Message.id.desc()).limit(51))
    return database.get_sql_context().sql(query).query()


def explain(database) -> str:
    sql, params = page_sql(database)
    prefix = "EXPLAIN QUERY PLAN " if database.__class__.__name__.lower().find("sqlite") >= 0 else "EXPLAIN "
    rows = database.execute_sql(prefix + sql, params).fetchall()
    return "\n".join(" ".join(str(c) for c in row) if len(row) > 1 else str(row[0]) for row in rows)


# -- timing -----------------------------------------------------------------------------------
def time_pages(server, database, conversations: int, per_conversation: int, samples: int,
               result: HistoryResult, seed: int = 7) -> None:
    """Pages of random `local` conversations at random cursors: HTTP and in-process, interleaved."""
    from agentd.store import messages as store
    rng = random.Random(seed)
    local = [n for n in range(conversations) if owner(n) == "local"]
    total = conversations * per_conversation
    client = server.client
    for _ in range(20):   # warm caches and connections
        client.get(f"/api/agents/{AGENT}/chat", params={"conversation_id": conversation_id(local[0]),
                                                         "limit": 50})
    for _ in range(samples):
        number = rng.choice(local)
        before = rng.randint(total // 2, total)
        params = {"conversation_id": conversation_id(number), "limit": 50, "before": before}
        start = time.perf_counter()
        response = client.get(f"/api/agents/{AGENT}/chat", params=params)
        result.http.append(time.perf_counter() - start)
        if response.status_code != 200 or len(response.json()["messages"]) != 50:
            raise RuntimeError(f"bad page: {response.status_code} {response.text[:200]}")
        start = time.perf_counter()
        with database.connection_context():
            store.get_owned_conversation(conversation_id(number), "local", AGENT)
            rows, _, _ = store.history_page(AGENT, "local", conversation_id(number), 50, before)
            [store.message_dict(r) for r in rows]
        result.query.append(time.perf_counter() - start)
        start = time.perf_counter()
        response = client.get(f"/api/agents/{AGENT}/chat", params={"limit": 50, "before": before})
        result.agent_wide_http.append(time.perf_counter() - start)


def run_history(kind: str, url: str, workdir: Path, upstream_url: str, conversations: int,
                per_conversation: int, samples: int, log=print) -> HistoryResult:
    """Load, serve and time one database (`kind` is sqlite or postgresql)."""
    from bench.harness import start_agentd
    from agentd.store.database import open_database
    result = HistoryResult(kind, conversations * per_conversation, conversations)
    migrate_empty(url)
    start = time.perf_counter()
    if kind == "sqlite":
        load_sqlite(Path(url.split("///", 1)[1]), conversations, per_conversation)
    else:
        load_postgres(url, conversations, per_conversation)
    result.load_seconds = time.perf_counter() - start
    log(f"  {kind}: loaded {result.messages:,} messages in {result.load_seconds:.0f} s")
    database = open_database(url)
    from agentd.store.models import db
    db.initialize(database)
    server = start_agentd(workdir / kind, url, upstream_url)
    try:
        with database.connection_context():
            result.plan = explain(database)
        time_pages(server, database, conversations, per_conversation, samples, result)
    finally:
        server.stop()
        database.close()
        if hasattr(database, "close_all"):
            database.close_all()
    return result
