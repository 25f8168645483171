"""Every user's conversations for operators: filters, full-text search, and a turn's trace."""
from __future__ import annotations

import json

import pytest

from tests.admin_support import client, new_key, start_operator_server
from tests.conftest import Reply


@pytest.fixture
def server(agentd_server, fake_openai, tmp_path):
    return start_operator_server(agentd_server, fake_openai, tmp_path)


@pytest.fixture
def people(server):
    return {name: client(server, new_key(server, name, admin=name == "ops")[1]) for name in ("ops", "alice", "bob")}


def chat(who, agent, message, **body):
    response = who.post(f"/api/agents/{agent}/chat", json={"message": message, **body})
    assert response.status_code == 200, response.text
    return response.json()["conversation_id"]


def listing(ops, **params):
    response = ops.get("/api/admin/conversations", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def ids(page):
    return [c["id"] for c in page["conversations"]]


def test_operators_see_every_users_conversations_with_filters(server, people, fake_openai):
    a1 = chat(people["alice"], "priced", "My parcel is late")
    b1 = chat(people["bob"], "unknown", "Invoice question")
    a2 = chat(people["alice"], "unknown", "Another thing")
    ops = people["ops"]
    assert ids(listing(ops)) == [a2, b1, a1]  # most recently updated first
    assert ids(listing(ops, user="alice")) == [a2, a1]
    assert ids(listing(ops, agent="unknown")) == [a2, b1]
    assert ids(listing(ops, agent="unknown", user="bob")) == [b1]
    first = listing(ops, limit=2)
    assert ids(first) == [a2, b1] and first["has_more"] is True
    rest = listing(ops, limit=2, before=first["next_before"])
    assert ids(rest) == [a1] and rest["has_more"] is False
    row = listing(ops, user="bob")["conversations"][0]
    assert row["user_id"] == "bob" and row["message_count"] == 2 and row["title"] == "Invoice question"
    # The owners themselves still see only their own.
    assert people["bob"].get(f"/api/conversations/{a1}").status_code == 403


def test_search_finds_titles_and_message_text(server, people, fake_openai):
    fake_openai.script(Reply(content="The refund for your blender is on its way."))
    refund = chat(people["alice"], "priced", "Where is my money?")
    fake_openai.script(Reply(content="We open at nine."))
    hours = chat(people["bob"], "unknown", "Opening hours please")
    ops = people["ops"]
    assert ids(listing(ops, q="blender")) == [refund]          # the assistant's text
    assert ids(listing(ops, q="refunds")) == [refund]          # stemmed: refunds ~ refund
    assert ids(listing(ops, q="money")) == [refund]            # the user's text
    assert ids(listing(ops, q="opening hours")) == [hours]     # every word must match
    assert ids(listing(ops, q="blender nine")) == []
    assert ids(listing(ops, q='"); DROP TABLE message; --')) == []  # words only, never syntax
    assert ids(listing(ops, q="hours", user="alice")) == []


def test_search_follows_renames_and_deletes(server, people, fake_openai):
    alice, ops = people["alice"], people["ops"]
    conversation = chat(alice, "priced", "Hello there")
    assert alice.patch(f"/api/conversations/{conversation}", json={"title": "Warranty claim"}).status_code == 200
    assert ids(listing(ops, q="warranty")) == [conversation]
    assert ids(listing(ops, q="hello")) == [conversation]      # the message still matches
    assert alice.patch(f"/api/conversations/{conversation}", json={"title": "Renamed"}).status_code == 200
    assert ids(listing(ops, q="warranty")) == []
    assert alice.delete(f"/api/conversations/{conversation}").status_code == 200
    assert ids(listing(ops, q="hello")) == [] and ids(listing(ops, q="renamed")) == []


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "500"}, {"before": "soon"}, {"q": "x" * 201},
                                    {"q": "!!!"}])
def test_bad_list_parameters_are_400(server, people, params):
    response = people["ops"].get("/api/admin/conversations", params=params)
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_REQUEST"


def test_a_conversations_trace_has_model_calls_and_tool_calls(server, people, fake_openai):
    fake_openai.script(Reply(tool_calls=[("lookup_order", {"order_id": 42}), ("explode", {"reason": "disk full"})],
                             usage=(100, 20)),
                       Reply(content="Order 42 has shipped.", usage=(150, 10)))
    conversation = chat(people["alice"], "priced", "Status of order 42?")
    trace = people["ops"].get(f"/api/admin/conversations/{conversation}").json()
    assert (trace["id"], trace["agent_id"], trace["user_id"]) == (conversation, "priced", "alice")
    [turn] = trace["turns"]
    assert turn["question"] == "Status of order 42?" and turn["answer"] == "Order 42 has shipped."
    assert turn["usage"] == {"prompt_tokens": 250, "completion_tokens": 30}
    assert turn["cost_usd"] == pytest.approx((250 * 0.15 + 30 * 0.6) / 1e6)
    kinds = [(s["type"], s.get("name")) for s in turn["steps"]]
    assert kinds == [("model_call", None), ("tool_call", "lookup_order"), ("tool_call", "explode"),
                     ("model_call", None)]
    first_call, lookup, explode, answer = turn["steps"]
    assert (first_call["provider"], first_call["model"]) == ("openai", "fake-model")
    assert (first_call["prompt_tokens"], first_call["completion_tokens"]) == (100, 20)
    assert first_call["duration_ms"] >= 0 and first_call["offset_ms"] == 0
    assert json.loads(lookup["arguments"]) == {"order_id": 42}
    assert json.loads(lookup["result"]) == {"order_id": 42, "status": "shipped"}
    assert lookup["is_error"] is False and lookup["error"] is None and lookup["duration_ms"] >= 0
    assert explode["is_error"] is True and "disk full" in explode["error"]
    assert lookup["offset_ms"] == explode["offset_ms"] == first_call["duration_ms"]  # run side by side
    assert answer["offset_ms"] >= lookup["offset_ms"] and answer["completion_tokens"] == 10


def test_a_tool_that_takes_time_shows_its_duration(agentd_server, fake_openai, tmp_path):
    from tests.conftest import openai_agent
    folder = tmp_path / "slow_plugins"
    folder.mkdir()
    (folder / "slow.py").write_text(
        "import time\nfrom agentd import hookimpl\n\n"
        "def slow(ms: int) -> str:\n    \"\"\"Waits.\"\"\"\n    time.sleep(ms / 1000)\n    return 'done'\n\n"
        "@hookimpl\ndef register_tools(register):\n    register(slow)\n")
    server = agentd_server({"bot": openai_agent(fake_openai, tools=["slow"])}, plugins_dir=str(folder))
    fake_openai.script(Reply(tool_calls=[("slow", {"ms": 300})]), Reply(content="ok"))
    conversation = server.chat("bot", "wait please").json()["conversation_id"]
    trace = server.client.get(f"/api/admin/conversations/{conversation}").json()
    tool = [s for s in trace["turns"][0]["steps"] if s["type"] == "tool_call"][0]
    assert tool["duration_ms"] >= 300


def test_admin_answers_match_the_openapi_description(server, people, fake_openai):
    import yaml
    from jsonschema import Draft202012Validator

    from agentd.api.openapi import SPEC_PATH
    spec = yaml.safe_load(SPEC_PATH.read_text())

    def check(response, schema_name):
        validator = Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}",
                                          "components": spec["components"]})
        errors = [e.message for e in validator.iter_errors(response.json())]
        assert response.status_code == 200 and not errors, errors

    fake_openai.script(Reply(tool_calls=[("lookup_order", {"order_id": 1})]), Reply(content="done"))
    conversation = chat(people["alice"], "priced", "order 1?")
    ops = people["ops"]
    check(ops.get("/api/admin/usage", params={"group_by": "model"}), "UsageReport")
    check(ops.get("/api/admin/conversations", params={"q": "order"}), "AdminConversationPage")
    check(ops.get(f"/api/admin/conversations/{conversation}"), "ConversationTrace")
    assert ops.get("/api/admin/usage", params={"to": "9999-12-31"}).status_code == 200


def test_search_reads_the_full_text_index_not_every_row(database):
    """The plan of a search: the FTS5 table (SQLite) or the GIN indexes (PostgreSQL), no scan of message."""
    import datetime as dt

    from agentd.store.admin import search_plan
    from agentd.store.models import Conversation, Message
    now = dt.datetime(2026, 1, 1)
    with database.atomic():
        Conversation.insert_many([{"id": f"conv_s{n}", "agent_id": "a", "user_id": "u", "title": f"Title {n}",
                                   "created_at": now, "updated_at": now} for n in range(300)]).execute()
        Message.insert_many([{"conversation": f"conv_s{n % 300}", "agent_id": "a", "user_id": "u",
                              "role": "user", "content": f"message number {n} about parcels", "created_at": now,
                              "status": "complete", "is_error": False} for n in range(3000)]).execute()
    database.execute_sql("ANALYZE")
    sql, params = search_plan(["parcel", "17"])
    if "sqlite" in type(database).__name__.lower():
        plan = "\n".join(str(r[-1]) for r in database.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
        scans = [line.strip() for line in plan.splitlines() if line.strip().startswith("SCAN ")]
        assert scans and all("VIRTUAL TABLE INDEX" in line for line in scans), plan  # only FTS5 lookups
    else:
        database.execute_sql("SET enable_seqscan = off")  # with few rows it would rightly scan anyway
        plan = "\n".join(r[0] for r in database.execute_sql("EXPLAIN " + sql, params))
        assert "message_search" in plan and "conversation_search" in plan, plan
    assert [row[0] for row in database.execute_sql(sql, params)] == ["conv_s17"]


def test_a_streaming_answer_is_found_once_its_text_is_final(agentd_server, fake_openai, tmp_path):
    """Heartbeats save a streaming answer's text; search finds it only once the answer is done."""
    from agentd.store.models import Message
    from tests.support import wait_for

    server = start_operator_server(agentd_server, fake_openai, tmp_path, turn_lease_seconds=1)
    alice = client(server, new_key(server, "alice")[1])
    ops = client(server, new_key(server, "ops", admin=True)[1])
    words = " ".join(f"word{i}" for i in range(40))
    fake_openai.script(Reply(content=f"zebra crossing {words}", chunk_delay=0.05))
    with alice.stream("POST", "/api/agents/priced/chat", json={"message": "Hello", "stream": True}) as response:
        lines = response.iter_lines()
        start = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
        row_id, conversation = start["id"], start["conversation_id"]

        def saved_while_streaming():
            with server.state.db.connection_context():
                row = Message.get_by_id(row_id)
            return row.status == "streaming" and "zebra" in (row.content or "")
        wait_for(saved_while_streaming, deadline=30, what="a heartbeat saving the text")  # a heartbeat stored the text so far
        assert ids(listing(ops, q="zebra")) == []        # not searchable while it streams
        assert ids(listing(ops, q="hello")) == [conversation]  # the user's message is
        rest = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert rest[-1]["type"] == "done"
    assert ids(listing(ops, q="zebra crossing")) == [conversation]   # the final text is
    assert ids(listing(ops, q="word39")) == [conversation]
    assert alice.delete(f"/api/conversations/{conversation}").status_code == 200
    assert ids(listing(ops, q="zebra")) == []


def test_a_database_searched_before_migration_64_drops_streaming_text_from_its_index(database_url, monkeypatch):
    """An older database (migration 63's triggers indexed every save) upgraded: a row streaming
    then is left out of the index until it finishes; the rest is found as before."""
    from agentd.store import connect_database, migrations
    from agentd.store.admin import conversations_page
    from agentd.store.models import Conversation, Message

    everything = migrations.MIGRATIONS
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in everything if m[0] != 64])
    database = connect_database(database_url)
    database.connect(reuse_if_open=True)
    try:
        Conversation.create(id="conv_old", agent_id="a", user_id="u", channel="api", title="Old one")
        owner = {"conversation": "conv_old", "agent_id": "a", "user_id": "u", "role": "assistant"}
        done = Message.create(**owner, content="penguin answer", status="complete")
        live = Message.create(**owner, content="zebra so far", status="streaming")
        assert migrations.migrate(database) == []   # 64 unknown yet
        monkeypatch.setattr(migrations, "MIGRATIONS", everything)
        assert migrations.migrate(database) == [64]

        def found(word):
            return [c["id"] for c in conversations_page(None, None, [word], None, 10)[0]]
        assert found("penguin") == ["conv_old"] and found("zebra") == []
        Message.update(content="zebra so far and more").where(Message.id == live.id).execute()  # a heartbeat
        assert found("zebra") == []
        Message.update(content="zebra final", status="complete").where(Message.id == live.id).execute()
        assert found("zebra") == ["conv_old"] and found("more") == []
        Message.delete().where(Message.id.in_([done.id, live.id])).execute()
        assert found("zebra") == [] and found("penguin") == []
        if "Sqlite" in type(database).__name__:
            database.execute_sql("INSERT INTO message_fts(message_fts, rank) VALUES ('integrity-check', 0)")
    finally:
        database.close()


def test_search_sees_rows_indexed_in_batches_and_every_change_to_them(database):
    """SQLite indexes new rows in batches (agentd.store.search_index): a search finds rows
    written since the last batch, and renames, edits and deletes before or after a batch."""
    from agentd.store import search_index
    from agentd.store.admin import conversations_page
    from agentd.store.models import Conversation, Message

    def found(word):
        return sorted(c["id"] for c in conversations_page(None, None, [word], None, 50)[0])

    def conversation(n, title):
        Conversation.create(id=f"conv_{n}", agent_id="a", user_id="u", channel="api", title=title)
        return f"conv_{n}"

    def message(conv, text, role="user", status="complete"):
        return Message.create(conversation=conv, agent_id="a", user_id="u", role=role, content=text, status=status)

    one = conversation(1, "Parcel lost")
    kept = message(one, "alpha words")
    gone = message(one, "bravo words")
    assert found("parcel") == [one] and found("alpha") == [one] and found("bravo") == [one]  # caught up
    two = conversation(2, "Invoice")                       # above the watermark: not indexed yet
    edited = message(two, "charlie words")
    dropped = message(two, "delta words")
    message(two, "tool output echo", role="tool")          # tool results are never searched
    Message.update(content="charlie edited").where(Message.id == edited.id).execute()
    Message.delete().where(Message.id == dropped.id).execute()
    Conversation.update(title="Invoice renamed").where(Conversation.id == two).execute()
    Message.update(content="alpha changed").where(Message.id == kept.id).execute()   # covered rows
    Message.delete().where(Message.id == gone.id).execute()
    Conversation.update(title="Parcel found").where(Conversation.id == one).execute()
    assert found("charlie") == [two] and found("edited") == [two] and found("delta") == []
    assert found("renamed") == [two] and found("echo") == []
    assert found("changed") == [one] and found("bravo") == [] and found("lost") == [] and found("found") == [one]
    last = message(two, "foxtrot words")                   # the highest id, deleted, then its id reused
    search_index.catch_up()
    Message.delete().where(Message.id == last.id).execute()
    again = message(two, "golf words")
    assert found("foxtrot") == [] and found("golf") == [two]
    Conversation.delete().where(Conversation.id == one).execute()
    assert found("parcel") == [] and found("changed") == [] and found("invoice") == [two]
    assert again.id == last.id or "Postgres" in type(database).__name__
    if "Sqlite" in type(database).__name__:
        for name in ("message_fts", "conversation_fts"):
            database.execute_sql(f"INSERT INTO {name}({name}, rank) VALUES ('integrity-check', 0)")
    else:
        assert search_index.catch_up() == 0   # PostgreSQL keeps its own index


def test_turns_bring_the_index_up_to_date_every_so_many_turns(database, monkeypatch):
    from agentd.store import search_index
    from agentd.store.models import Conversation

    if "Sqlite" not in type(database).__name__:
        pytest.skip("PostgreSQL indexes each row as it is written")
    monkeypatch.setattr(search_index, "CATCH_UP_EVERY", 3)
    monkeypatch.setattr(search_index, "_turns", __import__("itertools").count(1))

    def upto():
        return database.execute_sql("SELECT upto FROM search_indexed WHERE name = 'conversation'").fetchone()[0]
    start = upto()
    for n in range(3):
        Conversation.create(id=f"conv_t{n}", agent_id="a", user_id="u", channel="api", title=f"Turn {n}")
        with database.atomic():
            search_index.after_turn()
        assert upto() == (start if n < 2 else start + 3)
