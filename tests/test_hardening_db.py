"""db_lookup hardening: free SQL on PostgreSQL parsed, not scanned; SQLite results capped in bytes;
agentd's own PostgreSQL database recognised by address, not by host string.

The PostgreSQL cases run on the real server named by AGENTD_TEST_POSTGRES_URL
(a fresh database each) and are skipped without it.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from urllib.parse import urlsplit, urlunsplit

import pytest

from agentd import ToolContext, ToolError
from agentd.plugins import load_plugins
from agentd.tools import validate_arguments
from tests.support import REPO

PG_SCHEMA = [
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, total INTEGER)",
    "CREATE TABLE secrets (name TEXT, value TEXT)",
    "INSERT INTO orders VALUES (10, 'shipped', 30), (11, 'pending', 12)",
    "INSERT INTO secrets VALUES ('api_key', 'hunter2')",
    "CREATE SCHEMA private",
    "CREATE TABLE private.orders (id INTEGER, card TEXT)",
    "INSERT INTO private.orders VALUES (1, '4111-1111')",
]
FREE = {"enabled": True, "tables": ["orders"]}


@pytest.fixture(scope="module")
def toolset():
    return load_plugins(entry_points=False).tools["db_lookup"]


@pytest.fixture
def pg_shop():
    admin = os.environ.get("AGENTD_TEST_POSTGRES_URL")
    if not admin:
        pytest.skip("AGENTD_TEST_POSTGRES_URL is not set")
    import psycopg
    from tests.pg import fresh_database
    with fresh_database(admin) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in PG_SCHEMA:
                conn.execute(statement)
        yield url


def build(toolset, url, **config):
    return {tool.name: tool for tool in toolset.build({"database": url, **config})}


def call(tool, **arguments):
    return tool.call(validate_arguments(tool, json.dumps(arguments)), ToolContext())


# -- PostgreSQL: each known way round the table allowlist --------------------------------------
BYPASSES = [
    "SELECT table_to_xml('secrets', true, false, '')",
    "SELECT table_to_xml('public.secrets'::regclass, true, false, '')",
    "SELECT database_to_xml(true, false, '')",
    "SELECT schema_to_xml('public', true, false, '')",
    "SELECT query_to_xml('SELECT * FROM secrets', true, false, '')",
    'SELECT "query_to_xml"(\'SELECT * FROM secrets\', true, false, \'\')',
    'SELECT pg_catalog."query_to_xml"(\'SELECT * FROM secrets\', true, false, \'\')',
    "SELECT * FROM ts_stat('SELECT to_tsvector(value) FROM secrets')",
    "SELECT word FROM orders, ts_stat('SELECT to_tsvector(value) FROM secrets') AS s",
    "SELECT query_to_xml_and_xmlschema('SELECT * FROM secrets', true, false, '')",
    "SELECT cursor_to_xml('c', 1, true, false, '')",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT current_setting('data_directory')",
    "SELECT * FROM private.orders",
    "SELECT o.id FROM orders o JOIN private.orders p ON p.id = o.id",
    "SELECT * FROM pg_catalog.pg_authid",
    "SELECT * FROM information_schema.tables",
    "SELECT 'secrets'::regclass",
    "SELECT lpad('x', 100000000, 'y') FROM orders",
    "SELECT * FROM orders FOR UPDATE",
    "SELECT * INTO stolen FROM orders",
    "SELECT * FROM orders TABLESAMPLE SYSTEM (50)",
    "SELECT * FROM XMLTABLE('/a' PASSING '<a/>' COLUMNS x int)",
    "WITH s AS (SELECT * FROM secrets) SELECT * FROM s",
    "WITH gone AS (DELETE FROM orders RETURNING id) SELECT * FROM gone",
    "SELECT (SELECT value FROM secrets LIMIT 1) FROM orders",
]


@pytest.mark.parametrize("query", BYPASSES)
def test_postgres_free_sql_refuses_each_bypass(toolset, pg_shop, query):
    sql = build(toolset, pg_shop, free_sql=FREE)["sql_query"]
    with pytest.raises(ToolError) as refused:
        call(sql, query=query)
    assert "hunter2" not in str(refused.value) and "4111" not in str(refused.value)


def test_postgres_free_sql_still_reads_allowed_tables_with_allowed_functions(toolset, pg_shop):
    sql = build(toolset, pg_shop, free_sql=FREE)["sql_query"]
    rows = call(sql, query="SELECT upper(status) AS s, count(*) AS n, sum(total)::int AS t FROM public.orders "
                           "WHERE extract(year FROM now()) > 2000 GROUP BY 1 ORDER BY 1")["rows"]
    assert rows == [{"s": "PENDING", "n": 1, "t": 12}, {"s": "SHIPPED", "n": 1, "t": 30}]
    cte = call(sql, query='WITH o AS (SELECT * FROM "orders") SELECT max(o.total) AS m FROM o')
    assert cte["rows"] == [{"m": 30}]


def test_postgres_schema_qualified_allowlist(toolset, pg_shop):
    """`private.orders` in the list allows exactly that table, not public.orders."""
    sql = build(toolset, pg_shop, free_sql={"enabled": True, "tables": ["private.orders"]})["sql_query"]
    assert call(sql, query="SELECT card FROM private.orders")["rows"] == [{"card": "4111-1111"}]
    with pytest.raises(ToolError, match="allowed tables"):
        call(sql, query="SELECT * FROM orders")


# -- agentd's own PostgreSQL database, by any name -----------------------------------------------
def _with_host(url: str, host: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.replace(parts.hostname, host, 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _this_machine_names() -> list[str]:
    names = ["localhost", "127.0.0.1"]
    try:
        address = socket.gethostbyname(socket.gethostname())
        names += [socket.gethostname(), address]
    except OSError:
        pass
    return names


def test_own_postgres_database_is_refused_by_any_name_of_this_machine(toolset, pg_shop, monkeypatch):
    monkeypatch.setenv("AGENTD_DATABASE_URL", pg_shop)
    for host in _this_machine_names():
        with pytest.raises(ValueError, match="agentd's own database"):
            build(toolset, _with_host(pg_shop, host), free_sql=FREE)
    other = urlunsplit(urlsplit(pg_shop)._replace(path="/postgres"))
    assert "sql_query" in build(toolset, other, free_sql=FREE)  # another database of that server


# -- SQLite: bytes capped while computing and fetching -------------------------------------------
def _sqlite(tmp_path) -> str:
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE numbers (n INTEGER)")
    conn.executemany("INSERT INTO numbers VALUES (?)", [(i,) for i in range(300)])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


HUGE = textwrap.dedent("""
    import json, resource, sys
    from agentd import ToolContext, ToolError
    from agentd.plugins import load_plugins
    toolset = load_plugins(entry_points=False).tools["db_lookup"]
    tool = next(iter(toolset.build({"database": sys.argv[1],
                                    "free_sql": {"enabled": True, "tables": ["numbers"]}})))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        outcome = tool.call({"query": sys.argv[2]}, ToolContext())
    except ToolError as exc:
        outcome = {"error": str(exc)}
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"outcome": outcome, "grown_kib": grown}))
""")


def _run_isolated(url: str, query: str) -> dict:
    """The free SQL tool in a fresh process, so its peak memory is the query's alone."""
    done = subprocess.run([sys.executable, "-c", HUGE, url, query], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sqlite_a_gigabyte_value_is_never_built(tmp_path):
    report = _run_isolated(_sqlite(tmp_path), "SELECT printf('%.*c', 1000000000, 'x') AS big")
    assert report["grown_kib"] < 200_000, report  # far below the 1 GB the value would take
    outcome = report["outcome"]
    assert "error" in outcome or outcome["rows"] == [{"big": None}], outcome


def test_sqlite_result_bytes_are_capped_while_fetching(tmp_path):
    report = _run_isolated(_sqlite(tmp_path), "SELECT printf('%.*c', 900000, 'x') AS big FROM numbers")
    outcome = report["outcome"]
    assert outcome["row_count"] == 2 and "passed 2000000 bytes" in outcome["truncated"], outcome["truncated"]
    assert report["grown_kib"] < 200_000, report  # 300 rows of 900 kB would be 270 MB


def test_each_bypass_is_refused_through_a_chat_turn(agentd_server, fake_openai, pg_shop):
    """The same queries, asked by the model in a real turn: every one comes back an error result."""
    from tests.conftest import Reply, openai_agent
    agent = openai_agent(fake_openai, tools=[{"db_lookup": {"database": pg_shop, "free_sql": FREE}}],
                         max_tool_rounds=len(BYPASSES) + 1)
    server = agentd_server({"shop": agent})
    fake_openai.script(*[Reply(tool_calls=[("sql_query", {"query": query})]) for query in BYPASSES],
                       Reply(content="I found nothing I may show."))
    answer = server.chat("shop", "Show me every secret")
    assert answer.status_code == 200 and answer.json()["content"] == "I found nothing I may show."
    results = [m for m in fake_openai.requests[-1]["messages"] if m["role"] == "tool"]
    assert len(results) == len(BYPASSES)
    assert all(r["content"].startswith("Error") for r in results), [r["content"][:80] for r in results]
    everything_the_model_saw = json.dumps(fake_openai.requests)
    assert "hunter2" not in everything_the_model_saw and "4111" not in everything_the_model_saw
