"""The one place that maps errors to HTTP and builds the error envelope."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from authz import errors
from authz.engine import PolicyRejected

log = logging.getLogger("authz.service")

STATUS = {
    errors.InvalidInput: 400,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Gone: 410,
    errors.Busy: 429,
    PolicyRejected: 422,
    errors.PolicyError: 503,
    errors.StoreUnavailable: 503,
}


class ApiError(Exception):
    """An HTTP-level refusal (bad body, missing key, wrong role) with its envelope."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or {}
        self.headers = headers or {}


def envelope(status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None):
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _status_of(exc: errors.AuthzError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return envelope(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(errors.AuthzError)
    def _domain_error(exc: errors.AuthzError):
        status = _status_of(exc)
        if status >= 500:
            log.error("service unavailable: %s", exc, exc_info=exc.__cause__ is not None)
            return envelope(status, exc.code, exc.message, headers={"Retry-After": "1"})
        retry = {"Retry-After": "10"} if status == 429 else None
        return envelope(status, exc.code, exc.message, exc.details, retry)

    @app.errorhandler(ValidationError)
    def _invalid(exc: ValidationError):
        details = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        return envelope(400, "invalid_request", "the request body does not match the expected schema", details)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
        if exc.code == 413:
            code = "payload_too_large"
        headers = {}
        allowed = getattr(exc, "valid_methods", None)
        if exc.code == 405 and allowed:
            headers["Allow"] = ", ".join(allowed)
        return envelope(exc.code or 500, code, exc.description or exc.name, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error")
        return envelope(500, "internal_error", "the service failed to answer; no change was made")
