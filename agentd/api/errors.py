"""Every error, on every route, in docs/api.md's one shape."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from agentd.errors import ApiError
from agentd.store.database import unavailable_error

log = logging.getLogger("agentd.api")

_HTTP_CODES = {400: "INVALID_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
               405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 429: "RATE_LIMITED"}


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def _http_error(exc: HTTPException):
    code = _HTTP_CODES.get(exc.code, "INTERNAL_ERROR" if (exc.code or 500) >= 500 else "INVALID_REQUEST")
    message = {404: "No such route", 405: "Method not allowed for this route",
               413: "The request body is too large"}.get(exc.code, exc.description or exc.name)
    headers = dict(exc.get_headers()) if exc.code == 405 else {}
    headers.pop("Content-Type", None)
    return error_response(exc.code or 500, code, message, headers)


def _unexpected(exc: Exception):
    unavailable = unavailable_error(exc)
    if unavailable is not None:
        log.warning("database unavailable: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
        return _api_error(unavailable)
    log.exception("unhandled error")
    return error_response(500, "INTERNAL_ERROR", "Something went wrong on the server")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
