"""The usage ledger and GET /api/admin/usage: sums and costs match what the provider reported."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from agentd.store.models import UsageRecord
from tests.admin_support import PRICE, cli, client, new_key, start_operator_server
from tests.conftest import Reply, sse_events


@pytest.fixture
def server(agentd_server, fake_openai, tmp_path):
    return start_operator_server(agentd_server, fake_openai, tmp_path)


@pytest.fixture
def keys(server):
    admin_id, admin = new_key(server, "ops", admin=True)
    alice_id, alice = new_key(server, "alice")
    bob_id, bob = new_key(server, "bob")
    return {"admin": client(server, admin), "alice": client(server, alice), "bob": client(server, bob),
            "ids": {"ops": admin_id, "alice": alice_id, "bob": bob_id}}


def nano(dollars: Decimal) -> int:
    return int((dollars * 10**9).to_integral_value())


def priced_cost(prompt: int, completion: int) -> Decimal:
    return (Decimal(str(PRICE["input_per_mtok"])) * prompt + Decimal(str(PRICE["output_per_mtok"])) * completion) / 10**6


def run_turns(keys, fake):
    """alice: a tool turn (2 calls) and a streamed turn on `priced`; bob: one on `listed`, one on `unknown`."""
    fake.script(Reply(tool_calls=[("lookup_order", {"order_id": 7})], usage=(120, 30)),
                Reply(content="Order 7 shipped.", usage=(180, 12)))
    first = keys["alice"].post("/api/agents/priced/chat", json={"message": "Where is order 7?"})
    assert first.status_code == 200, first.text
    fake.script(Reply(content="Anything else?", usage=(33, 7)))
    streamed = keys["alice"].post("/api/agents/priced/chat", json={"message": "Thanks", "stream": True,
                                                                    "conversation_id": first.json()["conversation_id"]})
    assert sse_events(streamed)[-1]["type"] == "done"
    fake.script(Reply(content="Hi bob", usage=(1000, 2000), model="gpt-4o-mini"))
    assert keys["bob"].post("/api/agents/listed/chat", json={"message": "hello"}).status_code == 200
    fake.script(Reply(content="Unknown price", usage=(50, 25)))
    assert keys["bob"].post("/api/agents/unknown/chat", json={"message": "hello"}).status_code == 200


def listed_cost(prompt: int, completion: int) -> Decimal:
    from genai_prices import Usage, calc_price
    return Decimal(calc_price(Usage(input_tokens=prompt, output_tokens=completion), "gpt-4o-mini",
                              provider_id="openai").total_price)


def by_key(report):
    return {row["key"]: row for row in report["rows"]}


def test_sums_and_costs_match_the_provider_reported_usage(server, keys, fake_openai):
    run_turns(keys, fake_openai)
    report = keys["admin"].get("/api/admin/usage", params={"group_by": "agent"}).json()
    rows = by_key(report)
    assert rows["priced"]["turns"] == 2
    assert (rows["priced"]["prompt_tokens"], rows["priced"]["completion_tokens"]) == (120 + 180 + 33, 30 + 12 + 7)
    expected = nano(priced_cost(120, 30)) + nano(priced_cost(180, 12)) + nano(priced_cost(33, 7))
    assert rows["priced"]["cost_usd"] == float(Decimal(expected) / 10**9)
    assert rows["listed"]["cost_usd"] == float(Decimal(nano(listed_cost(1000, 2000))) / 10**9)
    assert rows["listed"]["cost_usd"] > 0
    assert rows["unknown"] == {"key": "unknown", "turns": 1, "prompt_tokens": 50, "completion_tokens": 25,
                               "cost_usd": None, "unpriced_calls": 1}
    total = report["total"]
    assert (total["turns"], total["prompt_tokens"], total["completion_tokens"]) == (4, 1383, 2074)
    assert total["cost_usd"] == float(Decimal(expected + nano(listed_cost(1000, 2000))) / 10**9)
    assert total["unpriced_calls"] == 1


def test_the_ledger_has_one_row_per_model_call(server, keys, fake_openai):
    run_turns(keys, fake_openai)
    with server.state.db.connection_context():
        rows = list(UsageRecord.select().order_by(UsageRecord.id))
    assert len(rows) == 5
    first = rows[0]
    assert (first.agent_id, first.user_id, first.key_id, first.provider, first.model) == (
        "priced", "alice", keys["ids"]["alice"], "openai", "fake-model")
    assert (first.prompt_tokens, first.completion_tokens) == (120, 30)
    assert first.duration_ms is not None and first.duration_ms >= 0
    assert rows[0].turn_id == rows[1].turn_id != rows[2].turn_id
    assert rows[0].conversation_id == rows[2].conversation_id
    assert [r.cost_nanousd is None for r in rows] == [False, False, False, False, True]


def test_group_by_user_model_key_and_day(server, keys, fake_openai):
    run_turns(keys, fake_openai)
    admin = keys["admin"]
    users = by_key(admin.get("/api/admin/usage", params={"group_by": "user"}).json())
    assert set(users) == {"alice", "bob"}
    assert users["bob"]["prompt_tokens"] == 1050 and users["bob"]["turns"] == 2
    models = by_key(admin.get("/api/admin/usage", params={"group_by": "model"}).json())
    assert set(models) == {"fake-model", "gpt-4o-mini"}
    assert models["gpt-4o-mini"]["completion_tokens"] == 2000
    by_api_key = by_key(admin.get("/api/admin/usage", params={"group_by": "key"}).json())
    assert set(by_api_key) == {keys["ids"]["alice"], keys["ids"]["bob"]}
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    days = admin.get("/api/admin/usage", params={"group_by": "day"}).json()
    assert [row["key"] for row in days["rows"]] == [today]
    assert days["rows"][0]["turns"] == 4


def test_from_and_to_filter_by_time(server, keys, fake_openai):
    run_turns(keys, fake_openai)
    admin = keys["admin"]
    today = dt.datetime.now(dt.timezone.utc).date()
    inside = admin.get("/api/admin/usage", params={"group_by": "agent", "from": today.isoformat(),
                                                   "to": today.isoformat()}).json()
    assert inside["total"]["turns"] == 4
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    after = admin.get("/api/admin/usage", params={"group_by": "agent", "from": tomorrow}).json()
    assert after == {"group_by": "agent", "rows": [], "total": {"turns": 0, "prompt_tokens": 0,
                     "completion_tokens": 0, "cost_usd": None, "unpriced_calls": 0}}
    past = admin.get("/api/admin/usage", params={"to": "2020-01-01T00:00:00Z"}).json()
    assert past["total"]["turns"] == 0
    one_agent = admin.get("/api/admin/usage", params={"group_by": "user", "agent": "listed"}).json()
    assert [row["key"] for row in one_agent["rows"]] == ["bob"]


@pytest.mark.parametrize("params, field", [
    ({"group_by": "planet"}, "group_by"), ({"from": "yesterday"}, "from"), ({"to": "2024-13-45"}, "to"),
    ({"from": "2025-02-01", "to": "2025-01-01"}, "to")])
def test_bad_group_by_or_dates_are_400(server, keys, params, field):
    response = keys["admin"].get("/api/admin/usage", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_REQUEST" and error["message"].startswith(field + ":")


def test_cached_answers_add_no_ledger_row(agentd_server, fake_openai, tmp_path):
    from tests.conftest import openai_agent
    server = agentd_server({"cached": openai_agent(fake_openai, cache={"ttl": 600})})
    fake_openai.script(Reply(content="Opening hours: 9-5", usage=(40, 8)))
    for _ in range(2):
        assert server.chat("cached", "When are you open?").status_code == 200
    assert fake_openai.calls == 1
    report = server.client.get("/api/admin/usage", params={"group_by": "agent"}).json()
    assert report["total"]["turns"] == 1 and report["total"]["prompt_tokens"] == 40


def test_a_failed_turn_still_records_the_calls_it_made(server, keys, fake_openai):
    fake_openai.script(Reply(tool_calls=[("lookup_order", {"order_id": 1})], usage=(70, 9)),
                       Reply(status=500), Reply(status=500), Reply(status=500))
    response = keys["alice"].post("/api/agents/unknown/chat", json={"message": "order 1?"})
    assert response.status_code in (502, 503)
    report = keys["admin"].get("/api/admin/usage", params={"group_by": "agent"}).json()
    assert by_key(report)["unknown"]["prompt_tokens"] == 70


class StatementLog:
    """Every SQL statement the app runs, with the transaction it ran in (None: autocommit)."""

    def __init__(self, database):
        self.database, self.entries = database, []
        self.original = database.execute_sql
        database.execute_sql = self.execute_sql

    def execute_sql(self, sql, params=None, *args, **kwargs):
        stack = self.database._state.transactions
        self.entries.append((sql, id(stack[0]) if stack else None))
        return self.original(sql, params, *args, **kwargs)

    def close(self):
        self.database.execute_sql = self.original


@pytest.mark.parametrize("stream", [False, True])
def test_the_ledger_writes_inside_the_turns_own_transaction(server, keys, fake_openai, stream):
    fake_openai.script(Reply(tool_calls=[("lookup_order", {"order_id": 3})], usage=(11, 2)),
                       Reply(content="Shipped.", usage=(13, 4)))
    log = StatementLog(server.state.db)
    try:
        response = keys["alice"].post("/api/agents/priced/chat", json={"message": "order 3?", "stream": stream})
        assert response.status_code == 200
    finally:
        log.close()
    ledger = [(sql, txn) for sql, txn in log.entries if "usage_record" in sql]
    assert len(ledger) == 1, ledger  # one multi-row INSERT for both model calls
    txn = ledger[0][1]
    assert txn is not None
    # ...in the same transaction as the answer's own write and the turn lock's release.
    same = [sql for sql, t in log.entries if t == txn]
    assert any('"message"' in sql and ("INSERT" in sql or "UPDATE" in sql) for sql in same)
    assert any('"conversation"' in sql and "busy_token" in sql for sql in same)


def test_cli_usage_prints_the_same_table(server, keys, fake_openai, database_url):
    run_turns(keys, fake_openai)
    result = cli(database_url, "usage", "--group-by", "agent")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["agent", "turns", "prompt", "completion", "cost_usd"]
    table = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert table["unknown"] == ["1", "50", "25", "unknown"]
    assert table["priced"][:3] == ["2", "333", "49"]
    assert table["TOTAL"][:3] == ["4", "1383", "2074"]
    bad = cli(database_url, "usage", "--since", "not-a-date")
    assert bad.returncode == 2 and "since:" in bad.stderr


def test_cli_keys_create_admin_and_list(server, database_url):
    created = cli(database_url, "keys", "create", "--user", "ops", "--admin")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created admin key")
    key = created.stdout.strip().splitlines()[-1]
    cli(database_url, "keys", "create", "--user", "alice")
    listing = cli(database_url, "keys", "list").stdout.splitlines()
    assert listing[0].split()[:4] == ["id", "user", "agents", "admin"]
    admin_of = {line.split()[1]: line.split()[3] for line in listing[1:]}
    assert admin_of == {"ops": "yes", "alice": "no"}
    assert client(server, key).get("/api/admin/usage").status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_a_turn_paused_for_approval_keeps_its_model_calls_in_the_ledger(agentd_server, fake_openai, tmp_path,
                                                                        stream):
    from tests.approval_support import SHOP_PLUGIN, decide, plugin_folder, shop_agent
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN)
    server = agentd_server({"shop": shop_agent(fake_openai)}, plugins_dir=str(folder))
    fake_openai.script(Reply(tool_calls=[("refund_order", {"order_id": 1042, "amount": 20})], usage=(40, 9)),
                       Reply(content="Refunded.", usage=(60, 4)))
    paused = server.client.post("/api/agents/shop/chat", json={"message": "Refund 1042", "stream": stream})
    body = sse_events(paused)[-1]["message"] if stream else paused.json()
    conversation = body["conversation_id"]
    with server.state.db.connection_context():
        assert [(r.prompt_tokens, r.completion_tokens) for r in UsageRecord.select()] == [(40, 9)]
    approval = server.client.get(f"/api/conversations/{conversation}/approvals").json()["approvals"][0]
    assert decide(server, conversation, approval["id"]).status_code == 200
    with server.state.db.connection_context():
        rows = UsageRecord.select().order_by(UsageRecord.id)
        assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [(40, 9), (60, 4)]
