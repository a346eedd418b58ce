"""Request plumbing shared by the blueprints: body parsing, keys, acting user, docs."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from functools import cache, wraps

from flask import current_app, g, request
from marshmallow import Schema

from authz import model, tokens
from authz.audit import Context
from authz.decisions import UNREAD
from authz.errors import NotFound
from authz.identifiers import is_email, normalize_email
from authz.store import Database
from service.errors import ApiError


def services():
    """The app's services (database, policy, use cases), built by ``create_app``."""
    return current_app.extensions["authz"]


def json_body() -> dict:
    """Parse the request body as one JSON object, or refuse with a clear 4xx."""
    asked = request._get_current_object()  # type: ignore[attr-defined]  # once, not through the proxy each time
    mimetype = asked.mimetype
    if not mimetype or (mimetype != "application/json" and not mimetype.endswith("+json")):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = asked.get_data(cache=True)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json", "the body is not valid UTF-8") from exc
    except RecursionError as exc:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from exc
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    g.json_body = data  # for the request's log lines: the body is parsed once
    if b"\\u" not in raw:
        # Both kinds of unstorable text come only from a \u escape: JSON refuses raw
        # control characters, and UTF-8 raw surrogates (checked above).
        return data
    try:
        problem = _unstorable_text(data)
    except RecursionError as exc:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from exc
    if problem:
        # The field's own name may hold the bad character: show it escaped.
        field, why = problem[0].encode("utf-8", "backslashreplace").decode("utf-8"), problem[1]
        raise ApiError(400, "invalid_request", f"{field}: {why}", {field.split(".")[0]: [why]})
    return data


def _unstorable_text(value, path: str = "") -> tuple[str, str] | None:
    """Find a string no database can store: a lone UTF-16 surrogate (from a \\ud800
    escape) or a NUL character. Return (field path, why), or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return path or "body", "contains a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body", "contains an unpaired UTF-16 surrogate"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        here = f"{path}.{key}" if path else str(key)
        found = _unstorable_text(key, here) if isinstance(key, str) else None
        found = found or _unstorable_text(item, here)
        if found:
            return found
    return None


def load(schema: type[Schema], data: dict | None = None) -> dict:
    """Validate ``data`` (the JSON body by default) against ``schema``."""
    return _instance(schema).load(json_body() if data is None else data)


@cache
def _instance(schema: type[Schema]) -> Schema:
    """One instance per schema class: building one costs more than loading with it, and
    loading leaves the instance as it was."""
    return schema()


REQUEST_ID_MAX = 200
_LINK_ID = re.compile(r"[0-9a-f]{24}")


def link_id(value: str) -> str:
    """Delegation and grant ids are 24 hex digits; anything else in a path names nothing."""
    if not _LINK_ID.fullmatch(value):
        raise NotFound("no such delegation or grant", code="not_found")
    return value


def request_id(given: str) -> str:
    """The caller's X-Request-ID if it is short printable ASCII, else a new one."""
    if given and len(given) <= REQUEST_ID_MAX and given.isprintable() and given.isascii():
        return given
    return secrets.token_hex(16)  # 128 random bits as 32 hex digits, like uuid4().hex at a third of its cost


def bearer_secret(header: str) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header, or None."""
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


class KnownKeys:
    """The API keys met, remembered while the data version stays the same (creating or
    revoking a key bumps it, so a revoked key fails at once)."""

    LIMIT = 1000  # only real keys are remembered: guesses must not fill it

    def __init__(self, db: Database):
        self._db = db
        self._version: int | None = None
        self._keys: dict[str, model.ApiKey] = {}

    def find(self, digest: str) -> tuple[model.ApiKey | None, int | None]:
        """The key with this digest, and the data version read to check it: the request's
        version (``seen_version``), under which decisions answered from the cache need no
        other read."""
        version = self._db.data_version()
        if version is None or version != self._version:
            self._version, self._keys = version, {}
        keys = self._keys
        key = keys.get(digest)
        if key is None:
            with self._db.reading() as tx:
                key = tx.api_key_by_hash(digest)
            if key is not None and version is not None and len(keys) < self.LIMIT:
                keys[digest] = key
        return key, version


def seen_version() -> object:
    """The data version read at the start of this request, with its API key."""
    return g.get("data_version", UNREAD)


def requires(area: str) -> Callable:
    """Let the view run only for an API key whose role the policy lets call ``area``."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args, **kwargs):
            secret = bearer_secret(request.headers.get("Authorization", ""))
            key = None
            if secret:
                key, g.data_version = services().keys.find(tokens.digest(secret))
            if key is None:
                raise ApiError(
                    401, "unauthenticated", "a valid API key is needed: Authorization: Bearer <key>",
                    headers={"WWW-Authenticate": 'Bearer realm="authz"'},
                )
            if not services().policy().key_may_call(key, area):
                raise ApiError(403, "forbidden", f"this API key's role ({key.role}) may not call this endpoint")
            g.api_key = key
            return view(*args, **kwargs)

        guarded.api_area = area  # type: ignore[attr-defined]
        return guarded

    return decorate


def may(area: str) -> bool:
    """Whether the calling key's role may also reach ``area`` (e.g. the whole audit log)."""
    key: model.ApiKey | None = g.get("api_key")
    return key is not None and services().policy().key_may_call(key, area)


def acting_user(required: bool = True) -> str | None:
    value = request.headers.get("Acting-User")
    if value is None or not value.strip():
        if required:
            raise ApiError(400, "acting_user_required", "name the person acting in the Acting-User header",
                           {"Acting-User": ["required"]})
        return None
    if not is_email(value):
        raise ApiError(400, "invalid_acting_user", "the Acting-User header is not a valid e-mail address",
                       {"Acting-User": ["not a valid e-mail address"]})
    return normalize_email(value)


def context(user_required: bool = True) -> Context:
    key = g.get("api_key")
    return Context(user=acting_user(user_required), key=key.name if key else None, request_id=g.get("request_id"))


def api_doc(summary: str, *, body: type[Schema] | None = None, response: type[Schema] | None = None,
            status: int = 200, errors: tuple[int, ...] = (), query: type[Schema] | None = None,
            acting_user: bool = False, headers: dict[str, str] | None = None,
            also: dict[int, tuple[str, type[Schema]]] | None = None) -> Callable:
    """Attach OpenAPI facts to a view; ``service/openapi.py`` reads them.

    ``headers``: optional request headers and what they do; ``also``: other success
    statuses, with their description and body.
    """

    def decorate(view: Callable) -> Callable:
        view.api_doc = {  # type: ignore[attr-defined]
            "summary": summary, "body": body, "response": response, "status": status,
            "errors": errors, "query": query, "acting_user": acting_user,
            "headers": headers or {}, "also": also or {},
        }
        return view

    return decorate
