"""Hot queries built by peewee once per SQL dialect, then run as plain parameterised SQL.

peewee regenerates a query's SQL on every execution (~100-150 µs each) and
builds a model instance per row; for the statements on every history page
that is most of the page's cost. Here a query is built once with marker
values in place of its parameters; the generated SQL is kept, with the order
in which the markers came out as parameters, and later runs only fill in the
values (through each field's db_value, as peewee would) and convert the
selected columns (through python_value).
"""
from __future__ import annotations

import datetime as dt
import threading
from types import SimpleNamespace
from typing import Callable

import peewee as pw

from agentd.store.models import db

_cache: dict[tuple, tuple[str, list[str]]] = {}
_writes: dict[tuple, str] = {}
_lock = threading.Lock()


def _compiled(name: str, build: Callable[[dict], pw.Query], markers: dict[str, object]) -> tuple[str, list[str]]:
    key = (name, type(db.obj), tuple(markers))
    found = _cache.get(key)
    if found is None:
        sql, params = db.get_sql_context().sql(build(markers)).query()
        by_value = {value: mark for mark, value in markers.items()}
        if len(by_value) != len(markers) or any(p not in by_value for p in params):
            raise RuntimeError(f"prepared query {name}: a parameter is not a marker")
        found = (sql, [by_value[p] for p in params])
        with _lock:
            _cache[key] = found
    return found


def run(name: str, build: Callable[[dict], pw.Query], markers: dict[str, object], values: dict[str, object]):
    """The cursor of query `name` (built by `build(markers)` once) run with `values` by marker.

    `values` must already be database values (see `db_values`).
    """
    sql, order = _compiled(name, build, markers)
    return db.execute_sql(sql, [values[mark] for mark in order])


def _datetime(field: pw.DateTimeField):
    # SQLite hands datetimes back as text; peewee parses it with strptime, trying
    # formats in turn. fromisoformat reads the same forms several times faster.
    def convert(value):
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value)
            except ValueError:
                pass
        return field.python_value(value)
    return convert


def _converter(field: pw.Field):
    return _datetime(field) if isinstance(field, pw.DateTimeField) else field.python_value


def _as_is(value):
    return value


def rows(cursor, fields: list[pw.Field], extra: tuple[str, ...] = ()) -> list[SimpleNamespace]:
    """Rows as attribute objects named by column (`conversation_id`, not `conversation`).

    `extra` names the columns selected after the fields (expressions), kept as the driver gives them.
    """
    converters = [(f.column_name, _converter(f)) for f in fields] + [(name, _as_is) for name in extra]
    return [SimpleNamespace(**{name: None if value is None else convert(value)
                               for (name, convert), value in zip(converters, row)})
            for row in cursor.fetchall()]


def _quote(name: str) -> str:
    return f"{db.quote[0]}{name}{db.quote[1]}"  # static identifiers (table and column names)


def _with_defaults(fields: dict, values: dict[str, object]) -> dict[str, object]:
    """The row as peewee would insert it: fields left out that have a default get it."""
    row = dict(values)
    for name, field in fields.items():
        if name not in row and field.default is not None:
            row[name] = field.default() if callable(field.default) else field.default
    return row


def _insert_sql(model: type[pw.Model], columns: tuple[str, ...], count: int) -> str:
    """INSERT of `count` rows naming `columns` (field names), in the database's own quoting."""
    fields = model._meta.fields
    one = f"({', '.join(db.param for _ in columns)})"
    return (f"INSERT INTO {_quote(model._meta.table_name)} "
            f"({', '.join(_quote(fields[name].column_name) for name in columns)}) "
            f"VALUES {', '.join(one for _ in range(count))}")


def insert(model: type[pw.Model], values: dict[str, object]) -> object:
    """`model.insert(**values).execute()` with its SQL built once per column set.

    As peewee does: fields left out that have a default get it, every value goes
    through its field's db_value, and the new primary key comes back (RETURNING on
    PostgreSQL, lastrowid on SQLite). peewee's Insert rebuilds all this per call.
    """
    fields = model._meta.fields
    row = _with_defaults(fields, values)
    returning = db.returning_clause
    key = ("insert", model, type(db.obj), tuple(row))
    sql = _writes.get(key)
    if sql is None:
        sql = _insert_sql(model, tuple(row), 1)
        if returning:
            sql += f" RETURNING {_quote(model._meta.primary_key.column_name)}"
        with _lock:
            _writes[key] = sql
    cursor = db.execute_sql(sql, [fields[name].db_value(value) for name, value in row.items()])
    return cursor.fetchone()[0] if returning else cursor.lastrowid


def insert_many(model: type[pw.Model], rows: list[dict[str, object]]) -> None:
    """`model.insert_many(rows).execute()` (rows with the same columns) with its SQL built
    once per column set and row count: one multi-row INSERT, no key read back."""
    fields = model._meta.fields
    filled = [_with_defaults(fields, values) for values in rows]
    columns = tuple(filled[0])
    if any(tuple(row) != columns for row in filled):
        raise ValueError(f"insert_many {model.__name__}: every row must name the same columns")
    key = ("insert_many", model, type(db.obj), columns, len(filled))
    sql = _writes.get(key)
    if sql is None:
        sql = _insert_sql(model, columns, len(filled))
        with _lock:
            _writes[key] = sql
    db.execute_sql(sql, [fields[name].db_value(row[name]) for row in filled for name in columns])


def update_by_id(model: type[pw.Model], row_id: object, values: dict[str, object]) -> int:
    """`model.update(**values).where(model.id == row_id).execute()` with its SQL built once
    per column set; returns the rows changed."""
    fields, pk = model._meta.fields, model._meta.primary_key
    key = ("update", model, type(db.obj), tuple(values))
    sql = _writes.get(key)
    if sql is None:
        sets = ", ".join(f"{_quote(fields[name].column_name)} = {db.param}" for name in values)
        sql = f"UPDATE {_quote(model._meta.table_name)} SET {sets} WHERE {_quote(pk.column_name)} = {db.param}"
        with _lock:
            _writes[key] = sql
    params = [fields[name].db_value(value) for name, value in values.items()] + [pk.db_value(row_id)]
    return db.rows_affected(db.execute_sql(sql, params))
