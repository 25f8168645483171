"""The `agentd` command: serve, chat, agents check, keys create/list/revoke."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import sys


from agentd.config import Config


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args) -> int:
    from agentd.app import create_app
    from agentd.auth import any_key_exists

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v}
    if args.allow_open:
        overrides["allow_open_remote"] = True  # the app checks Host names in open mode too
    config = Config.from_env(**overrides)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    with app.extensions["agentd"].db.connection_context():
        open_mode = not any_key_exists()
    if open_mode and not _is_loopback(config.host) and not (args.allow_open or config.allow_open_remote):
        print(f"refusing to serve {config.host}: no API key exists (open local mode) and the address is "
              "not loopback. Create a key with `agentd keys create --user NAME`, or pass --allow-open.",
              file=sys.stderr)
        return 2
    if open_mode:
        logging.getLogger("agentd").warning(
            "OPEN LOCAL MODE: no API key exists, every request is user 'local' (%s:%s)", config.host, config.port)
    app.run(host=config.host, port=config.port, threaded=True)
    return 0


def cmd_agents_check(args) -> int:
    from agentd.agents import load_agents
    from agentd.plugins import load_plugins, split_path_list

    config = Config.from_env(**({"agents_dir": args.dir} if args.dir else {}))
    registry = load_plugins(split_path_list(config.plugins_dir), entry_points=config.entry_points)
    agents, problems = load_agents(config.agents_dir, registry, probe=False)
    for agent_id in agents:
        print(f"ok    {agent_id}")
    for problem in problems:
        print(f"error {problem}")
    return 1 if problems else 0


def _with_db(func):
    def run(args):
        from agentd.store import connect_database
        database = connect_database(Config.from_env().database_url)
        with database.connection_context():
            return func(args)
    return run


@_with_db
def cmd_keys_create(args) -> int:
    from agentd.auth import create_key
    row, key = create_key(args.user, args.agent, admin=args.admin)
    print(f"created {'admin ' if row.is_admin else ''}key {row.id} for user {row.user_id}"
          + (f" (agents: {', '.join(args.agent)})" if args.agent else ""))
    print("store it now; it is not shown again:")
    print(key)
    return 0


@_with_db
def cmd_keys_list(args) -> int:
    from agentd.auth import list_keys
    print(f"{'id':14} {'user':20} {'agents':20} {'admin':6} {'created':20} {'last used':20} revoked")
    for row in list_keys():
        agents = ",".join(row.agents) if row.agents else "*"
        stamp = lambda v: v.strftime("%Y-%m-%d %H:%M:%S") if v else "-"
        print(f"{row.id:14} {row.user_id:20} {agents:20} {'yes' if row.is_admin else 'no':6} {stamp(row.created_at):20} "
              f"{stamp(row.last_used_at):20} {stamp(row.revoked_at)}")
    return 0


@_with_db
def cmd_keys_revoke(args) -> int:
    from agentd.auth import revoke_key
    if revoke_key(args.id):
        print(f"revoked {args.id}")
        return 0
    print(f"no active key {args.id}", file=sys.stderr)
    return 1


@_with_db
def cmd_usage(args) -> int:
    from agentd.operators.usage import usage_report
    report = usage_report(args.group_by, args.since, args.until, args.agent, names=("since", "until"))
    cost = lambda v: "unknown" if v is None else f"{v:.6f}"  # noqa: E731
    print(f"{args.group_by:24} {'turns':>8} {'prompt':>12} {'completion':>12} {'cost_usd':>14}")
    for row in report["rows"] + [{"key": "TOTAL", **report["total"]}]:
        print(f"{str(row['key'] if row['key'] is not None else '-'):24} {row['turns']:>8} "
              f"{row['prompt_tokens']:>12} {row['completion_tokens']:>12} {cost(row['cost_usd']):>14}")
    return 0


@_with_db
def cmd_export(args) -> int:
    from agentd.operators import export
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    try:
        count = export.write(export.turns(args.agent, args.since, args.until), args.format, out)
    finally:
        if args.output:
            out.close()
    print(f"exported {count} turn(s)", file=sys.stderr)
    return 0


def cmd_chat(args) -> int:
    from agentd.terminal import chat_loop
    return chat_loop(args.agent, args.url, args.key)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="agentd", description="Self-hosted agent platform")
    sub = root.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the development server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--allow-open", action="store_true",
                       help="serve a non-loopback address even with no API key (dangerous)")
    serve.set_defaults(func=cmd_serve)
    chat = sub.add_parser("chat", help="chat with an agent in the terminal")
    chat.add_argument("agent")
    chat.add_argument("--url", default=None, help="server URL (default http://AGENTD_HOST:AGENTD_PORT)")
    chat.add_argument("--key", default=None, help="API key (default $AGENTD_API_KEY)")
    chat.set_defaults(func=cmd_chat)
    agents = sub.add_parser("agents", help="agent definitions").add_subparsers(dest="sub", required=True)
    check = agents.add_parser("check", help="validate every agent file")
    check.add_argument("--dir")
    check.set_defaults(func=cmd_agents_check)
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="sub", required=True)
    create = keys.add_parser("create", help="create a key (printed once)")
    create.add_argument("--user", required=True)
    create.add_argument("--agent", action="append", help="limit the key to this agent (repeatable)")
    create.add_argument("--admin", action="store_true",
                        help="an admin key: the operator's routes (/api/admin/...) and console (/admin)")
    create.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="list keys (never the key itself)").set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_keys_revoke)
    _operator_commands(sub)
    return root


def _operator_commands(sub) -> None:
    usage = sub.add_parser("usage", help="tokens and cost from the usage ledger, as a table")
    usage.add_argument("--group-by", default="agent", choices=["agent", "user", "model", "day", "key"])
    usage.add_argument("--since", help="from this ISO date or date-time (UTC)")
    usage.add_argument("--until", help="up to this ISO date (inclusive) or date-time")
    usage.add_argument("--agent", help="only this agent")
    usage.set_defaults(func=cmd_usage)
    export = sub.add_parser("export", help="one row per turn, as JSON lines or CSV (streamed)")
    export.add_argument("--format", default="jsonl", choices=["jsonl", "csv"])
    export.add_argument("--agent", help="only this agent")
    export.add_argument("--since", help="turns from this ISO date or date-time (UTC)")
    export.add_argument("--until", help="turns up to this ISO date (inclusive) or date-time")
    export.add_argument("--output", "-o", help="write to this file (default: standard output)")
    export.set_defaults(func=cmd_export)


def main(argv=None) -> int:
    from agentd.errors import ApiError
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ApiError as exc:
        print(f"agentd: {exc.message}", file=sys.stderr)
        return 2
