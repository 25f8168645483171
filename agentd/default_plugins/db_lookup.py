"""db_lookup: named, parameterised SQL queries from the agent's YAML, each its own tool.

Written as any user's plugin is: a Toolset whose build(config) makes one tool
per named query (its JSON schema from the declared parameters) and, only when
enabled, a free read-only SQL tool over allowlisted tables.

A named query may bind parameters from the caller instead of the model
(`params: {customer_id: "{{ user.id }}"}`, rendered in the system prompt's
sandbox with `user` = who is asking and `context` = the conversation's
context): those are not in the tool's schema, and the model cannot replace
them. Rows are framed as untrusted data for the model (they hold what
customers and others typed).

Read-only by construction, not by trusting the SQL: SQLite is opened with
`mode=ro`, `query_only` and an authorizer that allows reading and nothing
else (free SQL: only allowlisted tables and known functions); PostgreSQL runs
each query in a READ ONLY transaction with a statement_timeout (use a role
with SELECT grants only, too). Values are always bound, never formatted in.
agentd's own database is refused. Every query has a time budget and a row cap.
"""
from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

from agentd import Tool, ToolError, Toolset, hookimpl
from agentd.default_plugins import db_guard

NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
PARAM_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
FREE_SQL_TOOL = "sql_query"

PARAMETER_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {"type": {"enum": list(PARAM_TYPES)}, "description": {"type": "string"},
                   "enum": {"type": "array"}, "default": {}},
}
CONFIG_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["database"],
    "properties": {
        "database": {"type": "string", "pattern": "^(sqlite|postgres|postgresql)://"},
        "queries": {"type": "object", "propertyNames": {"pattern": NAME},
                    "additionalProperties": {
                        "type": "object", "additionalProperties": False, "required": ["sql"],
                        "properties": {"description": {"type": "string"}, "sql": {"type": "string", "minLength": 1},
                                       "parameters": {"type": "object", "propertyNames": {"pattern": NAME},
                                                      "additionalProperties": PARAMETER_SCHEMA},
                                       # Bound from the caller, never from the model: `{{ user.id }}`.
                                       "params": {"type": "object", "propertyNames": {"pattern": NAME},
                                                  "additionalProperties": {"type": "string", "minLength": 1}}}}},
        "free_sql": {"type": "object", "additionalProperties": False,
                     "properties": {"enabled": {"type": "boolean"}, "name": {"type": "string", "pattern": NAME},
                                    "description": {"type": "string"},
                                    "tables": {"type": "array", "items": {"type": "string", "minLength": 1}}}},
        "max_rows": {"type": "integer", "minimum": 1, "maximum": 10000},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
    },
}

# ---------------------------------------------------------------- SQL text
_TOKEN = re.compile(r"""
    (?P<string>'(?:[^']|'')*'?) | (?P<ident>"(?:[^"]|"")*"?) | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?(?:\$(?P=tag)\$|\Z)) | (?P<code>[^'"$/-]+|.)
""", re.S | re.X)
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_WORD = re.compile(r"[A-Za-z_][\w$]*")


def _tokens(sql: str) -> list[tuple[str, str]]:
    """(kind, text) pieces, so semicolons and colons inside strings and comments are ignored."""
    return [(m.lastgroup if m.lastgroup != "tag" else "dollar", m.group()) for m in _TOKEN.finditer(sql)]


def _code(sql: str) -> str:
    """The SQL with strings, quoted names and comments blanked out."""
    return "".join(text if kind == "code" else " " for kind, text in _tokens(sql))


def check_select(sql: str) -> str:
    """One SELECT (or WITH … SELECT) statement, trailing semicolon allowed; else ToolError."""
    code = _code(sql).strip().rstrip(";").strip()
    if ";" in code:
        raise ToolError("only one statement is allowed (no ';' between statements)")
    first = (_WORD.findall(code) or [""])[0].upper()
    if first not in ("SELECT", "WITH"):
        raise ToolError(f"only SELECT queries are allowed, not {first or 'an empty statement'}")
    return sql.strip().rstrip(";")


def sql_parameters(sql: str) -> list[str]:
    """The :name placeholders of a statement, in order of first use (not `::casts`)."""
    return list(dict.fromkeys(_PARAM.findall(_code(sql))))


def to_pyformat(sql: str) -> str:
    """`:name` → `%(name)s` for psycopg; literal % doubled everywhere (psycopg scans it all)."""
    out = []
    for kind, text in _tokens(sql):
        text = text.replace("%", "%%")
        out.append(_PARAM.sub(r"%(\1)s", text) if kind == "code" else text)
    return "".join(out)


# ---------------------------------------------------------------- databases
def _sqlite_path(url: str) -> str:
    # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy and peewee spell them.
    path = unquote(url.split("?", 1)[0][len("sqlite:///"):]) if url.startswith("sqlite:///") else ""
    if not path or path == ":memory:" or path.startswith(":"):
        raise ToolError("db_lookup needs a database file: sqlite:///path/to/file.db")
    return os.path.abspath(path)


def _identity(url: str):
    """What makes two URLs the same database: the file, or the server's addresses, port and name."""
    if url.startswith("sqlite"):
        try:
            return ("sqlite", os.path.realpath(_sqlite_path(url)))
        except ToolError:
            return ("sqlite", url)
    return db_guard.postgres_url_identity(url)


def _own_database_identities() -> list:
    urls = [os.environ.get("AGENTD_DATABASE_URL") or "sqlite:///agentd.db"]
    identities = [_identity(u) for u in urls]
    try:  # the app's live database, whatever URL it was opened from
        from agentd.store.database import current_database
        live = current_database()
    except Exception:
        live = None
    if live is not None and "sqlite" in type(live).__name__.lower():
        identities.append(("sqlite", os.path.realpath(str(live.database))))
    elif live is not None:
        identities.append(db_guard.postgres_identity({**getattr(live, "connect_params", {}),
                                                      "dbname": live.database}))
    return identities


def refuse_own_database(url: str) -> None:
    """agentd's own tables (API keys, conversations) are never an agent's to read.

    PostgreSQL servers are compared by resolved address (any name or address of
    this machine is this machine), port and database name, not by host string."""
    mine = _identity(url)
    for own in _own_database_identities():
        if own[0] != mine[0]:
            continue
        same = db_guard.same_postgres(own, mine) if own[0] == "postgresql" else own == mine
        if own[0] == "sqlite" and os.path.exists(own[1]) and os.path.exists(mine[1]):
            same = same or os.path.samefile(own[1], mine[1])
        if same:
            raise ToolError("db_lookup cannot read agentd's own database")


_FREE_FUNCTIONS = frozenset("""abs avg coalesce count date datetime group_concat hex ifnull iif instr
    julianday length like glob lower ltrim max min nullif printf format quote replace round rtrim
    strftime substr substring sum time total trim typeof unixepoch upper char unicode sign ceil
    ceiling floor json_extract json_array_length json_type likely unlikely string_agg""".split())
_NEVER_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})


_CTE_NAME = re.compile(r"(?:\bWITH(?:\s+RECURSIVE)?|,)\s*([A-Za-z_]\w*)\s*(?:\([^)]*\))?\s+AS\b", re.I)


def _readable(table: str, column: str, db_name: str | None, tables, ctes) -> bool:
    table = (table or "").lower()
    if db_name == "main":
        return tables is None or table in tables
    # count(*) and CTE scans report no database and no column. A CTE name
    # shadows any table of that name, so reading it never reaches a real table.
    return db_name is None and not column and (tables is None or table in tables or table in ctes)


def _authorizer(tables: frozenset | None, sql: str = ""):
    """SQLite authorizer: reading only; with `tables`, only those tables and known functions."""
    ctes = {name.lower() for name in _CTE_NAME.findall(_code(sql))}

    def check(action, arg1, arg2, db_name, source):
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            return sqlite3.SQLITE_OK if _readable(arg1, arg2, db_name, tables, ctes) else sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            ok = name not in _NEVER_FUNCTIONS and (tables is None or name in _FREE_FUNCTIONS)
            return sqlite3.SQLITE_OK if ok else sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_DENY  # writes, PRAGMA, ATTACH, transactions, schema changes
    return check


# Bytes: no value may grow past MAX_VALUE_BYTES while SQLite computes it (SQLite stops
# building it there: printf('%.*c', 1000000000, 'x') fails instead of taking 1 GB), and
# fetching stops once the rows so far hold MAX_RESULT_BYTES (the model sees 20,000
# characters of a tool result anyway).
MAX_VALUE_BYTES = 1_000_000
MAX_RESULT_BYTES = 2_000_000


@dataclass
class Limits:
    max_rows: int = 100
    timeout: float = 5.0


def _sqlite_connect(url: str, limits: Limits, tables, sql: str) -> sqlite3.Connection:
    path = _sqlite_path(url)
    if not os.path.exists(path):
        raise ToolError("the database file does not exist")
    conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=limits.timeout,
                           check_same_thread=False)
    conn.execute("PRAGMA query_only = 1")  # before the authorizer, which refuses PRAGMA
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)  # printf('%.*c', 1e9, 'x')
    conn.set_authorizer(_authorizer(tables, sql))
    deadline = time.monotonic() + limits.timeout
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    return conn


def run_sqlite(url: str, sql: str, params: dict, limits: Limits, tables=None) -> dict:
    """Run one read-only statement on SQLite within the time budget and row cap."""
    conn = _sqlite_connect(url, limits, tables, sql)
    try:
        cursor = conn.execute(sql, params)
        rows, capped = _fetch_capped(cursor, limits.max_rows + 1)
        columns = [d[0] for d in cursor.description or []]
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise ToolError(f"the query ran longer than {limits.timeout:g} s and was stopped") from None
        raise ToolError(f"query refused or failed: {exc}") from None
    except sqlite3.DataError as exc:  # string or blob too big
        raise ToolError(f"query refused: a value is larger than {MAX_VALUE_BYTES} bytes ({exc})") from None
    except (sqlite3.DatabaseError, sqlite3.ProgrammingError, sqlite3.Warning) as exc:
        raise ToolError(f"query refused or failed: {exc}") from None
    finally:
        conn.close()
    return _rows(columns, rows, limits.max_rows, capped)


def _size(value) -> int:
    return len(value) if isinstance(value, (str, bytes)) else 8


def _fetch_capped(cursor, max_rows: int) -> tuple[list, bool]:
    """Up to `max_rows` rows, stopping before their values pass MAX_RESULT_BYTES."""
    rows, total = [], 0
    while len(rows) < max_rows:
        row = cursor.fetchone()
        if row is None:
            return rows, False
        total += sum(_size(v) for v in row)
        if total > MAX_RESULT_BYTES:
            return rows, True
        rows.append(row)
    return rows, False


def _pg_plan_relations(plan: dict, found: set) -> set:
    """Every (schema, relation) a PostgreSQL plan reads, and refusal of writing plan nodes."""
    if plan.get("Node Type") in ("ModifyTable", "LockRows"):
        raise ToolError("only reading queries are allowed")
    if "Relation Name" in plan:
        found.add((plan.get("Schema", ""), plan["Relation Name"].lower()))
    if plan.get("Node Type") == "Function Scan" and plan.get("Function Name") not in ("generate_series", "unnest"):
        raise ToolError(f"function {plan.get('Function Name')} is not allowed here")
    for child in plan.get("Plans", []):
        _pg_plan_relations(child, found)
    return found


def _pg_check_free(cursor, sql: str, tables: frozenset) -> None:
    # First the parse tree (PostgreSQL's own grammar): functions, casts, tables, node kinds.
    db_guard.check_postgres_free_sql(sql, tables)
    # Then the plan, as a second opinion on which relations are really read (views resolved
    # by name, the search path applied): each must be an allowed table in its own schema.
    cursor.execute("EXPLAIN (VERBOSE, FORMAT JSON) " + to_pyformat(sql), {})
    plan = cursor.fetchone()[0]
    plan = plan[0]["Plan"] if isinstance(plan, list) else plan
    for schema, name in _pg_plan_relations(plan, set()):
        if schema in ("pg_catalog", "information_schema") or not db_guard.table_allowed(schema, name, tables):
            raise ToolError(f"table {name} is not in this agent's allowed tables")


def run_postgres(url: str, sql: str, params: dict, limits: Limits, tables=None) -> dict:
    """Run one statement in a READ ONLY transaction with a statement_timeout."""
    import psycopg
    try:
        conn = psycopg.connect(url, connect_timeout=max(1, int(limits.timeout)), autocommit=False)
    except psycopg.Error as exc:
        raise ToolError(f"cannot connect to the database: {exc.__class__.__name__}") from None
    try:
        conn.read_only = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(int(limits.timeout * 1000))])
            if tables is not None:
                _pg_check_free(cursor, sql, tables)
            # Bound parameters go through the extended protocol, which also refuses stacked statements.
            cursor.execute(to_pyformat(sql), params)
            rows = cursor.fetchmany(limits.max_rows + 1)
            columns = [d.name for d in cursor.description or []]
    except psycopg.errors.QueryCanceled:
        raise ToolError(f"the query ran longer than {limits.timeout:g} s and was stopped") from None
    except psycopg.Error as exc:
        raise ToolError(f"query refused or failed: {str(exc).strip().splitlines()[0]}") from None
    finally:
        conn.rollback() if not conn.closed else None
        conn.close()
    return _rows(columns, [tuple(r) for r in rows], limits.max_rows)


def _rows(columns: list[str], rows: list[tuple], cap: int, too_big: bool = False) -> dict:
    result = {"columns": columns, "rows": [dict(zip(columns, row)) for row in rows[:cap]],
              "row_count": min(len(rows), cap)}
    if too_big:
        result["truncated"] = (f"only the first {len(rows)} rows are shown: the result passed "
                               f"{MAX_RESULT_BYTES} bytes; select fewer or shorter columns")
    elif len(rows) > cap:
        result["truncated"] = f"only the first {cap} rows are shown; narrow the query for more"
    return result


def run_query(url: str, sql: str, params: dict, limits: Limits, tables=None) -> dict:
    runner = run_sqlite if url.startswith("sqlite") else run_postgres
    return runner(url, sql, params, limits, tables)


# ---------------------------------------------------------------- tools
def _cooperative(url: str) -> bool:
    # sqlite3 blocks inside C for the whole query: off the gevent hub (agentd.tools.offload).
    # psycopg 3 waits on its socket through gevent's patched select, so it may stay on it.
    return not url.startswith("sqlite")


def _parameters_schema(sql: str, declared: dict | None, bound: dict) -> dict:
    """The JSON schema the model sees: the SQL's parameters minus the ones bound from the caller."""
    used = sql_parameters(sql)
    clash = [name for name in (declared or {}) if name in bound]
    if clash:
        raise ValueError(f"parameters {clash} are bound in `params`; they cannot also come from the model")
    if declared is None:
        declared = {name: {"type": "string"} for name in used if name not in bound}
    missing = [name for name in used if name not in declared and name not in bound]
    unused = [name for name in [*declared, *bound] if name not in used]
    if missing or unused:
        raise ValueError(f"parameters do not match the SQL: missing {missing}, unused {unused}")
    properties = {name: {k: v for k, v in spec.items() if k in ("type", "description", "enum", "default")}
                  for name, spec in declared.items()}
    for prop in properties.values():
        prop.setdefault("type", "string")
    required = [name for name, spec in declared.items() if "default" not in spec]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


_CALLER = " caller"  # the ToolContext's keyword: a space, so no SQL parameter can be named so


def _compile_bound(name: str, bound: dict) -> dict:
    from agentd.templating import compile_template
    try:
        return {param: compile_template(text) for param, text in bound.items()}
    except Exception as exc:  # a template syntax error is the agent file's problem, at load
        raise ValueError(f"query {name}: params: {exc}") from None


def bound_values(templates: dict, ctx) -> dict:
    """The caller-bound parameters, rendered with `user` (who is asking) and `context`."""
    from agentd.templating import TemplateBudgetError, render_compiled
    variables = {"user": {"id": ctx.user_id}, "context": dict(ctx.context or {})}
    values = {}
    for param, template in templates.items():
        try:
            value = render_compiled(template, variables).strip()
        except TemplateBudgetError as exc:
            raise ToolError(f"parameter {param}: {exc}") from None
        except Exception:
            raise ToolError(f"parameter {param}: could not be filled in for this caller") from None
        if not value:
            # An empty id would match nothing at best and everything at worst: refuse instead.
            raise ToolError(f"parameter {param} comes from the caller, and this caller has none")
        values[param] = value
    return values


def _query_tool(name: str, spec: dict, url: str, limits: Limits) -> Tool:
    try:
        sql = check_select(spec["sql"])
    except ToolError as exc:
        raise ValueError(f"query {name}: {exc}") from None
    bound = _compile_bound(name, spec.get("params") or {})
    schema = _parameters_schema(sql, spec.get("parameters"), bound)
    defaults = {k: p["default"] for k, p in schema["properties"].items() if "default" in p}

    def run(**arguments):
        ctx = arguments.pop(_CALLER)
        # Bound values go last: nothing the model sends can replace them.
        return run_query(url, sql, {**defaults, **arguments, **bound_values(bound, ctx)}, limits)

    description = spec.get("description") or f"Run the {name} query."
    return Tool(name=name, description=description, parameters=schema, func=run,
                context_param=_CALLER, timeout=limits.timeout + 5, untrusted=True,
                cooperative=_cooperative(url))


def _free_sql_tool(spec: dict, url: str, limits: Limits) -> Tool:
    tables = frozenset(t.lower() for t in spec.get("tables") or [])
    if not tables:
        raise ValueError("free_sql needs the list of tables it may read")

    def sql_query(query: str) -> dict:
        return run_query(url, check_select(query), {}, limits, tables)

    description = spec.get("description") or (
        "Run one read-only SQL SELECT over these tables: " + ", ".join(sorted(tables)))
    schema = {"type": "object", "required": ["query"], "additionalProperties": False,
              "properties": {"query": {"type": "string", "description": "one SELECT statement"}}}
    return Tool(name=spec.get("name", FREE_SQL_TOOL), description=description, parameters=schema,
                func=sql_query, timeout=limits.timeout + 5, untrusted=True,
                cooperative=_cooperative(url))


def _check_sqlite_syntax(url: str, tools_sql: list[tuple[str, str]]) -> None:
    """Bad SQL is an agent-loading error: compile each query when the file is there."""
    if not url.startswith("sqlite") or not os.path.exists(_sqlite_path(url)):
        return
    conn = sqlite3.connect(f"file:{quote(_sqlite_path(url))}?mode=ro", uri=True)
    try:
        for name, sql in tools_sql:
            try:
                conn.execute("EXPLAIN " + sql, {p: None for p in sql_parameters(sql)})
            except sqlite3.Error as exc:
                raise ValueError(f"query {name}: {exc}") from None
    finally:
        conn.close()


def build(config: dict) -> list[Tool]:
    """One tool per named query, plus the free SQL tool when enabled; raises on bad config."""
    url = config["database"]
    try:
        refuse_own_database(url)
        if url.startswith("sqlite"):
            _sqlite_path(url)
    except ToolError as exc:
        raise ValueError(str(exc)) from None
    limits = Limits(max_rows=config.get("max_rows", 100), timeout=float(config.get("timeout", 5)))
    queries = config.get("queries") or {}
    tools = [_query_tool(name, spec, url, limits) for name, spec in queries.items()]
    _check_sqlite_syntax(url, [(t.name, check_select(queries[t.name]["sql"])) for t in tools])
    free = config.get("free_sql") or {}
    if free.get("enabled"):
        tools.append(_free_sql_tool(free, url, limits))
    if not tools:
        raise ValueError("db_lookup needs at least one query in `queries` or `free_sql: {enabled: true}`")
    return tools


@hookimpl(trylast=True)
def register_tools(register):
    register(Toolset(name="db_lookup", build=build, config_schema=CONFIG_SCHEMA,
                     description="Named read-only database queries"))
