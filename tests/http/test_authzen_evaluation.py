"""AuthZEN decisions: POST /access/v1/evaluation, POST /access/v1/evaluations and
GET /.well-known/authzen-configuration."""

from __future__ import annotations

import pytest

from authz.decisions import Decisions
from tests.http.conftest import COLLAB_SCOPE, FIRM_SCOPE, RIGHTS, Renamed, assert_error, question
from tests.support import ADMIN, COLLAB, DUPONT, MANAGER, MARTIN, OTHER_ADMIN, STRANGER, siret

EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"


def _decision(api, body, key="pep") -> dict:
    response = api.post(EVALUATION, key=key, json=body)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert isinstance(body["decision"], bool)
    assert isinstance(body.get("context", {}), dict)
    return body


# ---- one evaluation ------------------------------------------------------------------------


# Who holds what on DUPONT in the story: the grid the portal relies on.
GRID = [
    (ADMIN, right, True) for right in RIGHTS
] + [
    (MANAGER, right, right in FIRM_SCOPE) for right in RIGHTS
] + [
    (COLLAB, right, right in COLLAB_SCOPE) for right in RIGHTS
] + [
    (OTHER_ADMIN, right, False) for right in RIGHTS
] + [
    (STRANGER, "compte", False),
]


@pytest.mark.parametrize("user, right, expected", GRID)
def test_evaluation_answers_the_story_grid(api, story, user, right, expected):
    assert _decision(api, question(user, right, DUPONT))["decision"] is expected


def test_allow_is_200_decision_true_with_a_reason(api, story):
    body = _decision(api, question(COLLAB, "declarations", DUPONT))
    assert body["decision"] is True
    assert isinstance(body["context"]["reason"], str)


def test_deny_is_200_decision_false_not_an_error(api, story):
    response = api.post(EVALUATION, key="pep", json=question(COLLAB, "cotisations", DUPONT))
    assert response.status_code == 200
    assert response.get_json()["decision"] is False


@pytest.mark.parametrize("user, right, company", [
    ("nobody@nowhere.example", "compte", DUPONT),
    (ADMIN, "compte", siret(424242)),
    (ADMIN, "teleportation", DUPONT),
    (ADMIN, "COMPTE", DUPONT),
    (ADMIN, "compte", "not-a-siret"),
    ("not an e-mail", "compte", DUPONT),
])
def test_unknown_user_company_or_right_is_a_deny(api, story, user, right, company):
    assert _decision(api, question(user, right, company))["decision"] is False


def test_subject_id_is_compared_case_insensitively(api, story):
    assert _decision(api, question("Chloe@Legrand.EXAMPLE", "declarations", DUPONT))["decision"] is True


@pytest.mark.parametrize("subject_type, resource_type", [("group", "company"), ("user", "firm")])
def test_foreign_subject_or_resource_type_is_a_deny(api, story, subject_type, resource_type):
    body = question(ADMIN, "compte", DUPONT)
    body["subject"]["type"] = subject_type
    body["resource"]["type"] = resource_type
    assert _decision(api, body)["decision"] is False


@pytest.mark.parametrize("part, field", [
    ("subject", "type"), ("subject", "id"), ("resource", "type"), ("resource", "id"), ("action", "name"),
])
def test_evaluation_missing_an_entity_field_is_400_naming_it(api, story, part, field):
    body = question(ADMIN, "compte", DUPONT)
    del body[part][field]
    error = assert_error(api.post(EVALUATION, key="pep", json=body), 400, part)
    assert field in error["details"][part]


@pytest.mark.parametrize("part", ["subject", "action", "resource"])
def test_evaluation_missing_an_entity_is_400_naming_it(api, story, part):
    body = question(ADMIN, "compte", DUPONT)
    del body[part]
    assert_error(api.post(EVALUATION, key="pep", json=body), 400, part)


@pytest.mark.parametrize("part, value", [
    ("subject", "alice@dupont.example"), ("action", ["compte"]), ("resource", None),
    ("subject", {"type": 1, "id": ADMIN}),
])
def test_evaluation_with_a_wrong_type_is_400_naming_the_part(api, story, part, value):
    body = question(ADMIN, "compte", DUPONT)
    body[part] = value
    assert_error(api.post(EVALUATION, key="pep", json=body), 400, part)


def test_evaluation_ignores_unknown_fields(api, story):
    body = question(COLLAB, "declarations", DUPONT)
    body["subject"]["properties"] = {"department": "paie"}
    body["subject"]["nickname"] = "chloé"
    body["action"]["verb"] = "post"
    body["resource"]["region"] = "IDF"
    body["context"] = {"time": "2026-03-02T09:00:00Z", "ip": "192.0.2.1"}
    body["extension"] = {"anything": [1, 2, 3]}
    assert _decision(api, body)["decision"] is True


def test_evaluation_answers_with_the_policy_version_header(api, story):
    response = api.post(EVALUATION, key="pep", json=question(ADMIN, "compte", DUPONT))
    assert response.headers.get("X-Authz-Policy-Version")


@pytest.mark.parametrize("path, body", [
    (EVALUATION, question(ADMIN, "compte", DUPONT)),
    (EVALUATIONS, {"evaluations": [question(ADMIN, "compte", DUPONT), question(STRANGER, "compte", DUPONT)]}),
    ("/access/v1/search/resource", {"subject": {"type": "user", "id": ADMIN}, "action": {"name": "compte"},
                                    "resource": {"type": "company"}}),
])
def test_the_version_header_names_the_policy_that_answered_when_a_reload_comes_in_between(
        app, api, story, monkeypatch, path, body):
    policy = app.extensions["authz"].policy
    answered_by = policy().version
    previous = policy()

    def then_reloaded(original):
        def answer(self, *args, **kwargs):
            found = original(self, *args, **kwargs)
            policy.swap(Renamed(previous, "reloaded-meanwhile"))
            return found
        return answer

    for name in ("decide_many", "resources"):
        monkeypatch.setattr(Decisions, name, then_reloaded(getattr(Decisions, name)))
    try:
        response = api.post(path, key="pep", json=body)
    finally:
        policy.swap(previous)

    assert response.status_code == 200, response.get_json()
    assert response.headers["X-Authz-Policy-Version"] == answered_by


def test_company_keeps_its_own_rights_after_delegating(api, story):
    for right in FIRM_SCOPE:
        assert _decision(api, question(ADMIN, right, DUPONT))["decision"] is True


def test_the_firm_reaches_only_its_delegating_clients(api, story):
    assert _decision(api, question(MANAGER, "compte", MARTIN))["decision"] is False
    assert _decision(api, question(COLLAB, "compte", MARTIN))["decision"] is False


def test_evaluation_with_portal_and_admin_keys_answers_the_same(api, story):
    for key in ("pep", "portal", "admin"):
        assert _decision(api, question(COLLAB, "declarations", DUPONT), key=key)["decision"] is True


# ---- many evaluations --------------------------------------------------------------------------


def _evaluations(api, body) -> list[dict]:
    response = api.post(EVALUATIONS, key="pep", json=body)
    assert response.status_code == 200, response.get_json()
    answers = response.get_json()["evaluations"]
    for answer in answers:
        assert isinstance(answer["decision"], bool)
    return answers


def test_evaluations_replace_defaults_per_item_and_answer_in_request_order(api, story):
    body = {
        "subject": {"type": "user", "id": COLLAB},
        "resource": {"type": "company", "id": DUPONT},
        "action": {"name": "declarations"},
        "evaluations": [
            {},                                                       # all defaults: allowed
            {"action": {"name": "cotisations"}},                      # not in the grant: denied
            {"subject": {"type": "user", "id": MANAGER}, "action": {"name": "cotisations"}},  # firm: allowed
            {"resource": {"type": "company", "id": MARTIN}},          # not a client: denied
            {"subject": {"type": "user", "id": OTHER_ADMIN}, "resource": {"type": "company", "id": MARTIN},
             "action": {"name": "entreprise"}},                       # its own admin: allowed
            {"action": {"name": "compte"}},                           # in the grant: allowed
        ],
    }
    assert [a["decision"] for a in _evaluations(api, body)] == [True, False, True, False, True, True]


def test_a_batch_answers_every_item_as_a_single_evaluation_would(app, api, story):
    # Items loaded together (with repeats) give the same decisions and reasons as one
    # call each, the denials' reasons included; each way starts from an empty cache.
    cache = app.extensions["authz"].decisions.cache
    unknown_company = siret(99)
    asked = [question(user, right, company) for user, right, _ in GRID for company in (DUPONT, MARTIN)]
    asked += [question(MANAGER, "compte", unknown_company), question(COLLAB, "no-such-right", DUPONT),
              {**question(ADMIN, "compte", DUPONT), "subject": {"type": "group", "id": ADMIN}}]
    asked += asked[::7]
    cache.sync(("a fresh cache", None))
    together = _evaluations(api, {"evaluations": asked})
    cache.sync(("another fresh cache", None))
    assert [_decision(api, body) for body in asked] == together


def test_evaluations_execute_all_is_the_default_and_answers_every_item(api, story):
    items = [{"action": {"name": right}} for right in RIGHTS]
    body = {"subject": {"type": "user", "id": COLLAB}, "resource": {"type": "company", "id": DUPONT},
            "evaluations": items}
    expected = [right in COLLAB_SCOPE for right in RIGHTS]
    assert [a["decision"] for a in _evaluations(api, body)] == expected
    body["options"] = {"evaluations_semantic": "execute_all"}
    assert [a["decision"] for a in _evaluations(api, body)] == expected


def test_evaluations_deny_on_first_deny_stops_after_the_first_deny(api, story):
    body = {
        "subject": {"type": "user", "id": COLLAB}, "resource": {"type": "company", "id": DUPONT},
        "options": {"evaluations_semantic": "deny_on_first_deny"},
        "evaluations": [{"action": {"name": "declarations"}}, {"action": {"name": "compte"}},
                        {"action": {"name": "salaries"}}, {"action": {"name": "declarations"}},
                        {"action": {"name": "conges"}}],
    }
    assert [a["decision"] for a in _evaluations(api, body)] == [True, True, False]


def test_evaluations_permit_on_first_permit_stops_after_the_first_permit(api, story):
    body = {
        "subject": {"type": "user", "id": COLLAB}, "resource": {"type": "company", "id": DUPONT},
        "options": {"evaluations_semantic": "permit_on_first_permit"},
        "evaluations": [{"action": {"name": "salaries"}}, {"action": {"name": "entreprise"}},
                        {"action": {"name": "compte"}}, {"action": {"name": "salaries"}},
                        {"action": {"name": "declarations"}}],
    }
    assert [a["decision"] for a in _evaluations(api, body)] == [False, False, True]


def test_evaluations_short_circuit_semantics_answer_all_when_nothing_stops(api, story):
    body = {
        "subject": {"type": "user", "id": ADMIN}, "resource": {"type": "company", "id": DUPONT},
        "options": {"evaluations_semantic": "deny_on_first_deny"},
        "evaluations": [{"action": {"name": right}} for right in RIGHTS],
    }
    assert [a["decision"] for a in _evaluations(api, body)] == [True] * len(RIGHTS)
    body["subject"]["id"] = STRANGER
    body["options"]["evaluations_semantic"] = "permit_on_first_permit"
    assert [a["decision"] for a in _evaluations(api, body)] == [False] * len(RIGHTS)


def test_evaluations_with_an_unknown_semantic_is_400(api, story):
    body = {**question(ADMIN, "compte", DUPONT), "evaluations": [{}], "options": {"evaluations_semantic": "majority"}}
    assert_error(api.post(EVALUATIONS, key="pep", json=body), 400, "options")


@pytest.mark.parametrize("part, field", [
    ("subject", "type"), ("subject", "id"), ("resource", "type"), ("resource", "id"), ("action", "name"),
])
def test_evaluations_item_missing_a_field_after_defaults_is_400(api, story, part, field):
    item = question(ADMIN, "compte", DUPONT)
    del item[part][field]
    body = {"evaluations": [question(ADMIN, "compte", DUPONT), item]}
    error = assert_error(api.post(EVALUATIONS, key="pep", json=body), 400, "evaluations")
    assert "1" in str(error["details"]["evaluations"])


def test_evaluations_item_without_an_entity_nor_a_default_is_400(api, story):
    body = {"subject": {"type": "user", "id": ADMIN}, "resource": {"type": "company", "id": DUPONT},
            "evaluations": [{"action": {"name": "compte"}}, {}]}
    assert_error(api.post(EVALUATIONS, key="pep", json=body), 400, "evaluations")


def test_evaluations_without_items_is_a_single_evaluation(api, story):
    response = api.post(EVALUATIONS, key="pep", json=question(COLLAB, "declarations", DUPONT))
    assert response.status_code == 200
    body = response.get_json()
    assert body["decision"] is True
    assert "evaluations" not in body
    denied = api.post(EVALUATIONS, key="pep", json={**question(COLLAB, "cotisations", DUPONT), "evaluations": []})
    assert denied.status_code == 200
    assert denied.get_json()["decision"] is False


def test_evaluations_without_items_and_incomplete_defaults_is_400(api, story):
    body = question(ADMIN, "compte", DUPONT)
    del body["action"]
    assert_error(api.post(EVALUATIONS, key="pep", json=body), 400, "action")


def test_evaluations_ignore_unknown_fields(api, story):
    body = {**question(COLLAB, "declarations", DUPONT), "trace": "abc",
            "options": {"evaluations_semantic": "execute_all", "fast": True},
            "evaluations": [{"action": {"name": "compte", "extra": 1}, "note": "x"}]}
    assert [a["decision"] for a in _evaluations(api, body)] == [True]


@pytest.mark.parametrize("value", [{"0": {}}, "all", [1, 2], [[]]])
def test_evaluations_with_a_wrong_type_is_400(api, story, value):
    body = {**question(ADMIN, "compte", DUPONT), "evaluations": value}
    assert_error(api.post(EVALUATIONS, key="pep", json=body), 400, "evaluations")


# ---- discovery ----------------------------------------------------------------------------------


def test_authzen_configuration_needs_no_key_and_lists_the_five_endpoints(api):
    response = api.get("/.well-known/authzen-configuration", key=None)
    assert response.status_code == 200
    body = response.get_json()
    expected = {
        "access_evaluation_endpoint": "/access/v1/evaluation",
        "access_evaluations_endpoint": "/access/v1/evaluations",
        "search_subject_endpoint": "/access/v1/search/subject",
        "search_resource_endpoint": "/access/v1/search/resource",
        "search_action_endpoint": "/access/v1/search/action",
    }
    base = body["policy_decision_point"]
    assert base.startswith("http")
    for name, path in expected.items():
        assert body[name] == base.rstrip("/") + path, (name, body)


def test_authzen_configuration_endpoints_answer(api, story):
    body = api.get("/.well-known/authzen-configuration", key=None).get_json()
    base = body["policy_decision_point"].rstrip("/")
    response = api.post(body["access_evaluation_endpoint"][len(base):], key="pep",
                        json=question(ADMIN, "compte", DUPONT))
    assert response.get_json()["decision"] is True
