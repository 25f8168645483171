"""peewee models. The schema itself is created and changed only by numbered migrations."""
from __future__ import annotations

import datetime as dt
import json

import peewee as pw

db = pw.DatabaseProxy()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _no_nul(value):
    # PostgreSQL text cannot hold U+0000 (a 500, and a lost answer when a model wrote
    # one); SQLite can. One rule for both: it becomes U+FFFD, in writes and lookups.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


class TextField(pw.TextField):
    def db_value(self, value):
        return super().db_value(_no_nul(value))


class CharField(pw.CharField):
    def db_value(self, value):
        return super().db_value(_no_nul(value))


class JSONField(pw.TextField):
    """JSON stored as text, so SQLite and PostgreSQL behave the same."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, ensure_ascii=False)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = db
        legacy_table_names = False


class Conversation(BaseModel):
    id = CharField(primary_key=True, max_length=64)
    agent_id = CharField(max_length=128)
    user_id = CharField(max_length=255)
    title = TextField(null=True)
    channel = CharField(max_length=16, default="api")
    context = JSONField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    # The turn lock: a token and a lease, so one turn at a time holds across processes.
    busy_token = CharField(max_length=64, null=True)
    busy_until = pw.DateTimeField(null=True)
    # The run holding the lock (None for a delete or truncate holding it): GET shows it as `running`.
    run_id = CharField(max_length=64, null=True)
    run_started_at = pw.DateTimeField(null=True)


class Message(BaseModel):
    id = pw.AutoField()
    conversation = pw.ForeignKeyField(Conversation, backref="messages", on_delete="CASCADE",
                                      column_name="conversation_id")
    agent_id = CharField(max_length=128)
    user_id = CharField(max_length=255)
    role = CharField(max_length=16)
    content = TextField(null=True)
    tool_calls = JSONField(null=True)
    tool_call_id = CharField(max_length=255, null=True)
    name = CharField(max_length=255, null=True)
    is_error = pw.BooleanField(default=False)
    metadata = JSONField(null=True)
    images = JSONField(null=True)
    reasoning = TextField(null=True)
    status = CharField(max_length=32, default="complete")  # 32: `awaiting_approval` (migration 71)
    provider = CharField(max_length=64, null=True)
    model = CharField(max_length=255, null=True)
    prompt_tokens = pw.IntegerField(null=True)
    completion_tokens = pw.IntegerField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    # The turn a row belongs to (its user message's id; NULL on the user message itself)
    # and how long its model call or tool call took: the operator's trace (migration 62).
    turn_id = pw.IntegerField(null=True)
    duration_ms = pw.IntegerField(null=True)


class Approval(BaseModel):
    """A tool call held until a person decides; bound to the exact call of one model step."""

    id = CharField(primary_key=True, max_length=64)
    conversation = pw.ForeignKeyField(Conversation, on_delete="CASCADE", column_name="conversation_id")
    agent_id = CharField(max_length=128)
    user_id = CharField(max_length=255)
    step_id = pw.IntegerField()           # the assistant message whose tool_calls hold the call
    run_id = CharField(max_length=64, null=True)
    tool_call_id = CharField(max_length=255)
    tool_name = CharField(max_length=255)
    arguments = TextField()               # exactly as the model sent them, run as they are
    message = TextField()                 # what the person was asked
    status = CharField(max_length=16, default="pending")  # pending | approved | denied | expired
    reason = TextField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    expires_at = pw.DateTimeField()
    decided_at = pw.DateTimeField(null=True)
    used_at = pw.DateTimeField(null=True)  # set when the run resuming its step started
    resumed_run_id = CharField(max_length=64, null=True)


class ApiKey(BaseModel):
    id = CharField(primary_key=True, max_length=32)
    user_id = CharField(max_length=255)
    key_hash = CharField(max_length=128, unique=True)
    agents = JSONField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    last_used_at = pw.DateTimeField(null=True)
    revoked_at = pw.DateTimeField(null=True)
    is_admin = pw.BooleanField(default=False)  # migration 60


class IdempotencyRecord(BaseModel):
    key = CharField(max_length=255)
    user_id = CharField(max_length=255)
    agent_id = CharField(max_length=128)
    body_hash = CharField(max_length=64)
    status = CharField(max_length=16, default="running")  # running | done
    response = JSONField(null=True)
    status_code = pw.IntegerField(null=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        primary_key = pw.CompositeKey("user_id", "key")


class CacheEntry(BaseModel):
    key = CharField(primary_key=True, max_length=128)
    value = JSONField()
    expires_at = pw.DateTimeField()


class UsageDay(BaseModel):
    user_id = CharField(max_length=255)
    day = pw.DateField()
    tokens = pw.IntegerField(default=0)

    class Meta:
        primary_key = pw.CompositeKey("user_id", "day")


class AgentUsageDay(BaseModel):
    """An agent's tokens per UTC day, over all its users (`quota.agent_tokens_per_day`)."""

    agent_id = CharField(max_length=128)
    day = pw.DateField()
    tokens = pw.BigIntegerField(default=0)

    class Meta:
        primary_key = pw.CompositeKey("agent_id", "day")


class UsageRecord(BaseModel):
    """The usage ledger: one row per model call, written in the turn's own transaction."""

    id = pw.AutoField()
    created_at = pw.DateTimeField(default=utcnow)
    run_id = CharField(max_length=64, null=True)
    turn_id = pw.IntegerField(null=True)           # the turn's user message id
    conversation_id = CharField(max_length=64)
    agent_id = CharField(max_length=128)
    user_id = CharField(max_length=255)
    key_id = CharField(max_length=32, null=True)    # the API key, when one was used
    provider = CharField(max_length=64, null=True)
    model = CharField(max_length=255, null=True)
    prompt_tokens = pw.IntegerField(default=0)
    completion_tokens = pw.IntegerField(default=0)
    duration_ms = pw.IntegerField(null=True)
    # Billionths of a dollar, so sums are exact on every database; NULL when the price is unknown.
    cost_nanousd = pw.BigIntegerField(null=True)


class AppSetting(BaseModel):
    key = CharField(primary_key=True, max_length=64)
    value = TextField()


class SchemaMigration(BaseModel):
    version = pw.IntegerField(primary_key=True)
    name = CharField(max_length=255)
    applied_at = pw.DateTimeField(default=utcnow)


ALL_MODELS = [Conversation, Message, ApiKey, IdempotencyRecord, CacheEntry, UsageDay]
