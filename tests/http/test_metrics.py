"""GET /metrics: Prometheus text for admin keys, fed by decisions, searches, latencies,
database failures, and the policy version in service."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from authz.decisions import Decisions
from authz.errors import StoreUnavailable
from tests.http.conftest import COLLAB_SCOPE, SECRETS, Renamed, assert_error, question
from tests.support import ADMIN, COLLAB, DUPONT, STRANGER

METRIC_NAMES = [
    "authz_decisions_total",
    "authz_request_duration_seconds",
    "authz_search_results",
    "authz_database_errors_total",
    "authz_answer_cache_lookups_total",
    "authz_policy_info",
]
ALLOWED = question(COLLAB, COLLAB_SCOPE[0], DUPONT)
DENIED = question(COLLAB, "intemperies", DUPONT)


def scrape(api) -> dict[tuple[str, frozenset], float]:
    """The samples of one admin scrape, keyed by (name, labels)."""
    response = api.get("/metrics", key="admin")
    assert response.status_code == 200, response.get_data(as_text=True)
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def decisions(samples: dict, endpoint: str, result: str) -> float:
    return value(samples, "authz_decisions_total", endpoint=endpoint, result=result)


# ---- access ---------------------------------------------------------------------------------


def test_admin_key_gets_prometheus_text_with_every_metric(api):
    response = api.get("/metrics", key="admin")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    for name in METRIC_NAMES:
        assert name in text, name
    assert SECRETS["admin"] not in text


@pytest.mark.parametrize("role", ["pep", "portal"])
def test_other_keys_are_403(api, role):
    assert_error(api.get("/metrics", key=role), 403)


def test_no_key_is_401(api):
    response = api.get("/metrics", key=None)
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# ---- decisions ------------------------------------------------------------------------------


def test_an_allowed_and_a_denied_evaluation_are_counted(api, story):
    before = scrape(api)
    assert decisions(before, "authzen.evaluation", "allow") == 0
    assert decisions(before, "authzen.evaluation", "deny") == 0
    assert api.post("/access/v1/evaluation", key="pep", json=ALLOWED).get_json()["decision"] is True
    assert api.post("/access/v1/evaluation", key="pep", json=DENIED).get_json()["decision"] is False
    after = scrape(api)
    assert decisions(after, "authzen.evaluation", "allow") == 1
    assert decisions(after, "authzen.evaluation", "deny") == 1


def test_each_item_of_a_batch_is_counted(api, story):
    body = {"evaluations": [ALLOWED, DENIED, ALLOWED, question(STRANGER, "compte", DUPONT)]}
    assert api.post("/access/v1/evaluations", key="pep", json=body).status_code == 200
    samples = scrape(api)
    assert decisions(samples, "authzen.evaluations", "allow") == 2
    assert decisions(samples, "authzen.evaluations", "deny") == 2


def test_a_batch_that_stops_early_counts_the_items_decided(api, story):
    body = {"evaluations": [ALLOWED, DENIED, ALLOWED], "options": {"evaluations_semantic": "deny_on_first_deny"}}
    answer = api.post("/access/v1/evaluations", key="pep", json=body).get_json()
    assert [item["decision"] for item in answer["evaluations"]] == [True, False]
    samples = scrape(api)
    assert decisions(samples, "authzen.evaluations", "allow") == 1
    assert decisions(samples, "authzen.evaluations", "deny") == 1


def test_refused_evaluations_are_not_decisions(api, story):
    assert api.post("/access/v1/evaluation", key=None, json=ALLOWED).status_code == 401
    assert api.post("/access/v1/evaluation", key="pep", json={"subject": {}}).status_code == 400
    samples = scrape(api)
    assert sum(v for (name, _), v in samples.items() if name == "authz_decisions_total") == 0


# ---- the answer cache -----------------------------------------------------------------------


def lookups(samples: dict, result: str) -> float:
    return value(samples, "authz_answer_cache_lookups_total", result=result)


def test_answer_cache_hits_and_misses_are_counted_and_a_write_forgets_the_answers_it_touched(api, story):
    before = scrape(api)
    assert api.post("/access/v1/evaluation", key="pep", json=ALLOWED).get_json()["decision"] is True
    assert api.post("/access/v1/evaluation", key="pep", json=ALLOWED).get_json()["decision"] is True
    asked_twice = scrape(api)
    assert lookups(asked_twice, "miss") - lookups(before, "miss") == 1
    assert lookups(asked_twice, "hit") - lookups(before, "hit") == 1

    assert api.delete(f"/v1/delegations/{story.delegation['id']}", user=ADMIN).status_code == 200
    assert api.post("/access/v1/evaluation", key="pep", json=ALLOWED).get_json()["decision"] is False
    after_write = scrape(api)
    assert lookups(after_write, "miss") - lookups(asked_twice, "miss") == 1
    assert lookups(after_write, "hit") == lookups(asked_twice, "hit")


# ---- latency --------------------------------------------------------------------------------


def test_latency_is_labelled_by_endpoint_name_and_status(api, story):
    api.post("/access/v1/evaluation", key="pep", json=ALLOWED)
    api.get(f"/v1/companies/{DUPONT}", key="portal", user=ADMIN)
    api.get("/no/such/path/12345", key=None)
    samples = scrape(api)
    count = "authz_request_duration_seconds_count"
    assert value(samples, count, endpoint="authzen.evaluation", status="200") == 1
    assert value(samples, count, endpoint="unmatched", status="404") == 1
    assert value(samples, "authz_request_duration_seconds_sum", endpoint="authzen.evaluation", status="200") > 0
    endpoints = {dict(labels).get("endpoint") for name, labels in samples if name.startswith("authz_request_")}
    assert not any("/" in endpoint for endpoint in endpoints if endpoint), endpoints
    assert any(endpoint.startswith("manage.") for endpoint in endpoints if endpoint), endpoints


# ---- searches -------------------------------------------------------------------------------


def test_search_result_sizes_are_recorded_by_kind(api, story):
    found = api.post("/access/v1/search/resource", key="pep", json={
        "subject": {"type": "user", "id": COLLAB}, "action": {"name": COLLAB_SCOPE[0]},
        "resource": {"type": "company"},
    }).get_json()
    assert found["page"]["total"] == 1
    none = api.post("/access/v1/search/resource", key="pep", json={
        "subject": {"type": "user", "id": STRANGER}, "action": {"name": "compte"}, "resource": {"type": "company"},
    }).get_json()
    assert none["page"]["total"] == 0
    holders = api.post("/access/v1/search/subject", key="pep", json={
        "subject": {"type": "user"}, "action": {"name": COLLAB_SCOPE[0]}, "resource": {"type": "company", "id": DUPONT},
    }).get_json()
    samples = scrape(api)
    assert value(samples, "authz_search_results_count", kind="resource") == 2
    assert value(samples, "authz_search_results_sum", kind="resource") == 1
    assert value(samples, "authz_search_results_bucket", kind="resource", le="0.0") == 1
    assert value(samples, "authz_search_results_count", kind="subject") == 1
    assert value(samples, "authz_search_results_sum", kind="subject") == holders["page"]["total"] >= 1
    assert value(samples, "authz_search_results_count", kind="action") == 0


# ---- database errors ------------------------------------------------------------------------


def test_database_unavailable_answers_are_counted(app, api, story, monkeypatch):
    def unavailable(*args, **kwargs):
        raise StoreUnavailable("the database is unavailable")

    monkeypatch.setattr(Decisions, "decide_many", unavailable)
    plain = app.test_client_class
    app.test_client_class = None  # this test expects a 503
    try:
        response = app.test_client().post("/access/v1/evaluation", json=ALLOWED,
                                          headers={"Authorization": f"Bearer {SECRETS['pep']}"})
    finally:
        app.test_client_class = plain
    assert response.status_code == 503
    samples = scrape(api)
    assert value(samples, "authz_database_errors_total") == 1
    assert value(samples, "authz_request_duration_seconds_count", endpoint="authzen.evaluation", status="503") == 1
    assert decisions(samples, "authzen.evaluation", "allow") + decisions(samples, "authzen.evaluation", "deny") == 0


# ---- policy version -------------------------------------------------------------------------


def test_policy_info_shows_the_version_in_service_and_follows_reloads(app, api):
    policy = app.extensions["authz"].policy
    loaded = policy().version
    assert value(scrape(api), "authz_policy_info", version=loaded) == 1
    previous = policy.swap(Renamed(policy(), "reloaded-v2"))
    try:
        samples = scrape(api)
    finally:
        policy.swap(previous)
    assert value(samples, "authz_policy_info", version="reloaded-v2") == 1
    assert ("authz_policy_info", frozenset({("version", loaded)})) not in samples
