"""`agentd export`: one row per turn, as JSON lines or CSV, filtered by agent and time."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest

from agentd.operators import export
from tests.admin_support import PRICE, cli, client, new_key, start_operator_server
from tests.conftest import Reply

HEADER = ["conversation_id", "agent_id", "user_id", "channel", "question", "answer", "prompt_tokens",
          "completion_tokens", "cost_usd", "tool_calls", "created_at"]


@pytest.fixture
def server(agentd_server, fake_openai, tmp_path):
    return start_operator_server(agentd_server, fake_openai, tmp_path)


@pytest.fixture
def turns(server, fake_openai):
    """Three turns: alice (a tool turn, then a follow-up) on `priced`, bob on `unknown`."""
    _, key_a = new_key(server, "alice")
    _, key_b = new_key(server, "bob")
    alice, bob = client(server, key_a), client(server, key_b)
    fake_openai.script(Reply(tool_calls=[("lookup_order", {"order_id": 5})], usage=(100, 10)),
                       Reply(content="Order 5 shipped, \"tracked\", on Monday.", usage=(140, 20)))
    first = alice.post("/api/agents/priced/chat", json={"message": "Where is order 5?"}).json()
    fake_openai.script(Reply(content="You're welcome.", usage=(30, 5)))
    alice.post("/api/agents/priced/chat", json={"message": "Thanks, bye", "conversation_id": first["conversation_id"],
                                                 "stream": True}).read()
    fake_openai.script(Reply(content="Line one\nline two", usage=(12, 6)))
    second = bob.post("/api/agents/unknown/chat", json={"message": "Multi-line, please"}).json()
    return first["conversation_id"], second["conversation_id"]


def test_jsonl_has_one_row_per_turn(server, turns, database_url):
    result = cli(database_url, "export", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [list(row) for row in rows] == [HEADER] * 3
    first, second, third = rows
    assert first["conversation_id"] == second["conversation_id"] == turns[0]
    assert (first["agent_id"], first["user_id"], first["channel"]) == ("priced", "alice", "api")
    assert first["question"] == "Where is order 5?"
    assert first["answer"] == "Order 5 shipped, \"tracked\", on Monday."
    assert (first["prompt_tokens"], first["completion_tokens"]) == (240, 30)
    assert first["cost_usd"] == pytest.approx((240 * PRICE["input_per_mtok"] + 30 * PRICE["output_per_mtok"]) / 1e6)
    assert first["tool_calls"] == ["lookup_order"]
    assert second["answer"] == "You're welcome." and second["tool_calls"] == []
    assert third["user_id"] == "bob" and third["cost_usd"] is None and third["answer"] == "Line one\nline two"
    assert dt.datetime.fromisoformat(first["created_at"].replace("Z", "+00:00")).tzinfo is not None
    assert "exported 3 turn(s)" in result.stderr


def test_csv_has_the_header_and_quotes_what_needs_it(server, turns, database_url, tmp_path):
    target = tmp_path / "turns.csv"
    result = cli(database_url, "export", "--format", "csv", "--output", str(target))
    assert result.returncode == 0, result.stderr
    text = target.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(HEADER)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 3
    assert rows[0]["answer"] == "Order 5 shipped, \"tracked\", on Monday."
    assert rows[0]["tool_calls"] == "lookup_order" and rows[0]["prompt_tokens"] == "240"
    assert rows[0]["cost_usd"] == "0.000054"  # (240 × 0.15 + 30 × 0.6) / 1e6, written without an exponent
    assert rows[2]["cost_usd"] == "" and rows[2]["answer"] == "Line one\nline two"


def test_filters_by_agent_and_time(server, turns, database_url):
    only = cli(database_url, "export", "--agent", "unknown")
    assert [json.loads(line)["agent_id"] for line in only.stdout.splitlines()] == ["unknown"]
    tomorrow = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)).isoformat()
    assert cli(database_url, "export", "--since", tomorrow).stdout == ""
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert len(cli(database_url, "export", "--until", today).stdout.splitlines()) == 3
    bad = cli(database_url, "export", "--since", "last week")
    assert bad.returncode == 2 and "since:" in bad.stderr
    wrong = cli(database_url, "export", "--format", "xml")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


def test_rows_stream_in_pages(server, turns, monkeypatch):
    """Keyset pages: with a page of one turn, every turn still comes out once, in order."""
    monkeypatch.setattr(export, "BATCH", 1)
    with server.state.db.connection_context():
        rows = list(export.turns())
    assert [r["question"] for r in rows] == ["Where is order 5?", "Thanks, bye", "Multi-line, please"]
