"""Domain exceptions. ``service/errors.py`` is the one place that maps them to HTTP."""

from __future__ import annotations


class AuthzError(Exception):
    """Base of every domain error: a stable snake_case code, a sentence, details."""

    code = "error"

    def __init__(self, message: str, details: dict | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code


class InvalidInput(AuthzError):
    """Input that is well-formed JSON but breaks a domain constraint (unknown right...)."""

    code = "invalid_input"


class NotFound(AuthzError):
    code = "not_found"


class Forbidden(AuthzError):
    """The policy refused the acting user this change."""

    code = "forbidden"


class Conflict(AuthzError):
    """The change contradicts the current state (last admin, duplicate link...)."""

    code = "conflict"


class Gone(AuthzError):
    """An activation link that was used or has expired."""

    code = "gone"


class Busy(AuthzError):
    """Too much of a costly operation is under way; the same call may succeed later."""

    code = "busy"


class PolicyError(AuthzError):
    """The policy could not be loaded or evaluated; decisions fail closed."""

    code = "policy_error"


class StoreUnavailable(AuthzError):
    """The database could not be reached; decisions fail closed."""

    code = "store_unavailable"
