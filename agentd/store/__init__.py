"""Storage with peewee: the database URL, models, migrations and the queries the service uses."""
from agentd.store.database import connect_database, close_database
from agentd.store.models import db

__all__ = ["connect_database", "close_database", "db"]
