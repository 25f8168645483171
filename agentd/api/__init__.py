"""The HTTP layer: blueprints, authentication per request, error shapes. Nothing imports it."""
from __future__ import annotations

import ipaddress
import logging

from flask import Flask, current_app, g, jsonify, request
from flask_sock import Sock

from agentd.api.errors import register_error_handlers
from agentd.auth import any_key_exists, bearer_principal
from agentd.errors import Forbidden
from agentd.hookspecs import hookimpl
from agentd.store.database import ping

log = logging.getLogger("agentd.api")

OPEN_PATHS = ("/healthz", "/metrics", "/widget.js", "/api/openapi.json", "/")
sock = Sock()


def _is_open(path: str) -> bool:
    from agentd.api.protocols import PROTECTED_PREFIXES
    return path in OPEN_PATHS or not path.startswith(("/api/", *PROTECTED_PREFIXES))


def authenticate():
    """Pick the user for /api/ routes through the `authenticate` hooks (the built-in one last)."""
    state = current_app.extensions["agentd"]
    if _is_open(request.path) or request.method == "OPTIONS":
        return None
    g.principal = state.registry.manager.hook.authenticate(request=request)
    return None


class BearerAuth:
    """The built-in `authenticate` hook: a bearer key, or everyone is `local` in open local mode."""

    def __init__(self, config):
        self.config = config

    @hookimpl(trylast=True)
    def authenticate(self, request):
        open_mode = not any_key_exists()
        if open_mode:
            _local_callers_only(self.config)
        return bearer_principal(request.headers.get("Authorization"), open_mode)


def _is_loopback_name(host: str) -> bool:
    """Whether a Host header names this machine's loopback (port aside)."""
    name = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0]
    name = name.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def peer_address(environ) -> str:
    """The address of the socket's other end, as the server saw it (before ProxyFix rewrote it)."""
    original = environ.get("werkzeug.proxy_fix.orig") or {}
    return original.get("REMOTE_ADDR") or environ.get("REMOTE_ADDR") or ""


def _is_loopback_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # a Unix socket (empty address) may be a local reverse proxy: not trusted
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _local_callers_only(config) -> None:
    """Open local mode trusts whoever can reach the port, so keep everyone else out of it.

    The peer's own address must be loopback: a forwarded header never counts, and
    behind a trusted proxy every request arrives from the proxy, so open mode is
    off there altogether. Any site the local user visits could also POST to
    127.0.0.1 (a text/plain POST needs no CORS preflight) or open a WebSocket, and
    a DNS-rebound name (evil.example -> 127.0.0.1) would even read the answers.
    Browsers always send Origin on those requests and the rebound name in Host;
    curl and the CLI don't.
    """
    if config.trusted_proxies:
        raise Forbidden("Open local mode is off behind a reverse proxy; use an API key")
    origin = request.headers.get("Origin")
    if origin is not None and origin != request.host_url.rstrip("/"):
        raise Forbidden("Open local mode does not answer pages on other sites; use an API key")
    if config.allow_open_remote:
        return
    if not _is_loopback_address(peer_address(request.environ)) or not _is_loopback_name(request.host):
        raise Forbidden("Open local mode answers loopback addresses only; use an API key")


def refuse_open_mode_behind_proxy(config) -> None:
    """At start: trusted proxies and no API key (open local mode) do not go together."""
    if config.trusted_proxies and not any_key_exists():
        raise RuntimeError(
            "AGENTD_TRUSTED_PROXIES is set but no API key exists: open local mode serves only "
            "loopback peers and never behind a proxy. Create a key first "
            "(agentd keys create --user NAME) or unset AGENTD_TRUSTED_PROXIES.")


# agentd's own pages (the demo page, later the console): no inline script, no framing.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'; object-src 'none'")


def security_headers(response):
    """nosniff everywhere; a strict Content-Security-Policy on HTML pages agentd serves."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def healthz():
    state = current_app.extensions["agentd"]
    try:
        ping(state.db)
        database = "ok"
    except Exception:
        database = "error"
    status = 200 if database == "ok" else 503
    return jsonify({"status": "ok" if status == 200 else "degraded", "database": database,
                    "agents": len(state.agents)}), status


def register_api(app: Flask) -> None:
    from agentd.api import approvals, chat, conversations

    register_error_handlers(app)
    state = app.extensions["agentd"]
    state.registry.manager.register(BearerAuth(state.config), name="agentd.bearer_auth")
    app.before_request(authenticate)
    app.after_request(security_headers)
    from agentd.api import widget
    app.register_blueprint(widget.bp)
    app.add_url_rule("/healthz", "healthz", healthz)
    from agentd.api import openapi
    openapi.register(app)
    app.register_blueprint(chat.bp)
    app.register_blueprint(conversations.bp)
    from agentd.api import protocols
    protocols.register(app)
    app.register_blueprint(approvals.bp)
    from agentd.api import admin, console
    app.register_blueprint(admin.bp)
    console.register(app)
    sock.init_app(app)

    @sock.route("/api/agents/<agent_id>/ws")
    def agent_socket(ws, agent_id):
        chat.websocket_session(ws, agent_id)
