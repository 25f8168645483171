"""Numbered schema migrations, recorded in a table and run at start-up. Never drop and recreate."""
from __future__ import annotations

import logging

import peewee as pw

from agentd.store.models import (AgentUsageDay, AppSetting, ApiKey, Approval, CacheEntry, Conversation,
                                 IdempotencyRecord, Message, SchemaMigration, UsageDay, db)

log = logging.getLogger("agentd.store")


def m001_initial(database) -> None:
    """Conversations, messages, keys, idempotency, cache and usage tables."""
    database.create_tables([Conversation, Message, ApiKey, IdempotencyRecord, CacheEntry, UsageDay])


def m002_indexes(database) -> None:
    """Indexes for the hot queries: a conversation's page of messages, a user's conversations."""
    database.execute_sql("CREATE INDEX IF NOT EXISTS message_conv_id ON message (conversation_id, id)")
    database.execute_sql(
        "CREATE INDEX IF NOT EXISTS message_agent_user_id ON message (agent_id, user_id, id)")
    database.execute_sql("CREATE INDEX IF NOT EXISTS conversation_user_agent_updated "
                         "ON conversation (user_id, agent_id, updated_at)")
    database.execute_sql("CREATE INDEX IF NOT EXISTS message_status ON message (status)")


def m003_idempotency_expiry(database) -> None:
    """An index for purging expired idempotency records without a full scan."""
    database.execute_sql("CREATE INDEX IF NOT EXISTS idempotency_record_created "
                         "ON idempotency_record (created_at)")


def m004_settings(database) -> None:
    """Settings every process must share, such as the generated secret for widget tokens."""
    database.create_tables([AppSetting])


def m010_agent_usage(database) -> None:
    """Tokens per agent per day, for the agent-wide ceiling `quota.agent_tokens_per_day`."""
    database.create_tables([AgentUsageDay])


def m030_runs(database) -> None:
    """The run holding a conversation's turn lock, so any process can say what runs there."""
    from playhouse.migrate import SchemaMigrator, migrate as apply
    migrator = SchemaMigrator.from_database(database)
    # m001 creates tables from today's models: a fresh database has the columns already.
    have = {column.name for column in database.get_columns("conversation")}
    apply(*[migrator.add_column("conversation", name, getattr(Conversation, name))
            for name in ("run_id", "run_started_at") if name not in have])


def m070_approvals(database) -> None:
    """Tool calls held for a person's decision; a conversation's open ones are looked up by index."""
    database.create_tables([Approval])
    database.execute_sql("CREATE INDEX IF NOT EXISTS approval_conversation_used "
                         "ON approval (conversation_id, used_at)")
    database.execute_sql("CREATE INDEX IF NOT EXISTS approval_step ON approval (step_id)")


def m071_longer_message_status(database) -> None:
    """Room for the status `awaiting_approval` (17 characters) in message rows."""
    if isinstance(database, pw.PostgresqlDatabase):  # SQLite does not enforce a VARCHAR length
        database.execute_sql("ALTER TABLE message ALTER COLUMN status TYPE VARCHAR(32)")


MIGRATIONS = [(1, m001_initial), (2, m002_indexes), (3, m003_idempotency_expiry), (4, m004_settings),
              (10, m010_agent_usage), (30, m030_runs), (70, m070_approvals),
              (71, m071_longer_message_status)]

from agentd.store.operator_migrations import OPERATOR_MIGRATIONS  # noqa: E402  (60-69: the operator's view)
# Applied in version order: a new database gets the same schema history as one that grew.
MIGRATIONS = sorted(MIGRATIONS + OPERATOR_MIGRATIONS, key=lambda item: item[0])


def _serialise(database) -> None:
    """Hold a lock for the transaction, so processes starting together migrate one at a time."""
    if isinstance(database, pw.PostgresqlDatabase):
        database.execute_sql("SELECT pg_advisory_xact_lock(7271015)")  # arbitrary app-wide key
    # SQLite: the transaction began with BEGIN IMMEDIATE, which already holds the write lock.


def migrate(database=None) -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied."""
    database = database or db
    applied = []
    with database.atomic():
        _serialise(database)
        database.create_tables([SchemaMigration])
        done = {row.version for row in SchemaMigration.select(SchemaMigration.version)}
        for version, func in MIGRATIONS:
            if version in done:
                continue
            with database.atomic():
                func(database)
                SchemaMigration.insert(version=version, name=func.__name__).on_conflict_ignore().execute()
            applied.append(version)
            log.info("applied migration %03d %s", version, func.__name__)
    return applied
