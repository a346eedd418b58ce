"""Logs are JSON lines: one per request, one per decision at a configurable level, and
never a secret (API keys, activation tokens, bodies)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz import tokens
from service.app import create_app
from service.config import ConfigError, from_env
from service.logs import REQUEST_ID, JsonLines, _CurrentStderr, configure_logging, log_all
from tests.http.conftest import SECRETS, Api, question
from tests.support import ADMIN, CABINET, DUPONT, MANAGER, ROOT, STRANGER


@pytest.fixture
def make_api(db, clock, monkeypatch):
    """Build the app on the test database with these AUTHZ_* settings; return its client."""
    with db.transaction() as tx:
        for role, secret in SECRETS.items():
            tx.insert_api_key(f"test-{role}", role, tokens.digest(secret), clock())
    url = db.engine.url.render_as_string(hide_password=False)
    built = []

    def make(**settings: str) -> Api:
        for name in ("AUTHZ_LOG_LEVEL", "AUTHZ_DECISION_LOG_LEVEL"):
            monkeypatch.delenv(name, raising=False)
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        app = create_app({"AUTHZ_DATABASE_URL": url, "TESTING": True}, clock=clock)
        built.append(app)
        return Api(app.test_client(), dict(SECRETS))

    yield make
    for app in built:
        app.extensions["authz"].db.dispose()
    logging.getLogger("authz").setLevel(logging.INFO)


def json_lines(err: str) -> list[dict]:
    """Every line the service logged: each must be one JSON object."""
    lines = [line for line in err.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(record, dict) for record in parsed), lines
    return parsed


def of(records: list[dict], logger: str) -> list[dict]:
    return [record for record in records if record.get("logger") == logger]


def test_a_request_gives_one_json_line_with_its_facts(make_api, capsys):
    api = make_api()
    capsys.readouterr()
    response = api.post("/access/v1/evaluation", key="pep", json=question(ADMIN, "compte", DUPONT),
                        headers={"X-Request-ID": "req-log-1"})
    assert response.status_code == 200
    access = of(json_lines(capsys.readouterr().err), "authz.access")
    assert len(access) == 1, access
    line = access[0]
    assert line["request_id"] == "req-log-1"
    assert line["key"] == "test-pep"
    assert line["endpoint"] == "authzen.evaluation"
    assert line["method"] == "POST"
    assert line["status"] == 200
    assert isinstance(line["latency_ms"], int | float) and line["latency_ms"] >= 0
    assert line["level"] == "INFO" and line["time"]


def test_a_request_without_a_key_or_route_is_logged_too(make_api, capsys):
    api = make_api()
    capsys.readouterr()
    api.get("/v1/companies/x", key=None)
    api.get("/nothing/here", key=None)
    first, second = of(json_lines(capsys.readouterr().err), "authz.access")
    assert (first["key"], first["status"], first["endpoint"]) == (None, 401, "manage.get_company")
    assert (second["endpoint"], second["status"]) == ("unmatched", 404)
    assert first["request_id"] and second["request_id"] and first["request_id"] != second["request_id"]


def test_keys_and_activation_tokens_never_reach_the_logs(make_api, capsys):
    api = make_api(AUTHZ_LOG_LEVEL="DEBUG")
    capsys.readouterr()
    assert api.post("/v1/companies", key="portal",
                    json={"siret": DUPONT, "name": "Maçonnerie Dupont", "admin_email": ADMIN}).status_code == 201
    designation = api.post(f"/v1/companies/{DUPONT}/delegations", key="portal", user=ADMIN,
                           json={"manager_email": MANAGER, "scope": ["compte"]})
    assert designation.status_code == 201
    token = designation.get_json()["activation"]["token"]
    activated = api.post("/v1/activations", key="portal", user=MANAGER,
                         json={"token": token, "firm_siret": CABINET, "firm_name": "Cabinet Legrand"})
    assert activated.status_code == 200
    api.post("/v1/activations", key="portal", user=MANAGER,  # replayed: refused, still not logged
             json={"token": token, "firm_siret": CABINET, "firm_name": "Cabinet Legrand"})
    api.post("/access/v1/evaluation", key="pep", json=question(MANAGER, "compte", DUPONT))
    api.post("/access/v1/evaluation", key=None, headers={"Authorization": "Bearer wrong-secret-abc123"},
             json=question(MANAGER, "compte", DUPONT))
    err = capsys.readouterr().err
    records = json_lines(err)
    assert len(of(records, "authz.access")) == 6
    for secret in (*SECRETS.values(), token, "wrong-secret-abc123", "Bearer"):
        assert secret not in err, secret


def test_decisions_are_logged_at_info_by_default(make_api, capsys):
    api = make_api()
    capsys.readouterr()
    api.post("/access/v1/evaluation", key="pep", json=question(STRANGER, "compte", DUPONT),
             headers={"X-Request-ID": "req-decision"})
    (line,) = of(json_lines(capsys.readouterr().err), "authz.decision")
    assert line["level"] == "INFO"
    assert line["request_id"] == "req-decision"
    assert line["key"] == "test-pep"
    assert (line["subject_id"], line["action"], line["resource_id"]) == (STRANGER, "compte", DUPONT)
    assert line["decision"] == "deny"
    assert isinstance(line["reason"], str) and line["reason"]


def test_each_decision_of_a_batch_is_logged_with_the_defaults_applied(make_api, capsys):
    api = make_api()
    capsys.readouterr()
    body = {
        "subject": {"type": "user", "id": STRANGER},
        "resource": {"type": "company", "id": DUPONT},
        "evaluations": [{"action": {"name": "compte"}}, {"action": {"name": "conges"}},
                        {"resource": {"type": "organization", "id": "x"}, "action": {"name": "compte"}}],
    }
    assert api.post("/access/v1/evaluations", key="pep", json=body).status_code == 200
    lines = of(json_lines(capsys.readouterr().err), "authz.decision")
    assert [(line["subject_id"], line["action"], line["resource_id"]) for line in lines] == [
        (STRANGER, "compte", DUPONT), (STRANGER, "conges", DUPONT), (STRANGER, "compte", "x"),
    ]
    assert lines[2]["reason"] == "unsupported_resource_type"


def test_decision_log_level_debug_quiets_them(make_api, capsys):
    api = make_api(AUTHZ_DECISION_LOG_LEVEL="debug")
    capsys.readouterr()
    api.post("/access/v1/evaluation", key="pep", json=question(STRANGER, "compte", DUPONT))
    records = json_lines(capsys.readouterr().err)
    assert of(records, "authz.decision") == []
    assert len(of(records, "authz.access")) == 1

    api = make_api(AUTHZ_DECISION_LOG_LEVEL="DEBUG", AUTHZ_LOG_LEVEL="DEBUG")
    capsys.readouterr()
    api.post("/access/v1/evaluation", key="pep", json=question(STRANGER, "compte", DUPONT))
    (line,) = of(json_lines(capsys.readouterr().err), "authz.decision")
    assert line["level"] == "DEBUG"


def test_log_level_warning_silences_request_lines(make_api, capsys):
    api = make_api(AUTHZ_LOG_LEVEL="WARNING")
    capsys.readouterr()
    api.post("/access/v1/evaluation", key="pep", json=question(STRANGER, "compte", DUPONT))
    assert capsys.readouterr().err == ""


def test_log_levels_default_to_info():
    settings = from_env({"AUTHZ_POLICY_DIR": str(ROOT)})
    assert settings["AUTHZ_LOG_LEVEL"] == logging.INFO
    assert settings["AUTHZ_DECISION_LOG_LEVEL"] == logging.INFO
    quiet = from_env({"AUTHZ_POLICY_DIR": str(ROOT), "AUTHZ_DECISION_LOG_LEVEL": "debug"})
    assert quiet["AUTHZ_DECISION_LOG_LEVEL"] == logging.DEBUG


@pytest.mark.parametrize("name", ["AUTHZ_LOG_LEVEL", "AUTHZ_DECISION_LOG_LEVEL"])
@pytest.mark.parametrize("value", ["LOUD", "10", "info debug", "NOTSET"])
def test_an_unknown_level_is_a_config_error_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        from_env({"AUTHZ_POLICY_DIR": str(ROOT), name: value})


def test_a_line_carries_its_extra_fields_and_any_traceback_as_json():
    formatter = JsonLines()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("authz.test").makeRecord(
            "authz.test", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info(),
            extra={"request_id": "r-1", "at": datetime(2026, 3, 2, tzinfo=UTC), "name_é": "é"},
        )
    line = json.loads(formatter.format(record))
    assert (line["level"], line["logger"], line["message"]) == ("ERROR", "authz.test", "failed here")
    assert line["request_id"] == "r-1" and line["name_é"] == "é"
    assert line["at"] == "2026-03-02 00:00:00+00:00"  # what JSON cannot hold is written as text
    assert "ValueError: boom" in line["exc_info"] and "Traceback" in line["exc_info"]
    assert datetime.fromisoformat(line["time"]).tzinfo is not None
    assert "args" not in line and "msg" not in line and "exc_text" not in line  # a record's own attributes stay out


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_a_line_time_is_the_record_instant_in_utc_to_the_microsecond(created):
    record = logging.makeLogRecord({"msg": "x", "created": created})
    written = datetime.fromisoformat(json.loads(JsonLines().format(record))["time"])
    assert written.utcoffset() == timedelta(0)
    assert abs(written - datetime.fromtimestamp(created, UTC)) <= timedelta(microseconds=1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["subject_id", "action", "decision", "request_id", "x"]),
                                st.text(max_size=5) | st.none() | st.integers(), max_size=4), max_size=6))
def test_a_record_with_lines_is_written_one_line_per_item_with_the_record_fields(items):
    """The decisions of a request are one record, written as one line each; an item's field
    wins over the record's field of the same name."""
    record = logging.getLogger("authz.decision").makeRecord(
        "authz.decision", logging.INFO, __file__, 1, "decision", (), None,
        extra={"request_id": "r-1", "key": "k", "lines": items})

    written = [json.loads(text) for text in JsonLines().format(record).split("\n")]

    if not items:  # nothing to spread: the record alone
        assert len(written) == 1 and written[0]["request_id"] == "r-1" and "lines" not in written[0]
        return
    assert len(written) == len(items)
    for line, item in zip(written, items, strict=True):
        assert "lines" not in line
        assert (line["logger"], line["message"], line["level"], line["key"]) == (
            "authz.decision", "decision", "INFO", "k")
        assert line["request_id"] == item.get("request_id", "r-1")
        assert {name: line[name] for name in item} == item
        assert datetime.fromisoformat(line["time"]) == datetime.fromisoformat(written[0]["time"])


def test_an_item_of_lines_that_is_not_an_object_is_written_under_lines():
    record = logging.makeLogRecord({"msg": "decision", "name": "authz.decision", "lines": [{"a": 1}, "odd"]})
    first, second = (json.loads(text) for text in JsonLines().format(record).split("\n"))
    assert first["a"] == 1 and "lines" not in first
    assert second["lines"] == "odd"


# ---- the lines of a request, written directly when only our handler listens ----------------


@contextmanager
def as_under_gunicorn() -> Iterator[None]:
    """The root logger without handlers, as gunicorn leaves it (pytest gives it its own)."""
    root = logging.getLogger()
    kept = list(root.handlers)
    for handler in kept:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in kept:
            root.addHandler(handler)


def without_time(records: list[dict]) -> list[dict]:
    return [{name: value for name, value in record.items() if name not in ("time", "latency_ms")}
            for record in records]


_users = st.sampled_from([ADMIN, MANAGER, STRANGER, "Mixed.Case@Example.org"])
_rights = st.sampled_from(["compte", "entreprise", "conges", "no_such_right"])
_companies = st.sampled_from([DUPONT, "12345678901234"])
_item = st.fixed_dictionaries({}, optional={
    "subject": st.builds(lambda user: {"type": "user", "id": user}, _users),
    "action": st.builds(lambda right: {"name": right}, _rights),
    "resource": st.builds(lambda siret, kind: {"type": kind, "id": siret}, _companies,
                          st.sampled_from(["company", "organization"])),
})


def test_the_lines_written_directly_are_those_logging_writes(make_api, capsys):
    """Under gunicorn our handler is the only one listening, and a request's lines are
    written in one go, without ``logging``'s records: they must be the lines ``logging``
    writes (times aside), for answers, refusals and batches alike."""
    api = make_api()  # one app for every example: each holds database connections

    @settings(max_examples=40, deadline=None)
    @given(path=st.sampled_from(["/access/v1/evaluation", "/access/v1/evaluations"]),
           defaults=_item, items=st.lists(_item, max_size=4), key=st.sampled_from(["pep", "portal", None]))
    def same_lines(path, defaults, items, key):
        body = defaults | {"evaluations": items} if path.endswith("evaluations") else defaults
        headers = {"X-Request-ID": "req-same"}
        capsys.readouterr()
        through_logging = api.post(path, key=key, json=body, headers=headers)
        expected = json_lines(capsys.readouterr().err)
        with as_under_gunicorn():
            direct = api.post(path, key=key, json=body, headers=headers)
            written = json_lines(capsys.readouterr().err)
        assert direct.status_code == through_logging.status_code
        assert without_time(written) == without_time(expected)
        assert of(written, "authz.access") and all(line["request_id"] == "req-same" for line in written)
        assert len({line["time"] for line in written}) == 1, "one write, one instant"

    same_lines()


class Heard(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_lines_go_through_logging_when_another_handler_listens(make_api, capsys):
    """An operator's own handler beside ours gets every record, and ours still writes each once."""
    api = make_api()
    heard, authz = Heard(), logging.getLogger("authz")
    capsys.readouterr()
    with as_under_gunicorn():
        authz.addHandler(heard)
        try:
            api.post("/access/v1/evaluation", key="pep", json=question(STRANGER, "compte", DUPONT),
                     headers={"X-Request-ID": "req-heard"})
        finally:
            authz.removeHandler(heard)
        written = json_lines(capsys.readouterr().err)
    assert [(record.name, record.request_id) for record in heard.records] == [
        ("authz.decision", "req-heard"), ("authz.access", "req-heard")]
    assert [line["logger"] for line in written] == ["authz.decision", "authz.access"]


def test_a_disabled_logger_writes_nothing_directly(make_api, capsys, monkeypatch):
    api = make_api()
    monkeypatch.setattr(logging.getLogger("authz.decision"), "disabled", True)
    capsys.readouterr()
    with as_under_gunicorn():
        api.post("/access/v1/evaluation", key="pep", json=question(STRANGER, "compte", DUPONT))
        records = json_lines(capsys.readouterr().err)
    assert of(records, "authz.decision") == [] and len(of(records, "authz.access")) == 1


def test_log_all_outside_a_request_writes_what_logging_would(capsys):
    configure_logging(logging.INFO)  # as an app would (the test may run first)
    logger = logging.getLogger("authz.test")
    entries = [(logger, logging.INFO, "first 100%", {"n": 1}), (logger, logging.DEBUG, "quiet", {}),
               (logger, logging.WARNING, "second", {"lines": [{"a": 1}, {"a": 2}]})]
    with as_under_gunicorn():
        log_all(entries)
        direct = json_lines(capsys.readouterr().err)
    for entry_logger, level, message, fields in entries:
        entry_logger.log(level, message, extra=fields)
    assert without_time(direct) == without_time(json_lines(capsys.readouterr().err))
    assert [(line["level"], line["message"]) for line in direct] == [
        ("INFO", "first 100%"), ("WARNING", "second"), ("WARNING", "second")]
    assert "request_id" not in direct[0]


def test_a_line_logged_while_the_fast_path_answers_carries_its_request_id(capsys):
    """service.fastpath answers outside Flask's request context: the id it sets in
    ``REQUEST_ID`` is what a line logged meanwhile carries, and only meanwhile."""
    configure_logging(logging.INFO)
    logger = logging.getLogger("authz.test")
    token = REQUEST_ID.set("fast-1")
    try:
        logger.warning("during")
        with as_under_gunicorn():
            log_all([(logger, logging.INFO, "written directly", {})])
    finally:
        REQUEST_ID.reset(token)
    logger.warning("after")
    lines = json_lines(capsys.readouterr().err)
    assert [(line["message"], line.get("request_id")) for line in lines] == [
        ("during", "fast-1"), ("written directly", "fast-1"), ("after", None)]


class BrokenStderr:
    def write(self, text: str) -> int:
        raise OSError("stderr is gone")

    def flush(self) -> None:
        raise OSError("stderr is gone")


def test_a_line_that_cannot_be_written_never_fails_the_request(make_api, monkeypatch):
    """As ``logging`` does: the handler reports it (``handleError``), the answer stands."""
    api = make_api()
    reported, hook_failures = [], Heard()
    monkeypatch.setattr(_CurrentStderr, "handleError", lambda handler, record: reported.append(record.name))
    monkeypatch.setattr(sys, "stderr", BrokenStderr())
    logging.getLogger("authz.observability").addHandler(hook_failures)
    try:
        with as_under_gunicorn():
            direct = api.post("/access/v1/evaluation", key="pep", json=question(STRANGER, "compte", DUPONT))
        through_logging = api.post("/access/v1/evaluation", key="pep", json=question(STRANGER, "compte", DUPONT))
    finally:
        logging.getLogger("authz.observability").removeHandler(hook_failures)
    assert direct.status_code == through_logging.status_code == 200
    assert direct.get_json()["decision"] is False
    assert reported == ["authz.decision", "authz.decision", "authz.access"]  # one write, then two records
    assert hook_failures.records == []  # the request's hook itself did not fail
