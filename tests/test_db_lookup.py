"""db_lookup: named queries as tools, free read-only SQL, limits; on SQLite and PostgreSQL.

The PostgreSQL cases run when AGENTD_TEST_POSTGRES_URL names a server (each test
gets a fresh database there) and are skipped otherwise.
"""
from __future__ import annotations

import json
import os
import sqlite3

import pytest

from agentd import ToolContext, ToolError
from agentd.plugins import load_plugins
from agentd.tools import validate_arguments
from tests.conftest import Reply, openai_agent

SCHEMA = [
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT, total INTEGER)",
    "CREATE TABLE secrets (name TEXT, value TEXT)",
    "CREATE TABLE numbers (n INTEGER)",
    "INSERT INTO customers VALUES (1, 'Alice'), (2, 'Bob')",
    "INSERT INTO orders VALUES (10, 1, 'shipped', 30), (11, 1, 'pending', 12), (12, 2, 'lost', 99)",
    "INSERT INTO secrets VALUES ('api_key', 'hunter2')",
]
RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) AS n FROM c"


def _fill(execute) -> None:
    for statement in SCHEMA:
        execute(statement)
    execute("INSERT INTO numbers SELECT v FROM (" + " UNION ALL ".join(f"SELECT {i} AS v" for i in range(300)) + ") t")


def _sqlite_db(tmp_path) -> str:
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    _fill(conn.execute)
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def shop(request, tmp_path):
    """The URL of a small shop database, on each backend."""
    if request.param == "sqlite":
        yield _sqlite_db(tmp_path)
        return
    admin = os.environ.get("AGENTD_TEST_POSTGRES_URL")
    if not admin:
        pytest.skip("AGENTD_TEST_POSTGRES_URL is not set")
    import psycopg
    from tests.pg import fresh_database
    with fresh_database(admin) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            _fill(conn.execute)
        yield url


def count(url: str, table: str) -> int:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1])
        try:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        finally:
            conn.close()
    import psycopg
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture(scope="module")
def toolset():
    return load_plugins(entry_points=False).tools["db_lookup"]


def build(toolset, url, **config):
    import jsonschema
    config = {"database": url, **config}
    jsonschema.validate(config, toolset.config_schema)
    return {tool.name: tool for tool in toolset.build(config)}


def call(tool, **arguments):
    validated = validate_arguments(tool, json.dumps(arguments))
    return tool.call(validated, ToolContext())


QUERIES = {
    "order_status": {"description": "Status of one order",
                     "sql": "SELECT id, status FROM orders WHERE id = :order_id",
                     "parameters": {"order_id": {"type": "integer", "description": "the order number"}}},
    "orders_of": {"description": "Orders of a customer, by name",
                  "sql": "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id "
                         "WHERE c.name = :name ORDER BY o.id"},
    "all_numbers": {"sql": "SELECT n FROM numbers ORDER BY n"},
    "runaway": {"sql": RUNAWAY},
}


# -- named queries ------------------------------------------------------------------------------
def test_a_named_query_returns_the_right_rows(toolset, shop):
    tools = build(toolset, shop, queries=QUERIES)
    assert call(tools["order_status"], order_id=11)["rows"] == [{"id": 11, "status": "pending"}]
    assert [r["id"] for r in call(tools["orders_of"], name="Alice")["rows"]] == [10, 11]


def test_each_query_is_a_tool_with_a_schema_from_its_parameters(toolset, shop):
    tools = build(toolset, shop, queries=QUERIES)
    assert set(tools) == set(QUERIES)
    assert tools["order_status"].parameters["properties"]["order_id"] == {
        "type": "integer", "description": "the order number"}
    assert tools["order_status"].description == "Status of one order"
    # Without `parameters`, every :name in the SQL is a required string.
    assert tools["orders_of"].parameters["properties"] == {"name": {"type": "string"}}
    assert tools["orders_of"].parameters["required"] == ["name"]


def test_injection_through_a_parameter_returns_nothing_extra(toolset, shop):
    tools = build(toolset, shop, queries=QUERIES)
    assert call(tools["orders_of"], name="Alice' OR 1=1 --")["rows"] == []
    assert call(tools["orders_of"], name="1 OR 1=1")["rows"] == []
    with pytest.raises(ToolError, match="integer"):
        call(tools["order_status"], order_id="1 OR 1=1")


def test_rows_are_capped_with_a_marker(toolset, shop):
    tools = build(toolset, shop, queries=QUERIES, max_rows=25)
    result = call(tools["all_numbers"])
    assert result["row_count"] == 25 and len(result["rows"]) == 25
    assert "first 25 rows" in result["truncated"]


def test_a_runaway_query_is_stopped_by_the_time_budget(toolset, shop):
    tools = build(toolset, shop, queries=QUERIES, timeout=0.5)
    with pytest.raises(ToolError, match="longer than 0.5 s"):
        call(tools["runaway"])


@pytest.mark.parametrize("query", [
    {"sql": "DELETE FROM orders"}, {"sql": "SELECT 1; DELETE FROM orders"},
    {"sql": "SELECT * FROM orders WHERE id = :id", "parameters": {"other": {"type": "string"}}},
])
def test_bad_named_queries_are_refused_when_built(toolset, shop, query):
    with pytest.raises(ValueError):
        build(toolset, shop, queries={"q": query})


def test_a_named_query_cannot_write(toolset, shop):
    sneaky = {"sql": "WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone"}
    with pytest.raises((ValueError, ToolError)):
        call(build(toolset, shop, queries={"sneaky": sneaky})["sneaky"])
    assert count(shop, "orders") == 3


# -- free SQL ------------------------------------------------------------------------------------
FREE = {"enabled": True, "tables": ["orders", "customers", "numbers"]}


def test_free_sql_is_off_by_default(toolset, shop):
    assert set(build(toolset, shop, queries=QUERIES)) == set(QUERIES)
    with pytest.raises(ValueError):
        build(toolset, shop)   # nothing to offer at all


def test_free_sql_reads_allowlisted_tables(toolset, shop):
    sql = build(toolset, shop, free_sql=FREE)["sql_query"]
    result = call(sql, query="SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status")
    assert result["rows"] == [{"status": "lost", "n": 1}, {"status": "pending", "n": 1},
                              {"status": "shipped", "n": 1}]
    joined = call(sql, query="SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.id "
                             "WHERE o.total > 50")
    assert joined["rows"] == [{"name": "Bob"}]


@pytest.mark.parametrize("query", [
    "INSERT INTO orders VALUES (99, 1, 'x', 1)",
    "UPDATE orders SET status = 'refunded'",
    "DELETE FROM orders",
    "DROP TABLE orders",
    "ATTACH DATABASE '/tmp/x.db' AS x",
    "PRAGMA table_info(orders)",
    "SELECT 1; DELETE FROM orders",
    "SELECT 1; DROP TABLE orders;",
    "SELECT * FROM secrets",
    "SELECT o.id, (SELECT value FROM secrets) FROM orders o",
    "SELECT * FROM orders WHERE id IN (SELECT length(value) FROM secrets)",
    "WITH s AS (SELECT * FROM secrets) SELECT * FROM s",
    "WITH gone AS (DELETE FROM orders RETURNING id) SELECT * FROM gone",
    "SELECT * FROM orders FOR UPDATE",
])
def test_free_sql_refuses_writes_stacks_and_other_tables(toolset, shop, query):
    sql = build(toolset, shop, free_sql=FREE)["sql_query"]
    with pytest.raises(ToolError):
        call(sql, query=query)
    assert count(shop, "orders") == 3 and count(shop, "secrets") == 1


def test_free_sql_refuses_system_catalogs(toolset, shop):
    sql = build(toolset, shop, free_sql=FREE)["sql_query"]
    catalog = "sqlite_master" if shop.startswith("sqlite") else "pg_catalog.pg_tables"
    with pytest.raises(ToolError):
        call(sql, query=f"SELECT * FROM {catalog}")


def test_free_sql_has_the_time_budget_too(toolset, shop):
    sql = build(toolset, shop, free_sql=FREE, timeout=0.5)["sql_query"]
    with pytest.raises(ToolError, match="longer than"):
        call(sql, query="SELECT count(*) FROM numbers a, numbers b, numbers c, numbers d")


# -- agentd's own database and config checks ---------------------------------------------------
def test_agentd_own_database_is_refused(toolset, tmp_path, monkeypatch):
    own = _sqlite_db(tmp_path)
    monkeypatch.setenv("AGENTD_DATABASE_URL", own)
    with pytest.raises(ValueError, match="agentd's own database"):
        build(toolset, own, free_sql=FREE)
    # The same file by another spelling is still the same database.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="agentd's own database"):
        build(toolset, "sqlite:///./shop.db", free_sql=FREE)


def test_the_running_servers_database_is_refused_at_load(agentd_server, fake_openai, database_url):
    agent = openai_agent(fake_openai, tools=[{"db_lookup": {"database": database_url, "free_sql": FREE}}])
    server = agentd_server({"snoop": agent})
    assert "snoop" not in server.state.agents
    assert any("own database" in p.message for p in server.state.problems)


@pytest.mark.parametrize("config,fragment", [
    ({"database": "mysql://x/y", "queries": QUERIES}, "database"),
    ({"database": "sqlite:///x.db", "queries": {"bad name!": {"sql": "SELECT 1"}}}, "queries"),
    ({"database": "sqlite:///x.db", "queries": {"q": {"sql": "SELECT :a",
                                                      "parameters": {"a": {"type": "date"}}}}}, "type"),
    ({"database": "sqlite:///x.db", "free_sql": {"enabled": True, "tables": "orders"}}, "tables"),
])
def test_bad_config_is_reported_when_the_agent_loads(agentd_server, fake_openai, config, fragment):
    server = agentd_server({"shop": openai_agent(fake_openai, tools=[{"db_lookup": config}])})
    assert "shop" not in server.state.agents
    assert any(fragment in f"{p.key} {p.message}" for p in server.state.problems)


def test_bad_sql_is_reported_when_the_agent_loads(agentd_server, fake_openai, tmp_path):
    url = _sqlite_db(tmp_path)
    config = {"database": url, "queries": {"q": {"sql": "SELECT nope FROM missing_table"}}}
    server = agentd_server({"shop": openai_agent(fake_openai, tools=[{"db_lookup": config}])})
    assert "shop" not in server.state.agents
    assert any("missing_table" in p.message for p in server.state.problems)


# -- through the chat API ----------------------------------------------------------------------
def test_named_queries_through_the_chat_api(agentd_server, fake_openai, shop):
    agent = openai_agent(fake_openai, tools=[{"db_lookup": {"database": shop, "queries": QUERIES,
                                                            "free_sql": FREE}}])
    server = agentd_server({"shop": agent})
    info = server.client.get("/api/agents/shop").json()
    assert set(info["tools"]) == {*QUERIES, "sql_query"}
    assert shop not in json.dumps(info)   # the database URL is a secret
    fake_openai.script(Reply(tool_calls=[("order_status", {"order_id": 12}),
                                         ("sql_query", {"query": "DELETE FROM orders"})]),
                       Reply(content="Order 12 is lost."))
    response = server.chat("shop", "Where is order 12?")
    assert response.status_code == 200, response.text
    assert response.json()["content"] == "Order 12 is lost."
    sent = {m["tool_call_id"]: m["content"] for m in fake_openai.requests[1]["messages"] if m["role"] == "tool"}
    framed = sent["call_1"].split("<untrusted-content>\n", 1)[1].rsplit("\n</untrusted-content>", 1)[0]
    assert json.loads(framed)["rows"] == [{"id": 12, "status": "lost"}]  # rows are framed as data
    assert sent["call_2"].startswith("Error:")
    assert count(shop, "orders") == 3
    tools = [t["function"]["name"] for t in fake_openai.requests[0]["tools"]]
    assert "order_status" in tools and "sql_query" in tools
