"""The app factory: builds configuration, storage, plugins, agents and routes. No work at import."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from agentd.turn import titles
from agentd.agents import Agent, AgentProblem, load_agents
from agentd.turn.chat import ChatService
from agentd.config import Config
from agentd.plugins import Registry, load_plugins, split_path_list
from agentd.policies import install_policies
from agentd.providers.router import ModelRouter, RetryPolicy
from agentd.store import connect_database
from agentd.store.settings import shared_secret
from agentd.store.recorder import recover_unfinished
from agentd.tools import offload
from agentd.tools.hooks import tool_hooks_from
from agentd.turn.toolrun import ToolHooks
from agentd.turn.runbus import make_bus
from agentd.turn.runs import RunService

log = logging.getLogger("agentd")


@dataclass
class AppState:
    """Everything the request handlers share, kept on `app.extensions["agentd"]`."""

    config: Config
    registry: Registry
    agents: dict[str, Agent]
    problems: list[AgentProblem]
    router: ModelRouter
    db: object
    chat: ChatService = None
    tool_hooks: ToolHooks | None = None
    runs: RunService = None  # the runs of this process, and the bus to the others'


def _config(config) -> Config:
    if config is None:
        return Config.from_env()
    if isinstance(config, dict):
        return Config.from_env(**config)
    return config


def build_state(config: Config) -> AppState:
    offload.configure(config.tool_threads)
    database = connect_database(config.database_url)
    recover_unfinished(database)
    registry = load_plugins(split_path_list(config.plugins_dir), entry_points=config.entry_points)
    agents, problems = load_agents(config.agents_dir, registry)
    http = httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0),
                        limits=httpx.Limits(max_connections=None, max_keepalive_connections=200))  # one per open stream: never queue behind a pool cap
    router = ModelRouter(registry.providers, http=http, policy=RetryPolicy(**config.extra.get("retry", {})))
    state = AppState(config=config, registry=registry, agents=agents, problems=problems,
                     router=router, db=database)
    state.chat = ChatService(state)
    state.runs = RunService(make_bus(config.redis_url))
    state.tool_hooks = tool_hooks_from(registry.manager)
    return state


def _connection_per_request(app: Flask, database) -> None:
    @app.before_request
    def _open():
        database.connect(reuse_if_open=True)

    @app.teardown_request
    def _close(exc):
        if not database.is_closed() and not getattr(database, "_agentd_keep", False):
            database.close()


def create_app(config: Config | dict | None = None) -> Flask:
    """Build the Flask application."""
    config = _config(config)
    app = Flask("agentd", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False
    state = build_state(config)
    if not config.secret_key:
        with state.db.connection_context():
            config.secret_key = shared_secret("secret_key")
    app.config["SECRET_KEY"] = config.secret_key
    # A frame over the body limit is refused by simple-websocket before it is buffered whole.
    from agentd.api.streaming import ws_server_options
    app.config["SOCK_SERVER_OPTIONS"] = ws_server_options(config.max_body_bytes)
    titles.install(state)
    app.extensions["agentd"] = state
    from agentd import logs, metrics, reload
    logs.install(app, state)  # first: the request id and timing wrap every other hook
    metrics.install(app, state)
    _connection_per_request(app, state.db)
    install_policies(app, state)
    from agentd.api import refuse_open_mode_behind_proxy, register_api
    with state.db.connection_context():
        refuse_open_mode_behind_proxy(config)  # an ordinary exception: gunicorn's master exits
    from agentd import operators
    operators.install(state)  # the usage ledger and tracing: on_event consumers
    register_api(app)
    reload.install(app, state)
    if config.trusted_proxies:
        # Behind nginx or a load balancer: the client's address comes from X-Forwarded-For,
        # trusting exactly as many hops as the operator says (per-IP rate limits need it).
        n = config.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    return app
