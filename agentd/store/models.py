"""peewee models. The schema itself is created and changed only by numbered migrations."""
from __future__ import annotations

import datetime as dt
import json

import peewee as pw

db = pw.DatabaseProxy()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


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
    id = pw.CharField(primary_key=True, max_length=64)
    agent_id = pw.CharField(max_length=128)
    user_id = pw.CharField(max_length=255)
    title = pw.TextField(null=True)
    channel = pw.CharField(max_length=16, default="api")
    context = JSONField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    # The turn lock: a token and a lease, so one turn at a time holds across processes.
    busy_token = pw.CharField(max_length=64, null=True)
    busy_until = pw.DateTimeField(null=True)


class Message(BaseModel):
    id = pw.AutoField()
    conversation = pw.ForeignKeyField(Conversation, backref="messages", on_delete="CASCADE",
                                      column_name="conversation_id")
    agent_id = pw.CharField(max_length=128)
    user_id = pw.CharField(max_length=255)
    role = pw.CharField(max_length=16)
    content = pw.TextField(null=True)
    tool_calls = JSONField(null=True)
    tool_call_id = pw.CharField(max_length=255, null=True)
    name = pw.CharField(max_length=255, null=True)
    is_error = pw.BooleanField(default=False)
    metadata = JSONField(null=True)
    images = JSONField(null=True)
    reasoning = pw.TextField(null=True)
    status = pw.CharField(max_length=16, default="complete")
    provider = pw.CharField(max_length=64, null=True)
    model = pw.CharField(max_length=255, null=True)
    prompt_tokens = pw.IntegerField(null=True)
    completion_tokens = pw.IntegerField(null=True)
    created_at = pw.DateTimeField(default=utcnow)


class ApiKey(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    user_id = pw.CharField(max_length=255)
    key_hash = pw.CharField(max_length=128, unique=True)
    agents = JSONField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    last_used_at = pw.DateTimeField(null=True)
    revoked_at = pw.DateTimeField(null=True)


class IdempotencyRecord(BaseModel):
    key = pw.CharField(max_length=255)
    user_id = pw.CharField(max_length=255)
    agent_id = pw.CharField(max_length=128)
    body_hash = pw.CharField(max_length=64)
    status = pw.CharField(max_length=16, default="running")  # running | done
    response = JSONField(null=True)
    status_code = pw.IntegerField(null=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        primary_key = pw.CompositeKey("user_id", "key")


class CacheEntry(BaseModel):
    key = pw.CharField(primary_key=True, max_length=128)
    value = JSONField()
    expires_at = pw.DateTimeField()


class UsageDay(BaseModel):
    user_id = pw.CharField(max_length=255)
    day = pw.DateField()
    tokens = pw.IntegerField(default=0)

    class Meta:
        primary_key = pw.CompositeKey("user_id", "day")


class AppSetting(BaseModel):
    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()


class SchemaMigration(BaseModel):
    version = pw.IntegerField(primary_key=True)
    name = pw.CharField(max_length=255)
    applied_at = pw.DateTimeField(default=utcnow)


ALL_MODELS = [Conversation, Message, ApiKey, IdempotencyRecord, CacheEntry, UsageDay]
