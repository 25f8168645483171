"""Migrations 60-64: admin keys, the usage ledger, the trace columns, full-text search.

A fresh database gets the model's current columns from migration 1 (it
creates the tables from the models), so each column added here is added only
when missing.
"""
from __future__ import annotations

import peewee as pw
from playhouse.migrate import SchemaMigrator, migrate

from agentd.store.models import UsageRecord


def _has_column(database, table: str, column: str) -> bool:
    return any(c.name == column for c in database.get_columns(table))


def _add_columns(database, table: str, columns: dict[str, pw.Field]) -> None:
    migrator = SchemaMigrator.from_database(database)
    missing = [migrator.add_column(table, name, field) for name, field in columns.items()
               if not _has_column(database, table, name)]
    if missing:
        migrate(*missing)


def _is_postgres(database) -> bool:
    return isinstance(database, pw.PostgresqlDatabase)


def m060_admin_keys(database) -> None:
    """API keys may be admin keys (the operator's routes and console)."""
    _add_columns(database, "api_key", {"is_admin": pw.BooleanField(default=False)})


def m061_usage_ledger(database) -> None:
    """The usage ledger, one row per model call, and the indexes its reports read by."""
    database.create_tables([UsageRecord])
    for name, columns in (("usage_record_created", "created_at"), ("usage_record_turn", "turn_id"),
                          ("usage_record_agent_created", "agent_id, created_at")):
        database.execute_sql(f"CREATE INDEX IF NOT EXISTS {name} ON usage_record ({columns})")


def m062_message_trace(database) -> None:
    """Each message knows its turn and its duration; older rows get their turn from history."""
    _add_columns(database, "message", {"turn_id": pw.IntegerField(null=True),
                                       "duration_ms": pw.IntegerField(null=True)})
    database.execute_sql("CREATE INDEX IF NOT EXISTS message_turn ON message (turn_id)")
    database.execute_sql(
        "UPDATE message SET turn_id = (SELECT MAX(u.id) FROM message u WHERE u.conversation_id = "
        "message.conversation_id AND u.role = 'user' AND u.id < message.id) "
        "WHERE role <> 'user' AND turn_id IS NULL")
    database.execute_sql("CREATE INDEX IF NOT EXISTS message_role_created ON message (role, created_at)")


# What search reads: user and assistant text, and conversation titles. Tool results are
# left out (they can be large and are not what an operator looks for).
_SEARCHED_ROLES = "('user', 'assistant')"


def _sqlite_search(database) -> None:
    run = database.execute_sql
    # External-content FTS5 tables: the text lives once, in message/conversation; triggers
    # keep the index in step on every insert, update and delete (in the same statement).
    # Migration 64 replaces these triggers (rows indexed in batches: agentd.store.search_index).
    run("CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5("
        "content, content='message', content_rowid='id', tokenize='porter unicode61')")
    run("CREATE VIRTUAL TABLE IF NOT EXISTS conversation_fts USING fts5("
        "title, content='conversation', tokenize='porter unicode61')")
    # (conversation has a text key, so its index rows follow the implicit rowid; a VACUUM
    # may renumber those: `INSERT INTO conversation_fts(conversation_fts) VALUES ('rebuild')`.)
    searched = f"new.role IN {_SEARCHED_ROLES} AND new.content IS NOT NULL"
    was = f"old.role IN {_SEARCHED_ROLES} AND old.content IS NOT NULL"
    run(f"CREATE TRIGGER IF NOT EXISTS message_fts_insert AFTER INSERT ON message WHEN {searched} BEGIN "
        "INSERT INTO message_fts(rowid, content) VALUES (new.id, new.content); END")
    run(f"CREATE TRIGGER IF NOT EXISTS message_fts_delete AFTER DELETE ON message WHEN {was} BEGIN "
        "INSERT INTO message_fts(message_fts, rowid, content) VALUES ('delete', old.id, old.content); END")
    run(f"CREATE TRIGGER IF NOT EXISTS message_fts_unindex AFTER UPDATE OF content, role ON message "
        f"WHEN {was} BEGIN "
        "INSERT INTO message_fts(message_fts, rowid, content) VALUES ('delete', old.id, old.content); END")
    run(f"CREATE TRIGGER IF NOT EXISTS message_fts_reindex AFTER UPDATE OF content, role ON message "
        f"WHEN {searched} BEGIN "
        "INSERT INTO message_fts(rowid, content) VALUES (new.id, new.content); END")
    run("CREATE TRIGGER IF NOT EXISTS conversation_fts_insert AFTER INSERT ON conversation "
        "WHEN new.title IS NOT NULL BEGIN "
        "INSERT INTO conversation_fts(rowid, title) VALUES (new.rowid, new.title); END")
    run("CREATE TRIGGER IF NOT EXISTS conversation_fts_delete AFTER DELETE ON conversation "
        "WHEN old.title IS NOT NULL BEGIN "
        "INSERT INTO conversation_fts(conversation_fts, rowid, title) VALUES ('delete', old.rowid, old.title); END")
    run("CREATE TRIGGER IF NOT EXISTS conversation_fts_unindex AFTER UPDATE OF title ON conversation "
        "WHEN old.title IS NOT NULL BEGIN "
        "INSERT INTO conversation_fts(conversation_fts, rowid, title) VALUES ('delete', old.rowid, old.title); END")
    run("CREATE TRIGGER IF NOT EXISTS conversation_fts_reindex AFTER UPDATE OF title ON conversation "
        "WHEN new.title IS NOT NULL BEGIN "
        "INSERT INTO conversation_fts(rowid, title) VALUES (new.rowid, new.title); END")
    run(f"INSERT INTO message_fts(rowid, content) SELECT id, content FROM message "
        f"WHERE role IN {_SEARCHED_ROLES} AND content IS NOT NULL")
    run("INSERT INTO conversation_fts(rowid, title) SELECT rowid, title FROM conversation "
        "WHERE title IS NOT NULL")


def _postgres_search(database) -> None:
    run = database.execute_sql
    # Generated tsvector columns: PostgreSQL keeps them in step with every write itself.
    if not _has_column(database, "message", "search"):
        run("ALTER TABLE message ADD COLUMN search tsvector GENERATED ALWAYS AS (CASE WHEN role IN "
            f"{_SEARCHED_ROLES} THEN to_tsvector('english', coalesce(content, '')) END) STORED")
    if not _has_column(database, "conversation", "search"):
        run("ALTER TABLE conversation ADD COLUMN search tsvector GENERATED ALWAYS AS "
            "(to_tsvector('english', coalesce(title, ''))) STORED")
    run("CREATE INDEX IF NOT EXISTS message_search ON message USING GIN (search)")
    run("CREATE INDEX IF NOT EXISTS conversation_search ON conversation USING GIN (search)")


def m063_search(database) -> None:
    """Full-text search over titles and message text (FTS5 on SQLite, tsvector + GIN on PostgreSQL)."""
    if _is_postgres(database):
        _postgres_search(database)
    else:
        _sqlite_search(database)


def m064_search_in_batches(database) -> None:
    """SQLite: the full-text index is filled in batches behind a watermark, and a message's
    text is indexed once final (not while it streams): see agentd.store.search_index."""
    if _is_postgres(database):
        return  # generated columns; its search query leaves streaming rows out (agentd.store.admin)
    from agentd.store import search_index
    search_index.create(database)


OPERATOR_MIGRATIONS = [(60, m060_admin_keys), (61, m061_usage_ledger), (62, m062_message_trace),
                       (63, m063_search), (64, m064_search_in_batches)]
