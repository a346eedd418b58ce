"""The firm's side: GET /v1/firms/{siret}/clients, POST/DELETE collaborators,
POST /v1/firms/{siret}/grants, GET/PATCH/DELETE /v1/grants/{id}."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.http.conftest import COLLAB_SCOPE, FIRM_SCOPE, assert_error, assert_link_body, assert_time
from tests.support import (
    ADMIN,
    CABINET,
    COLLAB,
    COLLAB2,
    DUPONT,
    MANAGER,
    MARTIN,
    OTHER_ADMIN,
    RIVAL,
    RIVAL_MANAGER,
    STRANGER,
)

BAD_LUHN = CABINET[:-1] + str((int(CABINET[-1]) + 1) % 10)


def _grant_body(**changes) -> dict:
    return {"collaborator": COLLAB2, "company": DUPONT, "scope": ["declarations"], **changes}


@pytest.fixture
def with_collab2(api, story):
    api.add_collaborator(CABINET, MANAGER, COLLAB2)
    return story


# ---- clients -----------------------------------------------------------------------------------


def test_firm_manager_lists_clients_with_the_scope_held_on_each(api, story):
    api.delegate(MARTIN, OTHER_ADMIN, MANAGER, CABINET, ["attestations", "compte"])
    response = api.get(f"/v1/firms/{CABINET}/clients", user=MANAGER)
    assert response.status_code == 200
    clients = {c["siret"]: c for c in response.get_json()["clients"]}
    assert set(clients) == {DUPONT, MARTIN}
    assert clients[DUPONT]["scope"] == sorted(FIRM_SCOPE)
    assert clients[MARTIN]["scope"] == ["attestations", "compte"]
    assert clients[DUPONT]["name"] == "Maçonnerie Dupont"
    assert clients[DUPONT]["delegation_id"] == story.delegation["id"]


def test_clients_list_follows_narrowing_and_revocation(api, story):
    api.patch(f"/v1/delegations/{story.delegation['id']}", user=ADMIN, json={"scope": ["compte"]})
    clients = api.get(f"/v1/firms/{CABINET}/clients", user=MANAGER).get_json()["clients"]
    assert [(c["siret"], c["scope"]) for c in clients] == [(DUPONT, ["compte"])]
    api.delete(f"/v1/delegations/{story.delegation['id']}", user=ADMIN)
    assert api.get(f"/v1/firms/{CABINET}/clients", user=MANAGER).get_json()["clients"] == []


@pytest.mark.parametrize("person", [COLLAB, ADMIN, STRANGER, RIVAL_MANAGER])
def test_clients_of_a_firm_one_does_not_manage_is_403(api, story, person):
    assert_error(api.get(f"/v1/firms/{CABINET}/clients", user=person), 403)


def test_clients_of_a_malformed_firm_siret_is_404(api, story):
    assert_error(api.get(f"/v1/firms/{BAD_LUHN}/clients", user=MANAGER), 404)


# ---- collaborators -------------------------------------------------------------------------------


def test_firm_manager_adds_a_collaborator_201(api, story):
    response = api.post(f"/v1/firms/{CABINET}/collaborators", user=MANAGER, json={"email": "Damien@Legrand.example"})
    assert response.status_code == 201
    body = response.get_json()
    assert (body["firm"], body["email"]) == (CABINET, COLLAB2)
    assert_time(body["created_at"])


def test_adding_an_existing_collaborator_is_409(api, story):
    assert_error(api.post(f"/v1/firms/{CABINET}/collaborators", user=MANAGER, json={"email": COLLAB}), 409)


@pytest.mark.parametrize("body, field", [
    ({}, "email"), ({"email": None}, "email"), ({"email": "damien"}, "email"), ({"email": ["a@b.example"]}, "email"),
    ({"email": COLLAB2, "scope": ["compte"]}, "scope"),
])
def test_adding_a_collaborator_with_an_invalid_body_is_400_naming_the_field(api, story, body, field):
    assert_error(api.post(f"/v1/firms/{CABINET}/collaborators", user=MANAGER, json=body), 400, field)


@pytest.mark.parametrize("person", [COLLAB, ADMIN, STRANGER, RIVAL_MANAGER])
def test_adding_a_collaborator_to_a_firm_one_does_not_manage_is_403(api, story, person):
    assert_error(api.post(f"/v1/firms/{CABINET}/collaborators", user=person, json={"email": COLLAB2}), 403)


def test_adding_a_collaborator_to_a_malformed_firm_siret_is_404(api, story):
    assert_error(api.post(f"/v1/firms/{BAD_LUHN}/collaborators", user=MANAGER, json={"email": COLLAB2}), 404)


def test_firm_manager_lists_collaborators(api, with_collab2):
    response = api.get(f"/v1/firms/{CABINET}/collaborators", user=MANAGER)
    assert response.status_code == 200
    found = response.get_json()["collaborators"]
    assert sorted(c["email"] for c in found) == sorted([COLLAB, COLLAB2])
    for collaborator in found:
        assert collaborator["firm"] == CABINET
        assert_time(collaborator["created_at"])


@pytest.mark.parametrize("person", [COLLAB, ADMIN, STRANGER])
def test_collaborators_of_a_firm_one_does_not_manage_is_403(api, story, person):
    assert_error(api.get(f"/v1/firms/{CABINET}/collaborators", user=person), 403)


def test_removing_a_collaborator_ends_all_their_grants(api, story):
    assert api.decide(COLLAB, "declarations", DUPONT) is True
    response = api.delete(f"/v1/firms/{CABINET}/collaborators/{COLLAB}", user=MANAGER)
    assert response.status_code == 200
    body = response.get_json()
    assert body["grants_revoked"] == [story.grant["id"]]
    assert api.get(f"/v1/grants/{story.grant['id']}", user=MANAGER).get_json()["status"] == "revoked"
    assert api.decide(COLLAB, "declarations", DUPONT) is False


def test_removing_someone_who_is_not_a_collaborator_is_404(api, story):
    assert_error(api.delete(f"/v1/firms/{CABINET}/collaborators/{STRANGER}", user=MANAGER), 404)


def test_removing_a_collaborator_by_a_malformed_email_is_404(api, story):
    assert_error(api.delete(f"/v1/firms/{CABINET}/collaborators/chloe", user=MANAGER), 404)


@pytest.mark.parametrize("person", [COLLAB, ADMIN, STRANGER])
def test_removing_a_collaborator_of_a_firm_one_does_not_manage_is_403(api, story, person):
    assert_error(api.delete(f"/v1/firms/{CABINET}/collaborators/{COLLAB}", user=person), 403)
    assert api.decide(COLLAB, "declarations", DUPONT) is True


# ---- grants ---------------------------------------------------------------------------------------


def test_firm_manager_grants_a_collaborator_201(api, with_collab2, clock):
    ends = clock() + timedelta(days=60)
    response = api.post(f"/v1/firms/{CABINET}/grants", user=MANAGER,
                        json=_grant_body(scope=["salaries", "conges"], ends_at=ends.isoformat()))
    assert response.status_code == 201
    body = response.get_json()
    assert_link_body(body, "active")
    assert body["scope"] == ["conges", "salaries"]
    assert datetime.fromisoformat(body["ends_at"]) == ends
    assert (body["firm"], body["collaborator"], body["company"]) == (CABINET, COLLAB2, DUPONT)
    assert api.decide(COLLAB2, "conges", DUPONT) is True
    assert api.decide(COLLAB2, "declarations", DUPONT) is False


def test_grant_beyond_firm_scope_is_403_with_exceeding_rights(api, with_collab2):
    response = api.post(f"/v1/firms/{CABINET}/grants", user=MANAGER,
                        json=_grant_body(scope=["declarations", "intemperies", "attestations"]))
    error = assert_error(response, 403, "exceeding")
    assert sorted(error["details"]["exceeding"]) == ["attestations", "intemperies"]
    assert api.decide(COLLAB2, "declarations", DUPONT) is False


def test_grant_of_the_fraud_sensitive_right_is_403_with_exceeding(api, with_collab2):
    error = assert_error(api.post(f"/v1/firms/{CABINET}/grants", user=MANAGER,
                                  json=_grant_body(scope=["entreprise"])), 403, "exceeding")
    assert error["details"]["exceeding"] == ["entreprise"]


def test_grant_on_a_company_that_is_not_a_client_is_403_with_exceeding(api, with_collab2):
    error = assert_error(api.post(f"/v1/firms/{CABINET}/grants", user=MANAGER,
                                  json=_grant_body(company=MARTIN, scope=["compte"])), 403, "exceeding")
    assert error["details"]["exceeding"] == ["compte"]


def test_grant_after_the_firm_was_narrowed_is_403_with_exceeding(api, with_collab2, story):
    api.patch(f"/v1/delegations/{story.delegation['id']}", user=ADMIN, json={"scope": ["compte"]})
    error = assert_error(api.post(f"/v1/firms/{CABINET}/grants", user=MANAGER,
                                  json=_grant_body(scope=["compte", "declarations"])), 403, "exceeding")
    assert error["details"]["exceeding"] == ["declarations"]


@pytest.mark.parametrize("missing", ["collaborator", "company", "scope"])
def test_grant_without_a_field_is_400_naming_it(api, with_collab2, missing):
    body = _grant_body()
    del body[missing]
    assert_error(api.post(f"/v1/firms/{CABINET}/grants", user=MANAGER, json=body), 400, missing)


@pytest.mark.parametrize("field, value", [
    ("company", BAD_LUHN), ("company", 73282932000074), ("collaborator", "damien"), ("collaborator", 3),
    ("scope", "declarations"), ("scope", []), ("scope", [None]), ("ends_at", "soon"),
    ("ends_at", "2030-01-01T00:00:00"),
])
def test_grant_with_an_invalid_field_is_400_naming_it(api, with_collab2, field, value):
    assert_error(api.post(f"/v1/firms/{CABINET}/grants", user=MANAGER, json=_grant_body(**{field: value})), 400, field)


def test_grant_with_an_unknown_right_is_400_naming_scope(api, with_collab2):
    error = assert_error(api.post(f"/v1/firms/{CABINET}/grants", user=MANAGER,
                                  json=_grant_body(scope=["declarations", "teleportation"])), 400, "scope")
    assert "teleportation" in str(error["details"]["scope"])


def test_grant_with_an_unknown_field_is_400_naming_it(api, with_collab2):
    assert_error(api.post(f"/v1/firms/{CABINET}/grants", user=MANAGER, json=_grant_body(status="active")),
                 400, "status")


def test_grant_to_someone_who_is_not_a_collaborator_is_refused(api, story):
    response = api.post(f"/v1/firms/{CABINET}/grants", user=MANAGER, json=_grant_body(collaborator=STRANGER))
    assert_error(response, response.status_code)
    assert response.status_code in (400, 403, 404, 409)
    assert api.decide(STRANGER, "declarations", DUPONT) is False


def test_second_grant_to_the_same_collaborator_on_the_same_company_is_409(api, story):
    response = api.post(f"/v1/firms/{CABINET}/grants", user=MANAGER, json=_grant_body(collaborator=COLLAB))
    assert_error(response, 409)


@pytest.mark.parametrize("person", [COLLAB, ADMIN, STRANGER, RIVAL_MANAGER])
def test_grant_by_someone_who_does_not_manage_the_firm_is_403(api, with_collab2, person):
    assert_error(api.post(f"/v1/firms/{CABINET}/grants", user=person, json=_grant_body()), 403)


def test_grant_in_a_malformed_firm_siret_is_404(api, with_collab2):
    assert_error(api.post(f"/v1/firms/{BAD_LUHN}/grants", user=MANAGER, json=_grant_body()), 404)


def test_firm_manager_reads_a_grant(api, story):
    response = api.get(f"/v1/grants/{story.grant['id']}", user=MANAGER)
    assert response.status_code == 200
    body = response.get_json()
    assert_link_body(body, "active")
    assert body["id"] == story.grant["id"]
    assert body["scope"] == COLLAB_SCOPE


@pytest.mark.parametrize("person", [COLLAB, ADMIN, STRANGER, RIVAL_MANAGER])
def test_reading_a_grant_one_does_not_manage_is_403(api, story, person):
    assert_error(api.get(f"/v1/grants/{story.grant['id']}", user=person), 403)


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_unknown_grant_is_404(api, story, method):
    kw = {"json": {"scope": ["compte"]}} if method == "PATCH" else {}
    assert_error(api.call(method, "/v1/grants/0000000000000000deadbeef", user=MANAGER, **kw), 404)


def test_firm_manager_changes_a_grant_scope_and_end_date(api, story, clock):
    ends = clock() + timedelta(days=10)
    response = api.patch(f"/v1/grants/{story.grant['id']}", user=MANAGER,
                         json={"scope": ["salaries", "compte"], "ends_at": ends.isoformat()})
    assert response.status_code == 200
    body = response.get_json()
    assert_link_body(body, "active")
    assert body["scope"] == ["compte", "salaries"]
    assert datetime.fromisoformat(body["ends_at"]) == ends
    assert api.decide(COLLAB, "salaries", DUPONT) is True
    assert api.decide(COLLAB, "declarations", DUPONT) is False
    clock.advance(days=11)
    assert api.get(f"/v1/grants/{story.grant['id']}", user=MANAGER).get_json()["status"] == "expired"
    assert api.decide(COLLAB, "salaries", DUPONT) is False


def test_changing_a_grant_beyond_firm_scope_is_403_with_exceeding_rights(api, story):
    response = api.patch(f"/v1/grants/{story.grant['id']}", user=MANAGER,
                         json={"scope": ["compte", "intemperies"]})
    error = assert_error(response, 403, "exceeding")
    assert error["details"]["exceeding"] == ["intemperies"]
    assert api.get(f"/v1/grants/{story.grant['id']}", user=MANAGER).get_json()["scope"] == COLLAB_SCOPE


@pytest.mark.parametrize("body, field", [
    ({"scope": ["compte", "teleportation"]}, "scope"), ({"scope": "compte"}, "scope"),
    ({"ends_at": 5}, "ends_at"), ({"collaborator": COLLAB2}, "collaborator"),
])
def test_changing_a_grant_with_an_invalid_body_is_400_naming_the_field(api, story, body, field):
    assert_error(api.patch(f"/v1/grants/{story.grant['id']}", user=MANAGER, json=body), 400, field)


def test_changing_a_grant_with_an_empty_body_is_400(api, story):
    assert_error(api.patch(f"/v1/grants/{story.grant['id']}", user=MANAGER, json={}), 400)


@pytest.mark.parametrize("person", [COLLAB, ADMIN, STRANGER])
def test_changing_a_grant_one_does_not_manage_is_403(api, story, person):
    assert_error(api.patch(f"/v1/grants/{story.grant['id']}", user=person, json={"scope": ["compte"]}), 403)


def test_changing_a_revoked_grant_is_409(api, story):
    api.delete(f"/v1/grants/{story.grant['id']}", user=MANAGER)
    assert_error(api.patch(f"/v1/grants/{story.grant['id']}", user=MANAGER, json={"scope": ["compte"]}), 409)


def test_firm_manager_revokes_a_grant(api, story):
    response = api.delete(f"/v1/grants/{story.grant['id']}", user=MANAGER)
    assert response.status_code == 200
    assert_link_body(response.get_json(), "revoked")
    assert api.decide(COLLAB, "declarations", DUPONT) is False


@pytest.mark.parametrize("person", [COLLAB, ADMIN, STRANGER])
def test_revoking_a_grant_one_does_not_manage_is_403(api, story, person):
    assert_error(api.delete(f"/v1/grants/{story.grant['id']}", user=person), 403)
    assert api.decide(COLLAB, "declarations", DUPONT) is True


def test_collaborator_loses_right_when_company_narrows_firm_scope(api, story):
    api.patch(f"/v1/delegations/{story.delegation['id']}", user=ADMIN, json={"scope": ["compte"]})
    assert api.decide(COLLAB, "declarations", DUPONT) is False
    assert api.decide(COLLAB, "compte", DUPONT) is True


def test_manager_of_another_firm_gets_nothing_from_this_firm(api, story):
    api.delegate(MARTIN, OTHER_ADMIN, RIVAL_MANAGER, RIVAL, ["compte"])
    assert api.decide(RIVAL_MANAGER, "compte", DUPONT) is False
    assert_error(api.get(f"/v1/grants/{story.grant['id']}", user=RIVAL_MANAGER), 403)
