"""Structured logs: one JSON line per request and per turn, request ids, and no secret in any line.

Redaction happens when a record is *created* (a log record factory), not in
one handler's formatter: every handler then sees the scrubbed text, including
gunicorn's, pytest's and any a deployer adds. Two kinds of secret are removed:
the exact values this process knows (API key variables, the database password,
the secret key) and anything shaped like one (bearer tokens, URL passwords,
`api_key=…`, agentd and common provider key formats).
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit

from flask import Flask, g, request

from agentd.hookspecs import hookimpl

REQUEST_ID = contextvars.ContextVar("agentd_request_id", default=None)
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_SECRET_ENV = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.I)
_MIN_SECRET_LEN = 6  # shorter values would redact ordinary words

_PATTERNS = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{4,}"), r"\1 ***"),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',\s}]+"), r"\1***"),
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1***@"),
    # key = value, key: "value" (JSON, query strings, env dumps); not SQL's `"busy_token" = ?`
    (re.compile(r"(?i)((?<![A-Za-z0-9])(?:api[_-]?key|apikey|access[_-]?token|secret(?:[_-]?key)?|password"
                r"|passwd|token)[\"']?\s*[:=]\s*[\"']?)[^\"'&,\s}()?]{3,}"), r"\1***"),
    (re.compile(r"\bagd_[A-Za-z0-9_\-]{8,}"), "agd_***"),
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{12,}"), r"\1-***"),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), "AIza***"),
    (re.compile(r"\bgsk_[A-Za-z0-9]{12,}"), "gsk_***"),
]
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


class Redactor:
    """Removes known secret values and secret-shaped text from strings."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, *values: str | None) -> None:
        with self._lock:
            known = set(self._values) | {v for v in values if v and len(v) >= _MIN_SECRET_LEN}
            self._values = tuple(sorted(known, key=len, reverse=True))  # longest first

    def add_environment(self, environ=os.environ) -> None:
        """Every value of a variable whose name says it is a key, secret, token or password."""
        self.add(*(value for name, value in environ.items() if _SECRET_ENV.search(name)))

    def add_url(self, url: str | None) -> None:
        try:
            self.add((urlsplit(url or "").password) or None)
        except ValueError:
            pass

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, "***")
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


redact = Redactor()
_installed_factory = None


def _install_record_factory() -> None:
    """Scrub every record as it is made, and stamp it with the current request id."""
    global _installed_factory
    if _installed_factory is not None:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        try:
            _scrub(record)
        except Exception:  # logging must never fail because of redaction
            record.msg, record.args = "[log line dropped: redaction failed]", ()
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return record

    logging.setLogRecordFactory(factory)
    _installed_factory = factory


def _scrub(record: logging.LogRecord) -> None:
    record.msg, record.args = redact(record.getMessage()), ()
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None  # formatters would re-render the raw traceback otherwise
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None and not key.startswith("_"):
                data[key] = value
        if record.exc_text:
            data["exception"] = record.exc_text
        return redact(json.dumps(data, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure(config, environ=os.environ) -> None:
    """Set the format and level of agentd's log output, and learn the secrets to scrub."""
    redact.add_environment(environ)
    redact.add_url(config.database_url)
    redact.add(config.secret_key or None)
    _install_record_factory()
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        root.addHandler(handler)
        for other in [h for h in root.handlers if h is not handler and _is_plain_stderr(h)]:
            root.removeHandler(other)  # e.g. basicConfig's: one line per record, not two
    handler.setFormatter(JsonFormatter() if config.log_format == "json" else TextFormatter())
    root.setLevel(str(config.log_level).upper())
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # our request line replaces its


def _is_plain_stderr(handler: logging.Handler) -> bool:
    return type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in (sys.stderr, sys.stdout)


def learn_agent_secrets(agents: dict) -> None:
    """Secrets in agent files: the variables named by `*_env` keys, keys named like secrets, URL passwords."""
    for agent in agents.values():
        _walk_spec(getattr(agent, "spec", None) or {})


def _walk_spec(node) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                if str(key).endswith("_env"):
                    redact.add(os.environ.get(value))
                elif _SECRET_ENV.search(str(key)):
                    redact.add(value)
                elif "://" in value:
                    redact.add_url(value)
            else:
                _walk_spec(value)
    elif isinstance(node, list):
        for item in node:
            _walk_spec(item)


# --- per request --------------------------------------------------------------
request_log = logging.getLogger("agentd.request")
turn_log = logging.getLogger("agentd.turn")


def _request_id() -> str:
    incoming = request.headers.get("X-Request-Id", "")
    return incoming if _REQUEST_ID_OK.match(incoming) else uuid.uuid4().hex


def _before_request() -> None:
    g.request_id = _request_id()
    g.log_started = time.monotonic()
    g.request_id_token = REQUEST_ID.set(g.request_id)


def _after_request(response):
    response.headers["X-Request-Id"] = g.get("request_id") or ""
    started = g.get("log_started") or time.monotonic()
    principal = g.get("principal")
    request_log.info("%s %s %s", request.method, request.path, response.status_code, extra={
        "event": "request", "method": request.method, "path": request.path,
        "status": response.status_code, "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "user": getattr(principal, "user_id", None)})
    return response


def _teardown(exc) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        try:
            REQUEST_ID.reset(token)
        except ValueError:  # reset from another context (streamed responses); harmless
            REQUEST_ID.set(None)


# --- per turn -----------------------------------------------------------------
def observe_turn(turn, event) -> None:
    """Event observer: one line when a turn finishes."""
    if event.type != "finish":
        return
    from agentd.metrics import timings
    t = timings(turn)
    outcome = turn.outcome
    usage = outcome.usage.to_dict() if outcome is not None else None
    first = t.first_token if t else None
    turn_log.info("turn %s %s", turn.agent.id, event.data.get("status"), extra={
        "event": "turn", "agent": turn.agent.id, "conversation": turn.conversation_id,
        "user": turn.principal.user_id, "outcome": event.data.get("status"),
        "rounds": outcome.rounds if outcome is not None else None, "usage": usage,
        "provider": turn.recorder.provider, "model": turn.recorder.model,
        "ttft_ms": round(first * 1000, 1) if first is not None else None,
        "duration_ms": round((time.monotonic() - turn.started) * 1000, 1),
        "tool_calls": t.tool_calls if t else None, "stream": bool(turn.inp.stream)})


class TurnLogPlugin:
    """One log line per finished run."""

    @hookimpl(trylast=True)
    def on_event(self, run, event):
        observe_turn(run, event)


def install(app: Flask, state) -> None:
    """Request ids, a log line per request and per turn; call before other before_request hooks."""
    configure(state.config)
    learn_agent_secrets(state.agents)
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.teardown_request(_teardown)
    state.registry.manager.register(TurnLogPlugin(), name="agentd.logs")
