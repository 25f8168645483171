"""db_lookup's checks that need more than text: free SQL parsed by PostgreSQL's own parser,
and "is this agentd's own database?" decided on resolved addresses.

Free SQL on PostgreSQL is parsed with pglast (libpg_query, the server's real
grammar), so a quoted `"query_to_xml"(…)`, a schema-qualified
`pg_catalog.table_to_xml(…)` or a function in FROM (`ts_stat('…')`) is seen as
the function call it is. Every node of the tree must be of a kind known to
be harmless in a read-only SELECT, every function and type cast must be on an
allowlist, and every table must be one of the agent's tables (schema
included). The plan check in db_lookup runs afterwards as a second opinion.
None of this replaces the operator's database role: a role with SELECT on the
allowlisted views and nothing else is the real boundary (docs/security.md).
"""
from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import unquote, urlsplit

from agentd import ToolError

# Node kinds a read-only SELECT over tables may contain. Anything else (locking
# clauses, SELECT INTO, data-modifying CTEs, XML and JSON table functions,
# TABLESAMPLE, parameters, …) is refused by kind.
_NODES = frozenset("""A_ArrayExpr A_Const A_Expr A_Indices A_Indirection A_Star Alias BitString
    BoolExpr Boolean BooleanTest CaseExpr CaseWhen CoalesceExpr CollateClause ColumnRef
    CommonTableExpr Float FuncCall GroupingSet Integer JoinExpr MinMaxExpr NamedArgExpr NullTest
    RangeFunction RangeSubselect RangeVar ResTarget RowExpr SQLValueFunction SelectStmt SortBy
    String SubLink TypeCast TypeName WindowDef WithClause""".split())

# Functions free SQL may call: aggregates, window functions and plain value
# functions that neither read other relations, nor run SQL given as text,
# nor build huge values (no repeat, lpad, rpad, generate_series).
PG_FUNCTIONS = frozenset("""count sum avg min max string_agg array_agg bool_and bool_or every
    stddev stddev_pop stddev_samp variance var_pop var_samp
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value
    abs round ceil ceiling floor trunc sign mod power sqrt
    lower upper length char_length character_length substr substring btrim ltrim rtrim trim
    replace concat concat_ws left right position strpos split_part initcap starts_with
    now date_trunc date_part extract to_char to_date to_timestamp age make_date
    json_extract_path_text jsonb_extract_path_text json_array_length jsonb_array_length
    json_typeof jsonb_typeof""".split())

PG_TYPES = frozenset("""int2 int4 int8 smallint integer bigint numeric decimal float4 float8 real
    bool boolean text varchar bpchar char date timestamp timestamptz time timetz interval json
    jsonb uuid""".split())


def _walk(node):
    from pglast import ast
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from _walk(getattr(node, name))


def _name(parts) -> tuple[str | None, str]:
    """(schema, name) of a funcname/names list of String nodes."""
    names = [p.sval for p in parts or () if hasattr(p, "sval")]
    return (names[-2] if len(names) > 1 else None), (names[-1] if names else "")


def table_allowed(schema: str | None, name: str, tables: frozenset) -> bool:
    """`orders` in the list means public.orders (or whatever the search path finds first,
    which the plan check pins to public); `sales.orders` means exactly that."""
    schema, name = (schema or "").lower(), name.lower()
    if schema and schema != "public":
        return f"{schema}.{name}" in tables
    return name in tables or f"public.{name}" in tables


def _parse(sql: str):
    from pglast import parse_sql
    from pglast.parser import ParseError
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        raise ToolError(f"the query does not parse: {exc}") from None
    if len(statements) != 1:
        raise ToolError("only one statement is allowed")
    return statements[0].stmt


def check_postgres_free_sql(sql: str, tables: frozenset) -> None:
    """Refuse anything but one SELECT over `tables` with allowlisted functions and casts."""
    from pglast import ast
    statement = _parse(sql)
    if not isinstance(statement, ast.SelectStmt):
        raise ToolError(f"only SELECT queries are allowed, not {type(statement).__name__}")
    nodes = list(_walk(statement))
    ctes = {n.ctename.lower() for n in nodes if isinstance(n, ast.CommonTableExpr)}
    for node in nodes:
        kind = type(node).__name__
        if kind not in _NODES:
            raise ToolError(f"{kind} is not allowed in free SQL")
        if isinstance(node, ast.FuncCall):
            schema, name = _name(node.funcname)
            if schema not in (None, "pg_catalog") or name.lower() not in PG_FUNCTIONS:
                shown = f"{schema}.{name}" if schema else name
                raise ToolError(f"function {shown} is not allowed in free SQL")
        elif isinstance(node, ast.TypeName):
            schema, name = _name(node.names)
            if schema not in (None, "pg_catalog") or name.lower() not in PG_TYPES:
                raise ToolError(f"type {name} is not allowed in free SQL")
        elif isinstance(node, ast.RangeVar):
            cte = node.schemaname is None and node.relname.lower() in ctes
            if not cte and not table_allowed(node.schemaname, node.relname, tables):
                shown = f"{node.schemaname}.{node.relname}" if node.schemaname else node.relname
                raise ToolError(f"table {shown} is not in this agent's allowed tables")


# ---------------------------------------------------------------- agentd's own database
def _local(ip: str) -> bool:
    """Loopback, or an address of one of this machine's interfaces (it can be bound)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    if address.is_loopback or address.is_unspecified:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((ip, 0))
        return True
    except OSError:
        return False


def _server_addresses(host: str) -> frozenset:
    """Where a PostgreSQL host setting leads: 'this machine', or the addresses it resolves to."""
    if not host or host.startswith("/") or host.startswith("@"):
        return frozenset({"this machine"})  # a Unix socket is always on this machine
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return frozenset({host.lower()})  # unresolvable now: compare the name itself
    ips = {info[4][0] for info in infos}
    return frozenset("this machine" if _local(ip) else ip for ip in ips)


def postgres_identity(params: dict) -> tuple:
    """('postgresql', addresses, port, dbname) from libpq-style connection parameters."""
    hosts = [h for h in str(params.get("host") or "").split(",")] or [""]
    addresses = frozenset().union(*(_server_addresses(h.strip()) for h in hosts))
    port = int(str(params.get("port") or 5432).split(",")[0])
    user = params.get("user") or os.environ.get("PGUSER") or ""
    return ("postgresql", addresses, port, params.get("dbname") or user)


def postgres_url_identity(url: str) -> tuple:
    try:
        from psycopg.conninfo import conninfo_to_dict
        params = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 — psycopg refuses odd URLs; read the plain parts
        parts = urlsplit(url)
        params = {"host": parts.hostname, "port": parts.port, "user": unquote(parts.username or ""),
                  "dbname": unquote(parts.path.lstrip("/"))}
    return postgres_identity(params)


def same_postgres(a: tuple, b: tuple) -> bool:
    """The same server (a shared address, 'this machine' included) and the same database."""
    return a[2] == b[2] and a[3] == b[3] and bool(a[1] & b[1])
