"""Errors a user can cause, each with the status and code of docs/api.md."""
from __future__ import annotations


class ApiError(Exception):
    """An error that becomes `{"error": {"code", "message"}}` with `status`."""

    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.code = code or self.code
        self.headers = headers or {}

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidRequest(ApiError):
    status, code = 400, "INVALID_REQUEST"


class Unauthorized(ApiError):
    status, code = 401, "UNAUTHORIZED"


class Forbidden(ApiError):
    status, code = 403, "FORBIDDEN"


class AgentNotFound(ApiError):
    status, code = 404, "AGENT_NOT_FOUND"


class ConversationNotFound(ApiError):
    status, code = 404, "CONVERSATION_NOT_FOUND"


class ConversationBusy(ApiError):
    status, code = 409, "CONVERSATION_BUSY"


class GuardrailBlocked(ApiError):
    status, code = 422, "GUARDRAIL_BLOCKED"


class ModelError(ApiError):
    status, code = 502, "MODEL_ERROR"


class ProviderUnavailable(ApiError):
    status, code = 503, "PROVIDER_UNAVAILABLE"


class NotFound(ApiError):
    status, code = 404, "NOT_FOUND"


class ApprovalPending(ApiError):
    status, code = 409, "APPROVAL_PENDING"


class ApprovalResolved(ApiError):
    status, code = 409, "APPROVAL_RESOLVED"


class ApprovalExpired(ApiError):
    status, code = 409, "APPROVAL_EXPIRED"
