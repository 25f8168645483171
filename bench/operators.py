"""`python -m bench.operators [--turns N] [--postgres URL]`: the operator features' own cost.

1. Statements per turn, with and without the usage ledger: every SQL statement
   of a turn is traced in-process (the demo provider, offline) and sorted into
   "inside a transaction" and "on its own" (autocommit). The ledger must add
   nothing on its own.
2. `agentd export` of N turns (default 1,000,000): the turns are generated with
   bulk SQL (INSERT … SELECT over a recursive CTE / generate_series) into a
   migrated database, then exported to /dev/null by `agentd export` in a child
   process whose resident size is sampled from /proc, at N/100, N/10 and N
   turns: bounded memory means it stops growing early and the peaks stay alike.

Prints a Markdown table. Not a test: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

AGENT = """name: Bench
model: {provider: demo, name: demo}
tools: [calculator]
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- 1. statements per turn ----------------------------------------------------------------

class Trace:
    def __init__(self, database):
        self.database, self.inside, self.alone, self.ledger = database, 0, 0, 0
        self.original = database.execute_sql
        database.execute_sql = self.execute_sql

    def execute_sql(self, sql, params=None, *args, **kwargs):
        if self.database._state.transactions:
            self.inside += 1
        else:
            self.alone += 1
        self.ledger += "usage_record" in sql
        return self.original(sql, params, *args, **kwargs)


def _turn_statements(app, stream: bool, turns: int) -> tuple[float, float, float]:
    state = app.extensions["agentd"]
    client = app.test_client()
    trace = Trace(state.db)
    try:
        for n in range(turns):
            body = {"message": "use calculator 6*7" if n % 2 else "hello", "stream": stream}
            response = client.post("/api/agents/bench/chat", json=body)
            response.get_data()
            assert response.status_code == 200, response.get_data(as_text=True)
    finally:
        state.db.execute_sql = trace.original
    return trace.inside / turns, trace.alone / turns, trace.ledger / turns


def _without_ledger(app) -> None:
    from agentd.operators.ledger import UsageLedger
    state = app.extensions["agentd"]
    for consumer in [c for c in state.operators if isinstance(c, UsageLedger)]:
        state.registry.manager.unregister(consumer)


def statements(work: Path, turns: int) -> list[tuple]:
    from agentd.app import create_app
    from agentd.config import Config
    agents = work / "agents"
    agents.mkdir()
    (agents / "bench.yaml").write_text(AGENT)
    rows = []
    for ledger in (True, False):
        app = create_app(Config.from_env(database_url=f"sqlite:///{work / f'turns-{ledger}.db'}",
                                         agents_dir=str(agents), log_level="WARNING", log_format="text",
                                         entry_points=False, reload_agents=False))
        if not ledger:
            _without_ledger(app)
        for stream in (False, True):
            inside, alone, writes = _turn_statements(app, stream, turns)
            rows.append(("streamed" if stream else "non-streamed", "on" if ledger else "off",
                         inside, alone, writes))
        app.extensions["agentd"].db.close()
    return rows


# -- 2. export of many turns ----------------------------------------------------------------

SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {turns})
INSERT INTO {table} SELECT {columns} FROM n
"""


def _fill_sqlite(database, turns: int) -> None:
    conversations = max(turns // 10, 1)
    run = database.execute_sql
    # Full-text triggers are off while loading (the export does not read the index).
    for trigger in ("message_fts_insert",):
        run(f"DROP TRIGGER IF EXISTS {trigger}")
    with database.atomic():
        run(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {conversations}) "
            "INSERT INTO conversation (id, agent_id, user_id, title, channel, created_at, updated_at) "
            "SELECT 'conv_b' || i, 'agent' || (i % 5), 'user' || (i % 1000), 'Bench ' || i, 'api', "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00' FROM n")
        # Turn i: user message 2i-1, answer 2i, in conversation i % conversations.
        run(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {turns * 2}) "
            "INSERT INTO message (id, conversation_id, agent_id, user_id, role, content, is_error, status, "
            "prompt_tokens, completion_tokens, turn_id, created_at) "
            f"SELECT i, 'conv_b' || (((i + 1) / 2) % {conversations} + 1), 'agent' || ((((i + 1) / 2) % {conversations} + 1) % 5), "
            f"'user' || ((((i + 1) / 2) % {conversations} + 1) % 1000), "
            "CASE i % 2 WHEN 1 THEN 'user' ELSE 'assistant' END, "
            "CASE i % 2 WHEN 1 THEN 'Where is my order number ' || i || '?' ELSE 'Your order ' || i || ' has shipped and will arrive on Monday.' END, "
            "0, 'complete', CASE i % 2 WHEN 0 THEN 120 END, CASE i % 2 WHEN 0 THEN 30 END, "
            "CASE i % 2 WHEN 0 THEN i - 1 END, '2026-01-01 00:00:00' FROM n")
        run(f"INSERT INTO usage_record (created_at, turn_id, conversation_id, agent_id, user_id, provider, model, "
            "prompt_tokens, completion_tokens, duration_ms, cost_nanousd) "
            "SELECT created_at, turn_id, conversation_id, agent_id, user_id, 'openai', 'gpt-4o-mini', "
            "120, 30, 400, 36000 FROM message WHERE role = 'assistant'")
    run("ANALYZE")


def _fill_postgres(database, turns: int) -> None:
    conversations = max(turns // 10, 1)
    run = database.execute_sql
    with database.atomic():
        run("INSERT INTO conversation (id, agent_id, user_id, title, channel, created_at, updated_at) "
            "SELECT 'conv_b' || i, 'agent' || mod(i, 5), 'user' || mod(i, 1000), 'Bench ' || i, 'api', "
            f"'2026-01-01', '2026-01-01' FROM generate_series(1, {conversations}) AS i")
        run("INSERT INTO message (id, conversation_id, agent_id, user_id, role, content, is_error, status, "
            "prompt_tokens, completion_tokens, turn_id, created_at) "
            f"SELECT i, 'conv_b' || (mod((i + 1) / 2, {conversations}) + 1), 'agent' || mod(mod((i + 1) / 2, {conversations}) + 1, 5), "
            f"'user' || mod(mod((i + 1) / 2, {conversations}) + 1, 1000), "
            "CASE mod(i, 2) WHEN 1 THEN 'user' ELSE 'assistant' END, "
            "CASE mod(i, 2) WHEN 1 THEN 'Where is my order number ' || i || '?' ELSE 'Your order ' || i || ' has shipped and will arrive on Monday.' END, "
            "false, 'complete', CASE mod(i, 2) WHEN 0 THEN 120 END, CASE mod(i, 2) WHEN 0 THEN 30 END, "
            f"CASE mod(i, 2) WHEN 0 THEN i - 1 END, '2026-01-01' FROM generate_series(1, {turns * 2}) AS i")
        run(f"SELECT setval(pg_get_serial_sequence('message', 'id'), {turns * 2})")
        run("INSERT INTO usage_record (created_at, turn_id, conversation_id, agent_id, user_id, provider, model, "
            "prompt_tokens, completion_tokens, duration_ms, cost_nanousd) "
            "SELECT created_at, turn_id, conversation_id, agent_id, user_id, 'openai', 'gpt-4o-mini', "
            "120, 30, 400, 36000 FROM message WHERE role = 'assistant'")
    run("ANALYZE")


def _rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    except (FileNotFoundError, StopIteration, ProcessLookupError):
        return None


def _export(url: str, fmt: str) -> tuple[float, int, int, int]:
    """Seconds, RSS (KiB) a quarter of the way through and at the end, and rows of `agentd export`.

    The child's resident size is sampled every 0.2 s: bounded memory means it stops growing
    once SQLite's page cache (16 MB) and the first pages are in, whatever the row count.
    """
    env = {**os.environ, "AGENTD_DATABASE_URL": url}
    started = time.monotonic()
    samples: list[int] = []
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "agentd", "export", "--format", fmt,
                                  "--output", os.devnull], env=env, cwd=REPO, stderr=err,
                                 stdout=subprocess.DEVNULL)
        while child.poll() is None:
            rss = _rss_kib(child.pid)
            if rss:
                samples.append(rss)
            time.sleep(0.2)
        seconds = time.monotonic() - started
        err.seek(0)
        text = err.read()
    if child.returncode != 0:
        raise RuntimeError(text)
    rows = int(text.split("exported ", 1)[1].split(" ", 1)[0])
    samples = samples or [0]
    return seconds, samples[len(samples) // 4], max(samples), rows


def _database(url: str | None, work: Path, name: str):
    if url is None:
        return f"sqlite:///{work / (name + '.db')}", None
    import psycopg
    dbname = f"agentd_bench_{name}_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return url.rsplit("/", 1)[0] + "/" + dbname, (url, dbname)


def _drop(created) -> None:
    if created:
        import psycopg
        url, dbname = created
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def export_runs(work: Path, turns: int, postgres: str | None) -> list[tuple]:
    from agentd.store import connect_database
    rows = []
    for count in (turns // 100, turns // 10, turns):
        url, created = _database(postgres, work, f"export{count}")
        try:
            database = connect_database(url)
            log(f"generating {count:,} turns…")
            started = time.monotonic()
            with database.connection_context():
                (_fill_postgres if postgres else _fill_sqlite)(database, count)
            load = time.monotonic() - started
            database.close()
            for fmt in ("csv",):
                log(f"exporting {count:,} turns as {fmt}…")
                seconds, quarter, peak, exported = _export(url, fmt)
                rows.append(("PostgreSQL" if postgres else "SQLite", f"{count:,}", fmt, exported, load,
                             seconds, exported / seconds, quarter / 1024, peak / 1024))
        finally:
            _drop(created)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.operators", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1_000_000, help="turns to export (default 1,000,000)")
    parser.add_argument("--statement-turns", type=int, default=40)
    parser.add_argument("--postgres", default=os.environ.get("AGENTD_BENCH_POSTGRES_URL"))
    parser.add_argument("--skip", default="", help="statements,export")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agentd-bench-ops-") as tmp:
        work = Path(tmp)
        if "statements" not in args.skip:
            print("| turn | ledger | statements in a transaction | statements on their own | ledger statements |")
            print("|---|---|---|---|---|")
            for kind, ledger, inside, alone, writes in statements(work, args.statement_turns):
                print(f"| {kind} | {ledger} | {inside:.2f} | {alone:.2f} | {writes:.2f} |")
            print()
        if "export" not in args.skip:
            print("| database | turns | format | rows | generate (s) | export (s) | rows/s "
                  "| RSS at ¼ (MiB) | peak RSS (MiB) |")
            print("|---|---|---|---|---|---|---|---|---|")
            for db, count, fmt, exported, load, seconds, rate, quarter, peak in export_runs(
                    work, args.turns, args.postgres):
                print(f"| {db} | {count} | {fmt} | {exported:,} | {load:.1f} | {seconds:.1f} | {rate:,.0f} "
                      f"| {quarter:.0f} | {peak:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
