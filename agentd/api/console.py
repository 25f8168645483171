"""The operator's console at /admin: server-rendered pages over the same data as /api/admin.

Sign-in: an admin key entered once on /admin/login. The session is a cookie
signed with the app's secret (itsdangerous) holding the key's hash and a CSRF
token: HttpOnly, SameSite=Strict, Secure when the request came over https,
scoped to /admin. Every request checks the key again (revoked or demoted keys
lose the console at once); every POST must carry the session's CSRF token.
An `Authorization: Bearer` admin key works too (no cookie, so no CSRF needed);
a non-admin key gets 403 on every page. In open local mode the local user is
an admin. No inline script: charts are drawn by /admin/static/console.js from
JSON data blocks, so a `script-src 'self'` policy holds.
"""
from __future__ import annotations

import datetime as dt
import hmac
import secrets
from pathlib import Path

from flask import (Blueprint, Response, current_app, g, redirect, render_template, request,
                   send_from_directory, url_for)
from itsdangerous import BadSignature, URLSafeTimedSerializer

from agentd.auth import any_key_exists, bearer_principal, create_key, hash_key, list_keys, revoke_key
from agentd.errors import ApiError, Forbidden, InvalidRequest, Unauthorized
from agentd.operators import conversations, usage
from agentd.store import keys

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "admin"
COOKIE = "agentd_admin"
SESSION_SECONDS = 12 * 3600
USED_FORMS_KEPT = 20  # the key forms a session already sent, refused if sent again
# The console needs nothing but its own files: no inline script or style, no other origin.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
OPEN_ENDPOINTS = ("console.login", "console.login_post", "console.static")

bp = Blueprint("console", __name__, url_prefix="/admin",
               template_folder=str(Path(__file__).resolve().parent.parent / "templates"))


def _state():
    return current_app.extensions["agentd"]


def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="agentd-admin-session")


def _session() -> dict:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return {}
    try:
        data = _signer().loads(raw, max_age=SESSION_SECONDS)
    except BadSignature:
        return {}
    return data if isinstance(data, dict) else {}


def _set_session(response: Response, data: dict) -> Response:
    response.set_cookie(COOKIE, _signer().dumps(data), max_age=SESSION_SECONDS, path="/admin",
                        secure=request.is_secure, httponly=True, samesite="Strict")
    return response


# -- who is asking ------------------------------------------------------------------------

def _from_cookie(session: dict) -> bool:
    """True for a live admin key in the session; 403 for a key that is not (or no longer) admin."""
    digest = session.get("k")
    if not digest:
        return False
    row = keys.by_hash(digest)
    if row is None or row.revoked_at is not None:
        return False
    if not row.is_admin:
        raise Forbidden("This console needs an admin key")
    g.console_user = row.user_id
    return True


def _authenticate() -> Response | None:
    """Admit admins; send the signed-out to the login page; 403 for everyone else."""
    if request.headers.get("Authorization"):
        principal = bearer_principal(request.headers["Authorization"], open_mode=False)
        if not principal.admin:
            raise Forbidden("This console needs an admin key")
        g.console_user, g.console_bearer = principal.user_id, True
        return None
    if _from_cookie(_session()):
        return None
    if not any_key_exists():
        from agentd.api import _local_callers_only
        _local_callers_only(_state().config)
        g.console_user = "local"  # open local mode: the machine's own user is the admin
        return None
    return redirect(url_for("console.login", next=request.path))


def _check_csrf() -> None:
    if request.method != "POST" or g.get("console_bearer"):
        return
    expected = _session().get("c") or ""
    given = request.form.get("csrf_token", "")
    if not expected or not hmac.compare_digest(expected, given):
        raise Forbidden("The form's CSRF token is missing or wrong; reload the page and try again")


@bp.before_request
def _gate():
    if request.endpoint in OPEN_ENDPOINTS:
        _check_csrf()
        return None
    answer = _authenticate()
    if answer is None:
        _check_csrf()
    return answer


@bp.after_request
def _session_cookie(response: Response) -> Response:
    """Every page carries a CSRF token; the session cookie keeps it (and the key's hash)."""
    session = _session()
    if "c" not in session and response.mimetype == "text/html":
        _set_session(response, {**session, "c": g.get("csrf") or secrets.token_urlsafe(24)})
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", CSP)
    return response


@bp.errorhandler(ApiError)
def _error_page(exc: ApiError):
    html = render_template("admin/error.html", status=exc.status, code=exc.code, message=exc.message)
    return Response(html, status=exc.status, mimetype="text/html", headers=exc.headers)


@bp.context_processor
def _template_values():
    return {"csrf_token": _csrf(), "console_user": g.get("console_user")}


def _csrf() -> str:
    token = _session().get("c") or g.get("csrf")
    if not token:
        token = g.csrf = secrets.token_urlsafe(24)
    return token


# -- sign in and out ---------------------------------------------------------------------

@bp.get("/login")
def login():
    return render_template("admin/login.html", error=None, next=request.args.get("next", ""))


@bp.post("/login")
def login_post():
    key = (request.form.get("key") or "").strip()
    target = request.form.get("next") or ""
    try:
        principal = bearer_principal(f"Bearer {key}", open_mode=False)
    except Unauthorized as exc:
        html = render_template("admin/login.html", error=exc.message, next=target)
        return Response(html, status=401, mimetype="text/html")
    if not principal.admin:
        raise Forbidden("This key is not an admin key")
    destination = target if target.startswith("/admin") and not target.startswith("//") else url_for("console.home")
    response = redirect(destination)
    return _set_session(response, {"k": hash_key(key), "c": secrets.token_urlsafe(24)})


@bp.post("/logout")
def logout():
    response = redirect(url_for("console.login"))
    response.delete_cookie(COOKIE, path="/admin")
    return response


@bp.get("/static/<filename>")
def static(filename):
    return send_from_directory(STATIC_DIR, filename, max_age=3600)


# -- pages -------------------------------------------------------------------------------

@bp.get("/")
def home():
    start, stop = request.args.get("from") or None, request.args.get("to") or None
    if not (start or stop):  # the last 30 days by default
        today = dt.datetime.now(dt.timezone.utc).date()
        start, stop = (today - dt.timedelta(days=29)).isoformat(), today.isoformat()
    data = {"by_agent": usage.daily_series(start, stop, "agent"),
            "by_model": usage.daily_series(start, stop, "model")}
    totals = usage.usage_report("agent", start, stop)["total"]
    return render_template("admin/home.html", data=data, top_users=usage.top("user", start, stop), total=totals,
                           models=usage.usage_report("model", start, stop)["rows"], start=start or "",
                           stop=stop or "")


@bp.get("/conversations")
def conversation_list():
    args = request.args
    try:
        page = conversations.list_all(agent=args.get("agent") or None, user=args.get("user") or None,
                                      q=args.get("q") or None, limit=50, before=args.get("before") or None)
    except InvalidRequest as exc:
        page = {"conversations": [], "has_more": False, "next_before": None, "error": exc.message}
    return render_template("admin/conversations.html", page=page, args=args,
                           agents=sorted(_state().agents))


@bp.get("/conversations/<conversation_id>")
def conversation_trace(conversation_id):
    trace = conversations.detail(conversation_id)
    return render_template("admin/trace.html", conversation=trace, timeline=_timeline)


def _timeline(turn: dict, width: int = 640) -> dict:
    """Bar positions (in SVG units) for a turn's steps, scaled to the turn's length."""
    ends = [s["offset_ms"] + (s["duration_ms"] or 0) for s in turn["steps"]] or [0]
    total = max(max(ends), 1)
    scale = width / total
    bars = [{"x": round(s["offset_ms"] * scale, 1), "w": max(round((s["duration_ms"] or 0) * scale, 1), 2),
             "y": 6 + i * 26, "step": s} for i, s in enumerate(turn["steps"])]
    return {"bars": bars, "height": 12 + 26 * len(bars), "width": width, "total_ms": total}


@bp.get("/agents")
def agents_page():
    state = _state()
    return render_template("admin/agents.html", agents=sorted(state.agents.values(), key=lambda a: a.id),
                           problems=state.problems)


@bp.get("/keys")
def keys_page():
    return _keys_page()


def _keys_page(created=None, error=None, status=200) -> Response:
    # Each rendering of the form gets its own id, so a resubmitted form is recognised.
    html = render_template("admin/keys.html", keys=list_keys(), created=created, error=error,
                           form_id=secrets.token_urlsafe(12))
    return Response(html, status=status, mimetype="text/html")


@bp.post("/keys")
def keys_create():
    form_id = request.form.get("form_id") or ""
    session = _session()
    used = session.get("f") or []
    if form_id and form_id in used:
        # A reload of the page that showed a new key sends the same form again.
        return _keys_page(error="This form was already sent: its key was created and shown once. "
                                "Fill the form again for another key.", status=409)
    user = (request.form.get("user") or "").strip()
    agents = [a.strip() for a in (request.form.get("agents") or "").split(",") if a.strip()]
    try:
        row, key = create_key(user, agents or None, admin=request.form.get("admin") == "on")
    except InvalidRequest as exc:
        return _keys_page(error=exc.message, status=400)
    response = _keys_page(created={"row": row, "key": key})
    if form_id and not g.get("console_bearer"):
        _set_session(response, {**session, "f": [*used, form_id][-USED_FORMS_KEPT:]})
    return response


@bp.post("/keys/<key_id>/revoke")
def keys_revoke(key_id):
    revoke_key(key_id)
    return redirect(url_for("console.keys_page"))


def register(app) -> None:
    app.register_blueprint(bp)
