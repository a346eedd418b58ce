"""``POST /access/v1/evaluation`` answered without Flask's request machinery, when the
request is the plain case; every other request, and this one in any other case, goes to
the Flask app, whole.

Portals ask this one question on every page. A cached decision took 931,000
instructions in process through Flask, of which Flask's own request handling (the
request context, routing, hooks, the response object) is most of the 470,000 that the
floor app, answering a constant, takes (callgrind, ``bench/instructions.py``).

The plain case: POST to exactly that path; an ``application/json`` body of a known
length, at most ``BODY_AT_MOST`` bytes; an address the guessing throttle is not
watching; a known API key whose role may decide; a JSON object without ``\\u`` escapes
that the schema accepts. Anything else, or any exception while answering (a database
error, say; one the app would not raise is also logged), hands the request to the Flask
app, the body already read handed on with it: there the very same request is answered
as if the fast path did not exist, with its 4xx or 503. So the fast path only ever answers 200, with a decision made by
``authzen.evaluate``, as the view would.

What the app's hooks and the view do for this request, it does with the same functions:
the request id (``http.request_id``), the key (``KnownKeys``), the answer
(``authzen.evaluate``), the JSON text (``jsontext``), the metrics and log lines
(``observability.record``), the headers (``_echo_request_id``'s). ``HOOKS`` names the
hooks it stands for: with any other hook registered, it steps aside
(``install`` does not install it), as it does in debug mode (Flask's indented JSON).
tests/http/test_fastpath.py checks that both paths give the same answer, headers and
log lines for generated requests.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterable

from flask import Flask
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from authz import tokens
from authz.errors import AuthzError
from service import authzen, jsontext, logs, observability
from service.http import bearer_secret, request_id

PATH = "/access/v1/evaluation"
ENDPOINT = "authzen.evaluation"
BODY_AT_MOST = 4096  # an evaluation body is a few hundred bytes; larger ones go to Flask
AREA = "decide"
# The app's hooks, by module and name, in the order Flask keeps them (none of the last
# three kinds); what they do for a decision answered 200 the fast path does.
HOOKS = {
    "before_request": [
        "service.app:create_app.<locals>._request_id",
        "service.throttle:install.<locals>._refuse_guessers",
        "service.observability:_started",
    ],
    "after_request": [
        "service.app:create_app.<locals>._echo_request_id",
        "service.throttle:install.<locals>._count_guesses",
        "service.observability:_finished",
    ],
    "teardown_request": [],
    "url_value_preprocessor": [],
    "teardown_appcontext": [],
}

# What a request the app refuses raises on the way: a body that is not JSON or not UTF-8
# (ValueError), nested too deeply, refused by the schema; the store or the policy failing.
REFUSALS = (ValueError, RecursionError, ValidationError, AuthzError)

log = logging.getLogger("authz.fastpath")

StartResponse = Callable[..., object]


def hooks(app: Flask) -> dict[str, list[str]]:
    """The app's request hooks, as ``HOOKS`` names them (a throttle turned off has none)."""
    def named(funcs: dict) -> list[str]:
        return [f"{func.__module__}:{func.__qualname__}" for scope in funcs.values() for func in scope]

    return {"before_request": named(app.before_request_funcs), "after_request": named(app.after_request_funcs),
            "teardown_request": named(app.teardown_request_funcs),
            "url_value_preprocessor": named(app.url_value_preprocessors),
            "teardown_appcontext": named({None: app.teardown_appcontext_funcs})}


def stands_for(app: Flask) -> bool:
    """Whether the fast path does all the app would do for its requests."""
    found = hooks(app)
    throttled = "authz_throttle" in app.extensions
    expected = {name: [hook for hook in names if throttled or ".throttle:" not in hook]
                for name, names in HOOKS.items()}
    try:
        routed = app.url_map.bind("localhost").match(PATH, "POST")
    except HTTPException:
        routed = None
    view = app.view_functions.get(ENDPOINT)
    return (found == expected and routed == (ENDPOINT, {}) and view is authzen.evaluation
            and getattr(view, "api_area", None) == AREA and not app.debug)


def install(app: Flask) -> None:
    """Put the fast path in front of the app's WSGI callable, if it stands for the app."""
    if not stands_for(app):
        log.warning("the evaluation fast path is off: debug mode, or the app's routes or hooks are not "
                    "the ones it stands for (hooks: %s)", hooks(app))
        return
    app.wsgi_app = FastEvaluation(app, app.wsgi_app)  # type: ignore[method-assign]


class FastEvaluation:
    """The WSGI callable: answers the plain case (see the module), hands on the rest."""

    def __init__(self, app: Flask, flask_wsgi: Callable[..., Iterable[bytes]]):
        self.app = app
        self.flask_wsgi = flask_wsgi
        self.services = app.extensions["authz"]
        self.throttle = app.extensions.get("authz_throttle")
        self.body_at_most = min(BODY_AT_MOST, app.config.get("MAX_CONTENT_LENGTH") or BODY_AT_MOST)
        self.default = app.json.default  # type: ignore[attr-defined]

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.flask_wsgi(environ, start_response)
        started = time.perf_counter()
        try:
            raw = self._body(environ)
        except Exception:  # noqa: BLE001 - reading failed (the client went away, say): Flask reads what is left
            return self.flask_wsgi(environ, start_response)
        answer = None
        if raw is not None:
            environ["wsgi.input"] = io.BytesIO(raw)  # for Flask, if the answer is not ours
            try:
                answer = self._answer(environ, raw, started)
            except REFUSALS:
                answer = None  # Flask answers it again, with its 4xx or 503
            except Exception:
                # Flask still answers right; but a fault of the fast path's own must not
                # hide as a slower service.
                log.exception("the evaluation fast path failed; Flask answers the request")
                answer = None
        if answer is None:
            return self.flask_wsgi(environ, start_response)
        start_response("200 OK", answer[0])
        return [answer[1]]

    def _body(self, environ: dict) -> bytes | None:
        """The body, if it is JSON of a known, small length; else None, nothing read."""
        if environ.get("HTTP_TRANSFER_ENCODING") or environ.get("HTTP_CONTENT_ENCODING"):
            return None
        if environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() != "application/json":
            return None
        length = environ.get("CONTENT_LENGTH", "")
        if not length.isdigit() or not 0 < int(length) <= self.body_at_most:
            return None
        return environ["wsgi.input"].read(int(length))

    def _answer(self, environ: dict, raw: bytes, started: float) -> tuple[list, bytes] | None:
        """(headers, body) of the 200 the app would answer, or None if it would not
        answer 200 (or this is not the plain case)."""
        if len(raw) != int(environ["CONTENT_LENGTH"]) or b"\\u" in raw:
            return None
        address = environ.get("REMOTE_ADDR") or "-"
        if self.throttle is not None and self.throttle.retry_after(address) is not None:
            return None
        secret = bearer_secret(environ.get("HTTP_AUTHORIZATION", ""))
        if not secret:
            return None
        found = self.services
        key, version = found.keys.find(tokens.digest(secret))
        if key is None or not found.policy().key_may_call(key, AREA):
            return None
        body = json.loads(raw.decode("utf-8"))
        if type(body) is not dict:
            return None
        rid = request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        token = logs.REQUEST_ID.set(rid)
        try:
            payload, pinned = authzen.evaluate(found, body, version)
            text = f"{jsontext.dumps(payload, self.default)}\n".encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(text))),
                       ("X-Authz-Policy-Version", pinned.policy().version), ("X-Request-ID", rid),
                       ("Cache-Control", "no-store")]
            try:
                observability.record(self.app, ENDPOINT, "POST", 200, time.perf_counter() - started, key.name,
                                     rid, payload, body)
            except Exception:
                log.exception("could not record the request's metrics or log")
        finally:
            logs.REQUEST_ID.reset(token)
        return headers, text
