"""The conventions every endpoint follows: API keys and roles, the request id, and the
refusal of bodies that are not one JSON object."""

from __future__ import annotations

import json

import pytest

from tests.http.conftest import assert_error, question
from tests.support import ADMIN, CABINET, COLLAB, DUPONT, MANAGER

GRANT_ID = "0123456789abcdef01234567"
DELEGATION_ID = "fedcba9876543210fedcba98"

# (method, path, a well-formed body or None): every endpoint of the contract that needs a key.
DECISION_ENDPOINTS = [
    ("POST", "/access/v1/evaluation", question(ADMIN, "declarations", DUPONT)),
    ("POST", "/access/v1/evaluations", question(ADMIN, "declarations", DUPONT)),
    ("POST", "/access/v1/search/resource",
     {"subject": {"type": "user", "id": ADMIN}, "action": {"name": "compte"}, "resource": {"type": "company"}}),
    ("POST", "/access/v1/search/subject",
     {"subject": {"type": "user"}, "action": {"name": "compte"}, "resource": {"type": "company", "id": DUPONT}}),
    ("POST", "/access/v1/search/action",
     {"subject": {"type": "user", "id": ADMIN}, "resource": {"type": "company", "id": DUPONT}}),
]
MANAGEMENT_ENDPOINTS = [
    ("POST", "/v1/explain", question(ADMIN, "declarations", DUPONT)),
    ("POST", "/v1/companies", {"siret": DUPONT, "name": "Maçonnerie Dupont", "admin_email": ADMIN}),
    ("GET", f"/v1/companies/{DUPONT}", None),
    ("POST", f"/v1/companies/{DUPONT}/admins", {"email": MANAGER}),
    ("DELETE", f"/v1/companies/{DUPONT}/admins/{ADMIN}", None),
    ("POST", f"/v1/companies/{DUPONT}/delegations", {"manager_email": MANAGER, "scope": ["compte"]}),
    ("GET", f"/v1/companies/{DUPONT}/delegations", None),
    ("POST", "/v1/activations", {"token": "t" * 43, "firm_siret": CABINET, "firm_name": "Cabinet Legrand"}),
    ("GET", f"/v1/delegations/{DELEGATION_ID}", None),
    ("PATCH", f"/v1/delegations/{DELEGATION_ID}", {"scope": ["compte"]}),
    ("DELETE", f"/v1/delegations/{DELEGATION_ID}", None),
    ("GET", f"/v1/firms/{CABINET}/clients", None),
    ("POST", f"/v1/firms/{CABINET}/collaborators", {"email": COLLAB}),
    ("DELETE", f"/v1/firms/{CABINET}/collaborators/{COLLAB}", None),
    ("POST", f"/v1/firms/{CABINET}/grants", {"collaborator": COLLAB, "company": DUPONT, "scope": ["compte"]}),
    ("GET", f"/v1/grants/{GRANT_ID}", None),
    ("PATCH", f"/v1/grants/{GRANT_ID}", {"scope": ["compte"]}),
    ("DELETE", f"/v1/grants/{GRANT_ID}", None),
    ("GET", "/v1/audit", None),
]
POLICY_ENDPOINTS = [("GET", "/v1/policy", None)]
KEYED_ENDPOINTS = DECISION_ENDPOINTS + MANAGEMENT_ENDPOINTS + POLICY_ENDPOINTS
BODY_ENDPOINTS = [endpoint for endpoint in KEYED_ENDPOINTS if endpoint[2] is not None]


def _id(endpoint) -> str:
    return f"{endpoint[0]} {endpoint[1]}"


def _send(api, endpoint, **kw):
    method, path, body = endpoint
    if body is not None and "data" not in kw:
        kw.setdefault("json", body)
    return api.call(method, path, user=ADMIN, **kw)


# ---- API keys -----------------------------------------------------------------------------


def _assert_unauthenticated(response):
    assert_error(response, 401)
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.split(" ")[0] == "Bearer", challenge


@pytest.mark.parametrize("endpoint", KEYED_ENDPOINTS, ids=_id)
def test_missing_api_key_is_401_with_bearer_challenge(api, endpoint):
    _assert_unauthenticated(_send(api, endpoint, key=None))


@pytest.mark.parametrize("endpoint", KEYED_ENDPOINTS, ids=_id)
def test_unknown_api_key_is_401_with_bearer_challenge(api, endpoint):
    _assert_unauthenticated(_send(api, endpoint, key=None, headers={"Authorization": "Bearer not-a-key-we-issued"}))


@pytest.mark.parametrize("header", [
    "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "test-portal-key-7b21d4", "Token test-portal-key-7b21d4",
    "Bearer\ttest", "Bearer ☃", "Bearer " + "x" * 10_000,
])
def test_malformed_authorization_header_is_401_with_bearer_challenge(api, header):
    response = api.post("/access/v1/evaluation", key=None, headers={"Authorization": header},
                        json=question(ADMIN, "compte", DUPONT))
    _assert_unauthenticated(response)


def test_revoked_api_key_is_401(api, db, clock):
    with db.transaction() as tx:
        tx.revoke_api_key("test-pep", clock())
    _assert_unauthenticated(api.post("/access/v1/evaluation", key="pep", json=question(ADMIN, "compte", DUPONT)))


@pytest.mark.parametrize("endpoint", MANAGEMENT_ENDPOINTS + POLICY_ENDPOINTS, ids=_id)
def test_pep_key_is_403_on_every_v1_endpoint(api, endpoint):
    assert_error(_send(api, endpoint, key="pep"), 403)


def test_portal_key_is_403_on_policy_administration(api):
    assert_error(api.get("/v1/policy", key="portal"), 403)


@pytest.mark.parametrize("role", ["pep", "portal", "admin"])
@pytest.mark.parametrize("endpoint", DECISION_ENDPOINTS, ids=_id)
def test_every_key_role_may_ask_for_decisions(api, endpoint, role):
    assert _send(api, endpoint, key=role).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/.well-known/authzen-configuration",
                                  "/openapi.json", "/docs"])
def test_open_endpoints_need_no_key(api, path):
    assert api.get(path, key=None).status_code == 200


# ---- request id ---------------------------------------------------------------------------


def test_request_id_sent_is_echoed(api):
    response = api.post("/access/v1/evaluation", key="pep", json=question(ADMIN, "compte", DUPONT),
                        headers={"X-Request-ID": "portal-req-42"})
    assert response.headers["X-Request-ID"] == "portal-req-42"


def test_request_id_is_echoed_on_errors_too(api):
    response = api.post("/access/v1/evaluation", key=None, json={}, headers={"X-Request-ID": "portal-req-43"})
    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == "portal-req-43"


def test_request_id_is_generated_when_absent(api):
    first = api.get("/healthz", key=None).headers.get("X-Request-ID")
    second = api.get("/healthz", key=None).headers.get("X-Request-ID")
    assert first and second and first != second


# ---- bodies that are not one JSON object ----------------------------------------------------


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=_id)
def test_non_json_body_is_400(api, endpoint):
    assert_error(_send(api, endpoint, key="admin", data=b"subject=alice&action=compte"), 400)


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=_id)
def test_truncated_json_body_is_400(api, endpoint):
    assert_error(_send(api, endpoint, key="admin", data=json.dumps(endpoint[2])[:-3]), 400)


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=_id)
def test_invalid_utf8_body_is_400(api, endpoint):
    assert_error(_send(api, endpoint, key="admin", data=b'{"name": "Ma\xe7onnerie \xff\xfe"}'), 400)


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=_id)
def test_json_array_instead_of_object_is_400(api, endpoint):
    assert_error(_send(api, endpoint, key="admin", json=[endpoint[2]]), 400)


@pytest.mark.parametrize("scalar", ["null", "42", '"text"', "true"])
def test_json_scalar_instead_of_object_is_400(api, scalar):
    assert_error(api.post("/v1/companies", key="portal", data=scalar), 400)


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=_id)
def test_deeply_nested_json_array_is_400(api, endpoint):
    depth = 100_000
    assert_error(_send(api, endpoint, key="admin", data="[" * depth + "]" * depth), 400)


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=_id)
def test_deeply_nested_json_object_is_400(api, endpoint):
    depth = 100_000
    assert_error(_send(api, endpoint, key="admin", data='{"a":' * depth + "1" + "}" * depth), 400)


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=_id)
def test_body_over_one_mebibyte_is_413(api, endpoint):
    padding = "x" * (1024 * 1024)
    body = json.dumps({"padding": padding, **endpoint[2]})
    assert_error(_send(api, endpoint, key="admin", data=body), 413)


def test_body_just_under_the_limit_is_parsed(api):
    body = json.dumps({**question(ADMIN, "compte", DUPONT), "context": {"padding": "x" * (1024 * 1024 - 300)}})
    assert len(body) < 1024 * 1024
    response = api.post("/access/v1/evaluation", key="pep", data=body)
    assert response.status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_body_sent_as_another_media_type_is_refused_with_the_envelope(api, content_type):
    body = json.dumps(question(ADMIN, "compte", DUPONT))
    response = api.post("/access/v1/evaluation", key="pep", data=body, content_type=content_type)
    assert_error(response, response.status_code)
    assert response.status_code in (400, 415)


def test_empty_body_is_400(api):
    assert_error(api.post("/v1/companies", key="portal", data=b""), 400)
