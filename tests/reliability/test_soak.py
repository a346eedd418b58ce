"""The soak, short: `authz serve --workers 2` under mixed reads and writes for
AUTHZ_SOAK_SECONDS (default 30) on SQLite, and on PostgreSQL when
AUTHZ_TEST_POSTGRES_URL names a server (a database of its own, created and dropped).
No error, memory flat over the second half, every answer and the whole store right at
the end (``tests/reliability/soak.py``; the 10-minute run and its figures are in
RELIABILITY.md).

The other tests show that each criterion of the soak can fail: an unexpected status
is an error, a wrong answer is counted, a lane that cannot read an answer stops with an
error, the final check catches wrong allows, and the report fails on each figure out of
bounds.

Run with -s to see the soak's summary.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.harness import Api
from tests.e2e.live import stand_in
from tests.property.reference import Reference
from tests.reliability.soak import DEFAULT_POSTGRES_URL, LOG_PROBLEMS, Memory, Report, Settings, run
from tests.reliability.soak_check import Sweep, sweep
from tests.reliability.soak_traffic import READS, Lane, Tally

SECONDS = float(os.environ.get("AUTHZ_SOAK_SECONDS", "30"))
POSTGRES_URL = os.environ.get("AUTHZ_TEST_POSTGRES_URL")
POSTGRES_REQUIRED = os.environ.get("AUTHZ_TEST_POSTGRES_REQUIRED") == "1"


def _postgres_or_skip() -> str:
    """The server named by AUTHZ_TEST_POSTGRES_URL, reachable; a skip saying why otherwise,
    or a failure where PostgreSQL is promised (AUTHZ_TEST_POSTGRES_REQUIRED=1)."""
    give_up = pytest.fail if POSTGRES_REQUIRED else pytest.skip
    if not POSTGRES_URL:
        give_up(f"the PostgreSQL soak needs AUTHZ_TEST_POSTGRES_URL (e.g. {DEFAULT_POSTGRES_URL})")
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any reason the server cannot be used
        give_up(f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request) -> Settings:
    url = _postgres_or_skip() if request.param == "postgres" else DEFAULT_POSTGRES_URL
    return Settings(seconds=SECONDS, db=request.param, postgres_url=url, workers=2, lanes=2, sample_seconds=2.0)


def test_a_short_soak_answers_without_error_with_flat_memory_and_every_decision_right(settings, tmp_path):
    report = run(settings, tmp_path)
    print("\n" + report.text())
    assert report.failures == [], report.text()
    # Not an empty run: reads and writes were made, answers compared, and every decision asked at the end.
    assert sum(report.tally.answers.values()) > 0 and report.final.decisions > 1000


# ---- each criterion can fail ----------------------------------------------------------------------


def lane_on(url: str) -> Lane:
    api = Api(url, "a-key")
    return Lane(0, api, api, Tally(), random.Random(1), timedelta(seconds=5), write_share=0.15)


def test_a_write_answered_500_is_an_error_and_stops_its_lane():
    with stand_in(500, {"error": {"code": "internal_error", "message": "boom", "details": {}}}) as (url, _):
        lane = lane_on(url)
        lane.register(lane.companies[0], lane.founders[0])
    assert lane.tally.total_errors == 1 and lane.tally.errors["register_company"] == 1
    assert lane.stopped  # its state is unknown: the lane drives no more traffic


def test_a_write_refused_where_the_reference_accepts_is_an_error():
    with stand_in(409, {"error": {"code": "company_exists", "message": "exists", "details": {}}}) as (url, _):
        lane = lane_on(url)
        lane.register(lane.companies[0], lane.founders[0])
    assert lane.tally.total_errors == 1 and not lane.tally.refusals


def test_an_allow_the_reference_denies_is_a_wrong_answer():
    with stand_in(200, {"decision": True}) as (url, _):
        lane = lane_on(url)  # an empty world: the reference denies everything
        lane.read_evaluation()
    assert lane.tally.total_wrong == 1 and lane.tally.total_errors == 0


def test_a_lane_that_cannot_read_an_answer_stops_with_an_error():
    with stand_in(201, "not json", content_type="text/plain") as (url, _):
        lane = lane_on(url)
        lane.ref.apply_register_company(lane.companies[0], lane.founders[0])
        lane.write_share = 1.0  # writes only: a designation answered 201 without a body
        lane.rng = random.Random(3)
        lane.some_write = lambda: lane.designate(lane.companies[0], 0, ["compte"], None, activate=False)
        lane.run(deadline=float("inf"))
    assert lane.stopped.startswith("crashed") and lane.tally.errors["lane"] == 1


def test_the_final_check_catches_wrong_allows():
    company = lane_on("http://unused").companies[0]
    admin = "admin@company.soak.example"
    ref = Reference(admins={company: {admin}})
    # 2 users (the admin, nobody) x 2 companies (the company, an unknown one) x 9 rights: all answered true.
    with stand_in(200, {"evaluations": [{"decision": True}] * 36}) as (url, _):
        result = sweep(Api(url, "a-key"), ref, [company], [admin])
    assert result.decisions == 36 and result.allowed == 8  # the admin holds the 8 rights of the policy
    assert result.disagreements >= 28 and result.errors == 0


def passing_report() -> Report:
    tally = Tally()
    tally.calls.update({"evaluation": 10, "grant": 2})
    tally.answers["evaluation"] = 10
    report = Report(Settings(seconds=60), datetime(2026, 1, 1), "test", Tally(), tally, load_seconds=60)
    report.final = Sweep(decisions=100, searches=10)
    report.memory = [Memory("worker 1", 1, 1000, 1000, 1050, 1050, 1050, 30, 10, 10)]
    report.server_statuses = Counter({"200": 10, "201": 2})
    report.ended = datetime(2026, 1, 1, 0, 2)
    return report


@pytest.mark.parametrize("spoil, expected", [
    (lambda r: r.tally.error("grant", "503"), "errors during the load"),
    (lambda r: r.tally.compared("evaluation", 1, "service True, reference False"), "differed from the reference"),
    (lambda r: r.setup.error("register_company", "500"), "loading the scenario"),
    (lambda r: r.store_differences.append("grants[x]: ..."), "differences between the store"),
    (lambda r: setattr(r.final, "disagreements", 1), "final check"),
    (lambda r: setattr(r.final, "ambiguous", 1), "final check"),
    (lambda r: setattr(r.final, "decisions", 0), "final check"),
    (lambda r: r.memory.append(Memory("worker 2", 2, 1000, 1000, 1100, 1100, 1100, 30, 10, 10)), "memory grew"),
    (lambda r: r.replaced.append("a worker died"), "workers replaced"),
    (lambda r: r.server_statuses.update({"500": 1}), "server-side 5xx"),
    (lambda r: setattr(r, "log_problems", 1), "server log"),
    (lambda r: r.lanes_stopped.append("lane 0"), "lanes stopped"),
    (lambda r: r.tally.calls.pop("grant"), "no reads or no writes"),
])
def test_the_report_fails_on_each_criterion(spoil, expected):
    report = passing_report()
    assert report.failures == [], report.failures
    assert "grant" not in READS
    spoil(report)
    assert len(report.failures) == 1 and expected in report.failures[0], report.failures
    assert "FAIL" in report.text()


@pytest.mark.parametrize(("line", "problem"), [
    ('{"time":"t","level":"ERROR","logger":"authz.service"}', True),
    ('{"time": "t", "level": "CRITICAL", "logger": "authz.service"}', True),
    ('[2026-11-29 05:00:00 +0000] [41] [ERROR] Exception in worker process', True),
    ('{"time":"t","level":"INFO","logger":"authz.access","message":"POST authzen.evaluation 500"}', False),
    ('{"time":"t","level":"WARNING","logger":"authz.policy"}', False),
])
def test_the_soak_spots_errors_in_the_server_log(line, problem):
    assert bool(LOG_PROBLEMS.search(line)) is problem
