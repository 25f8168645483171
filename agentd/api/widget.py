"""The embeddable chat widget's server side: /widget.js, visitor sessions, CORS, the demo page.

A widget visitor never holds an API key. It asks `POST /api/widget/session`
for a short-lived token (itsdangerous, keyed by the app's secret) bound to the
agent, the page's origin and a visitor id, then calls the ordinary chat routes
with `Authorization: Widget <token>`. The rules:

- CORS answers only origins the agent's `widget.allowed_origins` lists (plus
  the server's own origin, for the demo page), always with `Vary: Origin`.
- A token used from another origin than the one it was issued to is refused.
- A visitor is user `widget:<agent>:<visitor>` (or `widget:<agent>:user:<id>`
  when the host site's backend vouches for a user with an HMAC), so it sees
  only its own conversations; its conversations have channel `widget`.
- Widget traffic sees widget-safe events only: no tool arguments, tool
  results, tools' own progress lines (they quote arguments) or reasoning
  unless the agent's `widget.show_tools` / `widget.show_reasoning` says so.
  A widget token can chat and read its history, and nothing else; its turns
  may use only the tools `widget.tools` lists (default: all of the agent's).
- New sessions and turns are also limited per client address
  (`widget.sessions_per_ip`, `widget.rate_limit_per_ip`), so a script minting
  fresh visitor ids gets no fresh budget.

Registering the blueprint is all the wiring there is: it adds its
`authenticate` hook implementation when registered.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from functools import lru_cache
from pathlib import Path

from flask import Blueprint, Response, current_app, g, jsonify, render_template_string, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from agentd.api.validation import json_body
from agentd.hookspecs import hookimpl
from agentd.vocab import Principal
from agentd.errors import AgentNotFound, Forbidden, InvalidRequest, Unauthorized
from agentd.vocab import Event

bp = Blueprint("widget", __name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
WIDGET_PARTS = STATIC_DIR / "widget"
SESSION_PATH = "/api/widget/session"
TOKEN_SALT = "agentd.widget.session.v1"
TOKEN_TTL = 3600
VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
CHAT_PATH = re.compile(r"^/api/agents/([^/]+)/chat$")
# Re-attach after a reload, stop, and the visitor's own tool approvals.
RUN_PATH = re.compile(r"^/api/conversations/([^/]+)/(stream|cancel|approvals)(?:/([^/]+))?$")
# What a visitor may send: the rest (system_prompt, provider, context, images…) is the site owner's.
VISITOR_FIELDS = ("message", "conversation_id", "stream", "mood", "auto_title")
SAFE_EVENTS = frozenset({"start", "delta", "status", "done", "error"})


def _state():
    return current_app.extensions["agentd"]


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=TOKEN_SALT)


# ------------------------------------------------------------------ origins

def _own_origin() -> str:
    return request.host_url.rstrip("/")


def _widget_agent(agent_id: str):
    """The agent if it exists and has its widget enabled, else None."""
    agent = _state().agents.get(agent_id) if isinstance(agent_id, str) else None
    return agent if agent is not None and agent.widget.get("enabled") else None


def origin_allowed(agent, origin: str | None) -> bool:
    """Whether a page on `origin` may use this agent's widget."""
    if agent is None or not origin or origin == "null":
        return False
    allowed = {o.rstrip("/").lower() for o in agent.widget.get("allowed_origins") or []}
    return origin.lower() in allowed or origin == _own_origin()


def _cors_agents(path: str) -> list:
    """The widget agents a CORS request to `path` concerns."""
    match = CHAT_PATH.match(path)
    if match:
        agent = _widget_agent(match.group(1))
        return [agent] if agent else []
    if path == SESSION_PATH or RUN_PATH.match(path):
        # A run route names a conversation, not an agent: the token, bound to its origin, decides.
        return [a for a in _state().agents.values() if a.widget.get("enabled")]
    return []


def _is_widget_request() -> bool:
    return (request.headers.get("Authorization") or "").partition(" ")[0].lower() == "widget"


@bp.after_app_request
def _cors(response: Response) -> Response:
    """Allow-Origin for allowed widget origins only; never a wildcard, never credentials."""
    if request.path != SESSION_PATH and not CHAT_PATH.match(request.path) and not RUN_PATH.match(request.path):
        return response
    response.vary.add("Origin")
    origin = request.headers.get("Origin")
    if not any(origin_allowed(agent, origin) for agent in _cors_agents(request.path)):
        return response
    if request.path != SESSION_PATH and request.method != "OPTIONS" and not _is_widget_request():
        return response  # an API key (or open local mode) is not for pages on other sites
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
        response.headers["Access-Control-Max-Age"] = "600"
    return response


# ----------------------------------------------------------------- identity

def sign_user(secret: str, user_id: str, expires_at: int) -> str:
    """The `data-user-token` a host site's backend gives its page: `user_id:expiry:hmac`."""
    mac = hmac.new(secret.encode(), f"{user_id}:{expires_at}".encode(), hashlib.sha256).hexdigest()
    return f"{user_id}:{expires_at}:{mac}"


def verified_user(agent, user_token) -> str | None:
    """The user id the host site vouches for, None without a token; 401/400 when unusable."""
    if user_token in (None, ""):
        return None
    env = agent.widget.get("identity_secret_env")
    secret = os.environ.get(env, "") if env else ""
    if not secret:
        raise InvalidRequest("user_token: this agent does not verify user identities")
    if not isinstance(user_token, str) or user_token.count(":") < 2:
        raise InvalidRequest("user_token: must be 'user_id:expiry:signature'")
    user_id, expires_at, mac = user_token.rsplit(":", 2)
    if not user_id or not expires_at.isdigit() or len(user_id) > 128:
        raise InvalidRequest("user_token: must be 'user_id:expiry:signature'")
    expected = sign_user(secret, user_id, int(expires_at)).rsplit(":", 1)[1]
    if not hmac.compare_digest(expected, mac) or int(expires_at) < time.time():
        raise Unauthorized("user_token: invalid or expired")
    return user_id


def _user_id(agent_id: str, visitor: str, user: str | None) -> str:
    if user is not None:
        return f"widget:{agent_id}:user:{user}"
    return f"widget:{agent_id}:{visitor}"


# ------------------------------------------------------------------- tokens

@bp.post(SESSION_PATH)
def create_session():
    """A short-lived widget token for one agent, origin and visitor."""
    body = json_body(request)
    agent = _widget_agent(body.get("agent_id"))
    if agent is None:
        raise AgentNotFound(f"Agent {body.get('agent_id')} does not exist or has no widget")
    origin = request.headers.get("Origin")
    if not origin_allowed(agent, origin):
        raise Forbidden("This site may not use this agent's widget")
    _state().rate_limiter.check_session(agent)  # per client address: fresh visitor ids reset nothing
    visitor = body.get("visitor_id")
    if not isinstance(visitor, str) or not VISITOR_ID.match(visitor):
        visitor = "v_" + secrets.token_hex(16)
    user = verified_user(agent, body.get("user_token"))
    token = _serializer().dumps({"a": agent.id, "o": origin, "v": visitor, "u": user})
    return jsonify({"token": token, "expires_in": TOKEN_TTL, "visitor_id": visitor})


def widget_principal(req) -> Principal | None:
    """The authenticator for `Authorization: Widget <token>` (None for any other request).

    Registered as an `authenticate` hook implementation with the blueprint.
    """
    if req.path == SESSION_PATH:
        # The session route is open: its own checks (agent, origin) are the gate.
        return Principal(user_id="widget:anonymous", agents=[], kind="widget")
    scheme, _, token = (req.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "widget":
        return None
    try:
        claims = _serializer().loads(token.strip(), max_age=TOKEN_TTL)
    except (SignatureExpired, BadSignature):
        raise Unauthorized("The widget session is invalid or has expired") from None
    origin = req.headers.get("Origin")
    # Same-origin GETs carry no Origin: only the server's own origin may rely on that.
    if (origin or _own_origin()) != claims["o"]:
        raise Forbidden("This widget session belongs to another site")
    if not origin_allowed(_widget_agent(claims["a"]), claims["o"]):
        raise Forbidden("This site may not use this agent's widget")
    return Principal(user_id=_user_id(claims["a"], claims["v"], claims.get("u")),
                     agents=[claims["a"]], kind="widget")


class WidgetAuth:
    """The widget's `authenticate` hook: widget session tokens, and the open session route."""

    @hookimpl
    def authenticate(self, request):
        return widget_principal(request)


@bp.record_once
def _install_authenticator(setup_state) -> None:
    manager = setup_state.app.extensions["agentd"].registry.manager
    manager.register(WidgetAuth(), name="agentd.widget_auth")


# -------------------------------------------------------- what widgets see

def event_filter(agent):
    """Events a widget may receive: safe ones, plus tools/reasoning if the agent opts in."""
    settings = agent.widget
    allowed = set(SAFE_EVENTS)
    if settings.get("show_tools"):
        allowed |= {"tool_call", "tool_result"}
    if settings.get("show_reasoning"):
        allowed.add("reasoning")

    def keep(event: Event) -> Event | None:
        if event.type == "approval_required":
            return Event("approval_required", {"approval": visitor_approval(event.data.get("approval") or {})})
        if event.type == "status" and event.data.get("tool") and "tool_call" not in allowed:
            return None  # a tool's own progress lines quote its arguments (the query, the host)
        if event.type == "tool_call" and "tool_call" not in allowed:
            # The tool's name only, as a progress line; arguments never leave the server.
            name = ((event.data.get("tool_call") or {}).get("function") or {}).get("name") or "a tool"
            return Event("status", {"message": f"Using {name.replace('_', ' ')}…", "tool": name})
        if event.type not in allowed:
            return None
        if event.type == "done" and isinstance(event.data.get("message"), dict):
            data = _safe_message(agent, {**event.data, "message": _safe_message(agent, event.data["message"])})
            return Event("done", data, event.payload)
        return event
    return keep


def visitor_approval(approval: dict) -> dict:
    """What a visitor sees of a held call: the question and the tool's name, never its arguments."""
    function = (approval.get("tool_call") or {}).get("function") or {}
    return {"id": approval.get("id"), "tool": function.get("name"), "message": approval.get("message"),
            "expires_at": approval.get("expires_at")}


def _safe_message(agent, message: dict) -> dict:
    clean = dict(message)
    if isinstance(clean.get("approvals"), list):
        clean["approvals"] = [visitor_approval(a) for a in clean["approvals"]]
    if not agent.widget.get("show_tools"):
        clean.pop("tool_calls", None)
    if not agent.widget.get("show_reasoning"):
        clean.pop("reasoning", None)
    return clean


def _visible(agent, message: dict) -> bool:
    if message.get("role") not in ("user", "assistant"):
        return message.get("role") == "tool" and bool(agent.widget.get("show_tools"))
    return bool(message.get("content")) or bool(agent.widget.get("show_tools"))


def _widget_chat(agent_id: str):
    from agentd.api import chat
    agent = _state().chat.agent(agent_id, g.principal)
    body = json_body(request)
    body = {key: body[key] for key in VISITOR_FIELDS if key in body}
    response = chat.send_message(agent_id, body, "widget", event_filter(agent))
    if response.mimetype == "application/json":
        response.set_data(current_app.json.dumps(_safe_message(agent, response.get_json())))
    return response


def _widget_history(agent_id: str):
    from agentd.api import chat
    agent = _state().chat.agent(agent_id, g.principal)
    data = chat.get_history(agent_id).get_json()
    data["messages"] = [_safe_message(agent, m) for m in data["messages"] if _visible(agent, m)]
    return jsonify(data)


@bp.before_app_request
def _widget_routes():
    """A widget token can chat with its agent and read its history; nothing else."""
    principal = getattr(g, "principal", None)
    if principal is None and request.path.startswith("/api/") and request.method != "OPTIONS":
        principal = widget_principal(request)  # in case this hook runs before authenticate
        if principal is not None:
            g.principal = principal
    if principal is None or principal.kind != "widget" or request.path == SESSION_PATH:
        return None
    match = CHAT_PATH.match(request.path)
    if match and request.method == "POST":
        return _widget_chat(match.group(1))
    if match and request.method == "GET":
        return _widget_history(match.group(1))
    run = RUN_PATH.match(request.path)
    if run and (run.group(2), request.method, bool(run.group(3))) in RUN_ROUTES:
        return _widget_run(run.group(1), run.group(2), run.group(3))
    raise Forbidden("A widget session can only chat")


RUN_ROUTES = {("stream", "GET", False), ("cancel", "POST", False), ("approvals", "GET", False),
              ("approvals", "POST", True)}


def _widget_run(conversation_id: str, action: str, approval_id: str | None = None):
    """The visitor's own run: attach (with the widget's event filter), cancel, or its held
    tool calls: list them and decide one (resuming with the widget's event filter)."""
    from agentd.api import approvals, conversations
    if action == "cancel":
        return conversations.cancel(conversation_id)
    agent = _state().chat.agent(g.principal.agents[0], g.principal)
    if action == "stream":
        return conversations.attach(conversation_id, event_filter(agent))
    if approval_id is None:
        return approvals.pending(conversation_id, lambda row: visitor_approval(approvals.store.public(row)))
    response = approvals.decide(conversation_id, approval_id, event_filter(agent), "widget")
    if isinstance(response, tuple) or response.mimetype != "application/json":
        return response  # 202 with the ids still pending, or the resumed run's stream
    response.set_data(current_app.json.dumps(_safe_message(agent, response.get_json())))
    return response


# ------------------------------------------------------- script and demo

def widget_script() -> tuple[bytes, str]:
    """/widget.js and its ETag: the parts in static/widget/ joined in name order.

    The widget stays one `<script>` tag for site owners and readable modules for us,
    with no build step; the join is redone only when a part changes on disk.
    """
    parts = sorted(WIDGET_PARTS.glob("*.js"))
    return _joined(tuple((str(part), part.stat().st_mtime_ns) for part in parts))


@lru_cache(maxsize=4)
def _joined(parts: tuple[tuple[str, int], ...]) -> tuple[bytes, str]:
    body = b"".join(Path(name).read_bytes() for name, _ in parts)
    return body, hashlib.sha256(body).hexdigest()[:32]


@bp.get("/widget.js")
def widget_js():
    body, etag = widget_script()
    response = Response(body, mimetype="text/javascript")
    response.set_etag(etag)
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response.make_conditional(request)


@bp.get("/")
def demo_page():
    """Every agent with its widget enabled, and the widget opened for `?agent=ID`."""
    agents = [a.info() for a in _state().agents.values() if a.widget.get("enabled")]
    chosen = request.args.get("agent")
    agent = _widget_agent(chosen) if chosen else None
    template = (STATIC_DIR / "demo.html").read_text(encoding="utf-8")
    html = render_template_string(template, agents=agents, agent=agent, chosen=chosen,
                                  base=_own_origin(),
                                  title=(agent.widget.get("title") or agent.name) if agent else "",
                                  greeting=agent.widget.get("greeting", "") if agent else "")
    return Response(html, mimetype="text/html")
