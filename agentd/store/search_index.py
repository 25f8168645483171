"""SQLite's full-text index, filled in batches (migration 64); PostgreSQL needs none of this.

FTS5 writes a new index segment at every commit that touched an indexed
table: indexing a turn's title, question and answer as they are written cost
about 175 µs of CPU per turn (two commits), most of it those segments. So new
rows are indexed in batches instead, by `catch_up()`: a watermark per table
(`search_indexed.upto`) says which rows the index covers.

The index holds exactly the rows at or below the watermark that are searched
(user and assistant text once final, titles). The triggers keep it so for
those rows on every insert, update and delete; a row above the watermark is
untouched until a catch-up indexes it and moves the watermark past it, in one
transaction (which holds the write lock: BEGIN IMMEDIATE). Search catches up
first, so it always sees every row; turns catch up every CATCH_UP_EVERY turns
inside their own final transaction (no commit of its own), so a search never
finds much to do.

A VACUUM may renumber conversation rowids (their key is text): rebuild both
indexes then (`INSERT INTO conversation_fts(conversation_fts) VALUES ('rebuild')`,
the same for message_fts) and set each `upto` to its table's highest rowid.
"""
from __future__ import annotations

import itertools

import peewee as pw

from agentd.store.models import db

BATCH = 2000             # rows per statement of a catch-up
CATCH_UP_EVERY = 32      # turns (per process) between catch-ups in a turn's final transaction
SEARCHED_ROLES = "('user', 'assistant')"
# What each index covers: (watermark name, table, key, text column, condition on the row).
# `{r}` stands for the row's prefix in a trigger (`new.`, `old.`).
TABLES = [("message", "message", "id", "content",
           f"{{r}}role IN {SEARCHED_ROLES} AND {{r}}content IS NOT NULL AND {{r}}status <> 'streaming'"),
          ("conversation", "conversation", "rowid", "title", "{r}title IS NOT NULL")]

_turns = itertools.count(1)


def _is_sqlite(database) -> bool:
    return isinstance(database, pw.SqliteDatabase)


def catch_up(database=None) -> int:
    """Index every row above the watermarks; returns how many rows it indexed. SQLite only."""
    database = database or db.obj
    if not _is_sqlite(database):
        return 0
    indexed = 0
    for name, table, key, column, searched in TABLES:
        while True:
            with database.atomic():
                added, more = _batch(database, name, table, key, column, searched)
            indexed += added
            if not more:
                break
    return indexed


def _batch(database, name, table, key, column, searched) -> tuple[int, bool]:
    run = database.execute_sql
    (upto,) = run("SELECT upto FROM search_indexed WHERE name = ?", (name,)).fetchone()
    (top,) = run(f"SELECT MAX({key}) FROM (SELECT {key} FROM {table} WHERE {key} > ? "
                 f"ORDER BY {key} LIMIT ?)", (upto, BATCH)).fetchone()
    if top is None:
        return 0, False
    cursor = run(f"INSERT INTO {name}_fts(rowid, {column}) SELECT {key}, {column} FROM {table} "
                 f"WHERE {key} > ? AND {key} <= ? AND {searched.format(r='')}", (upto, top))
    run("UPDATE search_indexed SET upto = ? WHERE name = ?", (top, name))
    return max(cursor.rowcount, 0), True


def after_turn() -> None:
    """Called inside each turn's final transaction: every CATCH_UP_EVERY turns, catch up there."""
    if next(_turns) % CATCH_UP_EVERY == 0:
        catch_up()


def create(database) -> None:
    """Migration 64 on SQLite: the watermarks at the rows indexed so far, and the triggers."""
    run = database.execute_sql
    run("CREATE TABLE IF NOT EXISTS search_indexed (name VARCHAR(32) PRIMARY KEY, upto INTEGER NOT NULL)")
    # Rows streaming now were indexed by migration 63's triggers with their current text.
    run(f"INSERT INTO message_fts(message_fts, rowid, content) SELECT 'delete', id, content FROM message "
        f"WHERE role IN {SEARCHED_ROLES} AND content IS NOT NULL AND status = 'streaming'")
    for name, table, key, column, searched in TABLES:
        run(f"INSERT OR REPLACE INTO search_indexed (name, upto) "
            f"SELECT ?, COALESCE(MAX({key}), 0) FROM {table}", (name,))
        _triggers(run, name, table, key, column, searched)


def _triggers(run, name, table, key, column, searched) -> None:
    for kind in ("insert", "delete", "unindex", "reindex"):
        run(f"DROP TRIGGER IF EXISTS {name}_fts_{kind}")
    covered = f"(SELECT upto FROM search_indexed WHERE name = '{name}')"

    def on(row: str) -> str:  # the row is (or was) covered by the index and searched
        return f"{row}.{key} <= {covered} AND " + searched.format(r=f"{row}.")
    add = f"INSERT INTO {name}_fts(rowid, {column}) VALUES (new.{key}, new.{column})"
    remove = (f"INSERT INTO {name}_fts({name}_fts, rowid, {column}) "
              f"VALUES ('delete', old.{key}, old.{column})")
    changed = "content, role, status" if name == "message" else "title"
    run(f"CREATE TRIGGER {name}_fts_insert AFTER INSERT ON {table} WHEN {on('new')} BEGIN {add}; END")
    run(f"CREATE TRIGGER {name}_fts_delete AFTER DELETE ON {table} WHEN {on('old')} BEGIN {remove}; END")
    run(f"CREATE TRIGGER {name}_fts_unindex AFTER UPDATE OF {changed} ON {table} WHEN {on('old')} "
        f"BEGIN {remove}; END")
    run(f"CREATE TRIGGER {name}_fts_reindex AFTER UPDATE OF {changed} ON {table} WHEN {on('new')} "
        f"BEGIN {add}; END")
