"""The evaluation fast path (service/fastpath.py) answers exactly as the Flask app does:
for generated requests, the plain ones it answers and all the others it hands on, the
same status, headers, body, log lines and metrics as the app alone; and it steps aside
when the app holds a hook it does not stand for."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.middleware.proxy_fix import ProxyFix

from service import fastpath, observability
from service.app import create_app
from service.fastpath import FastEvaluation
from service.logs import LINES
from tests.http.conftest import Api, assert_error, question
from tests.support import ADMIN, COLLAB, DUPONT, MANAGER, MARTIN, STRANGER

EVALUATION = "/access/v1/evaluation"


def build(db, clock, **overrides):
    url = db.engine.url.render_as_string(hide_password=False)
    return create_app({"AUTHZ_DATABASE_URL": url, "TESTING": True, **overrides}, clock=clock)


# ---- where it stands -------------------------------------------------------------------


def test_the_app_answers_evaluations_through_the_fast_path(app):
    assert isinstance(app.wsgi_app, FastEvaluation)


def test_without_the_throttle_too(db, clock):
    app = build(db, clock, AUTHZ_GUESS_LIMIT=0)
    try:
        assert isinstance(app.wsgi_app, FastEvaluation)
    finally:
        app.extensions["authz"].db.dispose()


def test_behind_a_trusted_proxy_it_sits_inside_proxyfix(db, clock):
    """So that the client address the proxy passes reaches the throttle on both paths."""
    app = build(db, clock, AUTHZ_TRUSTED_PROXIES=1)
    try:
        assert isinstance(app.wsgi_app, ProxyFix) and isinstance(app.wsgi_app.app, FastEvaluation)
    finally:
        app.extensions["authz"].db.dispose()


@pytest.mark.parametrize("hook", ["before_request", "after_request", "teardown_request", "url_value_preprocessor",
                                  "teardown_appcontext"])
def test_a_hook_it_does_not_stand_for_turns_it_off(app, hook):
    assert fastpath.stands_for(app)
    getattr(app, hook)(lambda *args: args[0] if args and hook == "after_request" else None)
    assert not fastpath.stands_for(app)


def test_debug_mode_turns_it_off(app):
    app.debug = True
    assert not fastpath.stands_for(app)


def test_a_throttled_address_is_refused_with_a_right_key(api: Api, app, story):
    for attempt in range(app.config["AUTHZ_GUESS_LIMIT"]):
        api.keys["wrong"] = f"guess-{attempt}"
        assert_error(api.post(EVALUATION, key="wrong", json=question(ADMIN, "compte", DUPONT)), 401)

    refused = api.post(EVALUATION, key="pep", json=question(ADMIN, "compte", DUPONT))

    assert_error(refused, 429, code="too_many_failures")


def test_behind_a_trusted_proxy_the_throttle_counts_the_client(db, clock, keys, api, story):
    app = build(db, clock, AUTHZ_TRUSTED_PROXIES=1, AUTHZ_GUESS_LIMIT=3)
    client = app.test_client()
    body = question(ADMIN, "compte", DUPONT)
    try:
        for attempt in range(3):
            client.post(EVALUATION, json=body, headers={"Authorization": f"Bearer guess-{attempt}",
                                                        "X-Forwarded-For": "203.0.113.7"})
        right = {"Authorization": f"Bearer {keys['pep']}"}
        guesser = client.post(EVALUATION, json=body, headers=right | {"X-Forwarded-For": "203.0.113.7"})
        honest = client.post(EVALUATION, json=body, headers=right | {"X-Forwarded-For": "198.51.100.2"})
    finally:
        app.extensions["authz"].db.dispose()
    assert guesser.status_code == 429
    assert honest.status_code == 200 and honest.get_json()["decision"] is True


# ---- the same answers --------------------------------------------------------------------


_users = st.sampled_from([ADMIN, MANAGER, COLLAB, STRANGER, "Mixed.Case@Example.org", "not-an-email", ""])
_rights = st.sampled_from(["compte", "declarations", "entreprise", "no_such_right", ""])
_companies = st.sampled_from([DUPONT, MARTIN, "12345678901234", "123"])
_questions = st.builds(
    lambda user, right, company, subject_type, resource_type, extra: {
        "subject": {"type": subject_type, "id": user}, "action": {"name": right},
        "resource": {"type": resource_type, "id": company}} | extra,
    _users, _rights, _companies, st.sampled_from(["user", "group"]), st.sampled_from(["company", "organization"]),
    st.sampled_from([{}, {"context": {"ip": "10.0.0.1"}}, {"context": "x"}, {"subject": 1}, {"action": {}},
                     {"resource": {"type": "company", "id": DUPONT, "properties": {"a": 1}}}]),
)


def _encode(value) -> bytes:
    return json.dumps(value).encode()


_bodies = st.one_of(
    _questions.map(_encode),
    _questions.map(lambda body: json.dumps(body, ensure_ascii=True).replace("e", "\\u0065", 1).encode()),
    _questions.map(lambda body: _encode(body | {"context": {"pad": "x" * 5000}})),  # beyond BODY_AT_MOST
    st.sampled_from([b"", b"{", b"[]", b"null", b'"text"', b"{}", b"\xff\xfe", b'{"subject": {"type": "user"',
                     b"[" * 3000]),
)
_content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "Application/JSON",
                                  "application/problem+json", "text/plain", None])
_keys = st.sampled_from(["pep", "portal", "admin", "wrong", None, "basic", "lower", "spaced"])
_request_ids = st.sampled_from([None, "req-1", "", "x" * 201, "tab\there", "café"])
# Half of them what a portal sends (the fast path's plain case, if the schema accepts the
# question), half anything.
_requests = st.one_of(
    st.tuples(_questions.map(_encode), st.just("application/json"), st.sampled_from(["pep", "portal"]), _request_ids),
    st.tuples(_bodies, _content_types, _keys, _request_ids),
)


def _headers(keys: dict, key: str | None, request_id: str | None) -> dict:
    headers = {}
    if key == "wrong":
        headers["Authorization"] = "Bearer not-a-key"
    elif key == "basic":
        headers["Authorization"] = f"Basic {keys['pep']}"
    elif key == "lower":
        headers["Authorization"] = f"bearer {keys['pep']}"
    elif key == "spaced":
        headers["Authorization"] = f"Bearer  {keys['pep']} "
    elif key is not None:
        headers["Authorization"] = f"Bearer {keys[key]}"
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return headers


class Lines(logging.Handler):
    """The records of the authz loggers, as dicts without their instant and timing."""

    def __init__(self):
        super().__init__()
        self.records: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({"logger": record.name, "message": record.getMessage(),
                             **{name: value for name, value in vars(record).items()
                                if name in ("key", "endpoint", "method", "status", LINES, "request_id")}})

    def take(self) -> list[dict]:
        taken, self.records = self.records, []
        return taken


def _samples(app) -> dict:
    """The counters and histogram counts a request moves, but the answer cache's (the
    second of two same questions is a hit)."""
    registry = app.extensions[observability.EXTENSION].registry
    return {(metric.name, sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for metric in registry.collect() if metric.name != "authz_answer_cache_lookups"
            for sample in metric.samples if sample.name.endswith(("_total", "_count"))}


def _moved(before: dict, after: dict) -> dict:
    return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}


def test_both_paths_give_the_same_status_headers_body_lines_and_metrics(db, clock, keys, api, story):
    """Each generated request is sent twice: once through the app as built (the fast path
    in front) and once to Flask alone. The story holds allows and denies of every kind."""
    app = build(db, clock, AUTHZ_GUESS_LIMIT=0)  # wrong keys, twice each, must not end in a 429
    fast = app.wsgi_app
    assert isinstance(fast, FastEvaluation)
    client = app.test_client()
    lines = Lines()
    logger = logging.getLogger("authz")
    logger.addHandler(lines)
    handed_on: list[bool] = []
    flask_wsgi = fast.flask_wsgi

    def counting_flask(environ, start_response):
        handed_on.append(True)
        return flask_wsgi(environ, start_response)

    @settings(max_examples=150, deadline=None)
    @given(_requests)
    def same(request):
        body, content_type, key, request_id = request
        headers = _headers(keys, key, request_id)

        def send():
            before = _samples(app)
            reply = client.post(EVALUATION, data=body, headers=headers, content_type=content_type)
            return reply, lines.take(), _moved(before, _samples(app))

        fast.flask_wsgi = counting_flask
        handed_on.clear()
        ours, our_lines, our_metrics = send()
        answered_fast = not handed_on
        app.wsgi_app = flask_wsgi
        try:
            flasks, flask_lines, flask_metrics = send()
        finally:
            app.wsgi_app = fast
        outcomes.append((answered_fast, ours.status_code))

        assert ours.status_code == flasks.status_code, (ours.get_data(), flasks.get_data())
        assert ours.get_data() == flasks.get_data()
        given_id = ours.headers["X-Request-ID"] == request_id
        assert given_id == (flasks.headers["X-Request-ID"] == request_id)
        strip = {"X-Request-ID"} if not given_id else set()
        assert ([(n, v) for n, v in ours.headers if n not in strip]
                == [(n, v) for n, v in flasks.headers if n not in strip])
        if not given_id:
            for record in our_lines + flask_lines:
                record.pop("request_id", None)
        assert our_lines == flask_lines
        assert our_metrics == flask_metrics
        if answered_fast:
            assert ours.status_code == 200

    outcomes: list[tuple[bool, int]] = []
    try:
        same()
    finally:
        logger.removeHandler(lines)
        fast.flask_wsgi = flask_wsgi
        app.extensions["authz"].db.dispose()
    fast_answers = [status for answered_fast, status in outcomes if answered_fast]
    assert len(fast_answers) >= 10, "the fast path answered too few of the generated requests to compare"
    assert {status for answered_fast, status in outcomes if not answered_fast} >= {200, 400, 401}


@pytest.mark.parametrize("failing", ["data_version", "decide_many"])
def test_a_database_error_on_the_fast_path_is_answered_by_flask_with_503(app, keys, story, monkeypatch, failing):
    """The data version read with the key, or the decision's own reads: Flask answers the
    request again, and refuses it as it refuses any request the store cannot answer."""
    from authz.decisions import Decisions
    from authz.errors import StoreUnavailable
    from authz.store import Database

    def unavailable(*args, **kwargs):
        raise StoreUnavailable("the database is unavailable")

    monkeypatch.setattr({"data_version": Database, "decide_many": Decisions}[failing], failing, unavailable)
    app.test_client_class = None  # this test expects a 503
    refused = app.test_client().post(EVALUATION, json=question(ADMIN, "compte", DUPONT),
                                     headers={"Authorization": f"Bearer {keys['pep']}"})
    assert_error(refused, 503, code="store_unavailable")
    assert refused.headers["Retry-After"] == "1"


def test_a_fault_of_the_fast_path_is_logged_and_flask_answers(api: Api, story, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise TypeError("a bug of the fast path's own")

    monkeypatch.setattr(fastpath, "request_id", broken)  # the fast path's own name for it; the hook keeps its own
    answered = api.post(EVALUATION, key="pep", json=question(ADMIN, "compte", DUPONT))
    assert answered.status_code == 200 and answered.get_json()["decision"] is True
    assert [r.getMessage() for r in caplog.records if r.name == "authz.fastpath"] == [
        "the evaluation fast path failed; Flask answers the request"]
