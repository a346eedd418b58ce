"""Designation, activation and the life of a delegation:
POST/GET /v1/companies/{siret}/delegations, POST /v1/activations,
GET/PATCH/DELETE /v1/delegations/{id}."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.http.conftest import FIRM_SCOPE, assert_error, assert_link_body, assert_time
from tests.support import (
    ADMIN,
    CABINET,
    COLLAB,
    DUPONT,
    MANAGER,
    MARTIN,
    OTHER_ADMIN,
    RIVAL,
    RIVAL_MANAGER,
    STRANGER,
)

BAD_LUHN = CABINET[:-1] + str((int(CABINET[-1]) + 1) % 10)


@pytest.fixture
def companies(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    api.register_company(MARTIN, "Charpente Martin", OTHER_ADMIN)


def _designate(api, **changes):
    body = {"manager_email": MANAGER, "scope": ["declarations", "compte"], **changes}
    return api.post(f"/v1/companies/{DUPONT}/delegations", user=ADMIN, json=body)


def _activate(api, token, user=MANAGER, firm=CABINET):
    return api.post("/v1/activations", user=user, json={"token": token, "firm_siret": firm,
                                                         "firm_name": "Cabinet Legrand"})


def _iso(moment: datetime) -> str:
    return moment.isoformat()


# ---- designation --------------------------------------------------------------------------


def test_designation_is_201_pending_with_a_one_time_activation(api, companies, clock):
    response = _designate(api, scope=["salaries", "compte", "declarations"])
    assert response.status_code == 201
    body = response.get_json()
    assert_link_body(body, "pending")
    assert body["scope"] == ["compte", "declarations", "salaries"]
    assert body["ends_at"] is None
    activation = body["activation"]
    assert isinstance(activation["token"], str) and len(activation["token"]) >= 20
    assert_time(activation["expires_at"])
    assert datetime.fromisoformat(activation["expires_at"]) == clock() + timedelta(days=7)


def test_designation_with_an_end_date_returns_it_with_offset(api, companies, clock):
    ends = clock() + timedelta(days=90)
    body = _designate(api, ends_at=_iso(ends)).get_json()
    assert_time(body["ends_at"])
    assert datetime.fromisoformat(body["ends_at"]) == ends


def test_designation_end_date_in_another_offset_keeps_the_instant(api, companies, clock):
    ends = "2026-06-01T12:00:00+02:00"
    body = _designate(api, ends_at=ends).get_json()
    assert_time(body["ends_at"])
    assert datetime.fromisoformat(body["ends_at"]) == datetime.fromisoformat(ends)


def test_designation_scope_is_sorted_without_duplicates(api, companies):
    body = _designate(api, scope=["salaries", "compte", "salaries", "conges"]).get_json()
    assert body["scope"] == ["compte", "conges", "salaries"]


def test_designation_token_is_not_shown_again(api, companies):
    designation = _designate(api).get_json()
    listed = api.get(f"/v1/companies/{DUPONT}/delegations", user=ADMIN).get_data(as_text=True)
    read = api.get(f"/v1/delegations/{designation['id']}", user=ADMIN).get_data(as_text=True)
    assert designation["activation"]["token"] not in listed
    assert designation["activation"]["token"] not in read


@pytest.mark.parametrize("missing", ["manager_email", "scope"])
def test_designation_without_a_field_is_400_naming_it(api, companies, missing):
    body = {"manager_email": MANAGER, "scope": ["compte"]}
    del body[missing]
    assert_error(api.post(f"/v1/companies/{DUPONT}/delegations", user=ADMIN, json=body), 400, missing)


@pytest.mark.parametrize("field, value", [
    ("scope", "compte"), ("scope", [1, 2]), ("scope", {"compte": True}), ("manager_email", 12),
    ("ends_at", 1767225600), ("ends_at", "next monday"),
])
def test_designation_with_a_wrong_type_is_400_naming_the_field(api, companies, field, value):
    assert_error(_designate(api, **{field: value}), 400, field)


def test_designation_with_an_end_date_without_offset_is_400(api, companies):
    assert_error(_designate(api, ends_at="2027-01-01T00:00:00"), 400, "ends_at")


def test_designation_with_an_unknown_right_is_400_naming_scope(api, companies):
    error = assert_error(_designate(api, scope=["compte", "teleportation"]), 400, "scope")
    assert "teleportation" in str(error["details"]["scope"])


def test_designation_with_an_empty_scope_is_400(api, companies):
    assert_error(_designate(api, scope=[]), 400, "scope")


def test_designation_with_a_malformed_manager_email_is_400(api, companies):
    assert_error(_designate(api, manager_email="bruno.legrand.example"), 400, "manager_email")


def test_designation_with_an_unknown_field_is_400_naming_it(api, companies):
    assert_error(_designate(api, firm_siret=CABINET), 400, "firm_siret")


def test_designation_with_an_end_date_in_the_past_is_400(api, companies, clock):
    assert_error(_designate(api, ends_at=_iso(clock() - timedelta(days=1))), 400, "ends_at")


def test_designation_of_the_fraud_sensitive_right_is_403(api, companies):
    assert_error(_designate(api, scope=["compte", "entreprise"]), 403)


@pytest.mark.parametrize("person", [STRANGER, OTHER_ADMIN, MANAGER])
def test_designation_by_someone_not_admin_of_the_company_is_403(api, companies, person):
    body = {"manager_email": MANAGER, "scope": ["compte"]}
    assert_error(api.post(f"/v1/companies/{DUPONT}/delegations", user=person, json=body), 403)


def test_designation_for_a_malformed_siret_is_404(api, companies):
    body = {"manager_email": MANAGER, "scope": ["compte"]}
    assert_error(api.post(f"/v1/companies/{BAD_LUHN}/delegations", user=ADMIN, json=body), 404)


def test_designation_without_acting_user_is_400(api, companies):
    body = {"manager_email": MANAGER, "scope": ["compte"]}
    assert_error(api.post(f"/v1/companies/{DUPONT}/delegations", json=body), 400, "Acting-User")


def test_designating_a_firm_that_already_holds_an_active_delegation_is_409(api, companies):
    api.delegate(DUPONT, ADMIN, MANAGER, CABINET, ["compte"])
    assert_error(_designate(api), 409)


# ---- listing -------------------------------------------------------------------------------------


def test_company_admin_lists_delegations_of_every_status(api, companies, clock):
    revoked = api.delegate(DUPONT, ADMIN, MANAGER, CABINET, ["compte"])
    assert api.delete(f"/v1/delegations/{revoked['id']}", user=ADMIN).status_code == 200
    active = api.delegate(DUPONT, ADMIN, MANAGER, CABINET, ["declarations"])
    expired = api.designate(DUPONT, ADMIN, RIVAL_MANAGER, ["conges"])
    clock.advance(days=8)
    pending = api.designate(DUPONT, ADMIN, STRANGER, ["salaries"])
    response = api.get(f"/v1/companies/{DUPONT}/delegations", user=ADMIN)
    assert response.status_code == 200
    found = {d["id"]: d for d in response.get_json()["delegations"]}
    expected = {revoked["id"]: "revoked", active["id"]: "active", expired["id"]: "expired", pending["id"]: "pending"}
    assert {key: found[key]["status"] for key in found} == expected
    for delegation in found.values():
        assert_link_body(delegation, delegation["status"])
        assert "activation" not in delegation


@pytest.mark.parametrize("person", [STRANGER, OTHER_ADMIN, MANAGER])
def test_listing_delegations_of_a_company_one_does_not_administer_is_403(api, companies, person):
    api.delegate(DUPONT, ADMIN, MANAGER, CABINET, ["compte"])
    assert_error(api.get(f"/v1/companies/{DUPONT}/delegations", user=person), 403)


def test_listing_delegations_with_a_malformed_siret_is_404(api, companies):
    assert_error(api.get(f"/v1/companies/{BAD_LUHN}/delegations", user=ADMIN), 404)


# ---- activation --------------------------------------------------------------------------------


def test_activation_is_200_with_the_delegation_active_and_the_firm_created(api, companies):
    designation = _designate(api).get_json()
    response = _activate(api, designation["activation"]["token"])
    assert response.status_code == 200
    body = response.get_json()
    assert_link_body(body, "active")
    assert body["id"] == designation["id"]
    assert body["scope"] == ["compte", "declarations"]
    assert body["firm"] == CABINET
    assert "activation" not in body
    clients = api.get(f"/v1/firms/{CABINET}/clients", user=MANAGER)
    assert clients.status_code == 200
    assert [c["siret"] for c in clients.get_json()["clients"]] == [DUPONT]
    assert api.decide(MANAGER, "declarations", DUPONT) is True


def test_activation_into_the_existing_firm_adds_the_company_to_its_clients(api, companies):
    api.delegate(DUPONT, ADMIN, MANAGER, CABINET, ["compte"])
    api.delegate(MARTIN, OTHER_ADMIN, MANAGER, CABINET, ["attestations"])
    clients = api.get(f"/v1/firms/{CABINET}/clients", user=MANAGER).get_json()["clients"]
    assert sorted(c["siret"] for c in clients) == sorted([DUPONT, MARTIN])


def test_activation_by_the_manager_named_in_another_case_is_200(api, companies):
    designation = _designate(api).get_json()
    assert _activate(api, designation["activation"]["token"], user="Bruno@LEGRAND.example").status_code == 200


def test_activation_with_an_unknown_token_is_404(api, companies):
    assert_error(_activate(api, "no-such-token-" + "x" * 30), 404)


def test_activation_with_a_used_token_is_410(api, companies):
    token = _designate(api).get_json()["activation"]["token"]
    assert _activate(api, token).status_code == 200
    assert_error(_activate(api, token), 410)


def test_activation_after_seven_days_is_410(api, companies, clock):
    token = _designate(api).get_json()["activation"]["token"]
    clock.advance(days=7, seconds=1)
    assert_error(_activate(api, token), 410)
    assert api.decide(MANAGER, "compte", DUPONT) is False


def test_activation_just_before_seven_days_is_200(api, companies, clock):
    token = _designate(api).get_json()["activation"]["token"]
    clock.advance(days=7, seconds=-1)
    assert _activate(api, token).status_code == 200


def test_activation_of_a_replaced_designation_is_410(api, companies):
    old = _designate(api).get_json()["activation"]["token"]
    new = _designate(api).get_json()["activation"]["token"]
    assert_error(_activate(api, old), 410)
    assert _activate(api, new).status_code == 200


def test_activation_of_a_revoked_designation_is_410(api, companies):
    designation = _designate(api).get_json()
    assert api.delete(f"/v1/delegations/{designation['id']}", user=ADMIN).status_code == 200
    assert_error(_activate(api, designation["activation"]["token"]), 410)


@pytest.mark.parametrize("person", [STRANGER, COLLAB, ADMIN, RIVAL_MANAGER])
def test_activation_by_another_email_is_403(api, companies, person):
    token = _designate(api).get_json()["activation"]["token"]
    assert_error(_activate(api, token, user=person, firm=RIVAL), 403)
    assert _activate(api, token).status_code == 200


def test_activation_into_a_firm_someone_else_manages_is_403(api, companies):
    api.delegate(MARTIN, OTHER_ADMIN, RIVAL_MANAGER, RIVAL, ["compte"])
    token = _designate(api).get_json()["activation"]["token"]
    assert_error(_activate(api, token, firm=RIVAL), 403)


def test_activation_without_acting_user_is_400(api, companies):
    token = _designate(api).get_json()["activation"]["token"]
    response = api.post("/v1/activations", json={"token": token, "firm_siret": CABINET, "firm_name": "Cabinet"})
    assert_error(response, 400, "Acting-User")


@pytest.mark.parametrize("missing", ["token", "firm_siret", "firm_name"])
def test_activation_without_a_field_is_400_naming_it(api, companies, missing):
    body = {"token": "t" * 43, "firm_siret": CABINET, "firm_name": "Cabinet Legrand"}
    del body[missing]
    assert_error(api.post("/v1/activations", user=MANAGER, json=body), 400, missing)


@pytest.mark.parametrize("field, value", [
    ("firm_siret", BAD_LUHN), ("firm_siret", 44306184100047), ("token", 12345), ("firm_name", None),
    ("firm_name", ""), ("token", ""),
])
def test_activation_with_an_invalid_field_is_400_naming_it(api, companies, field, value):
    body = {"token": "t" * 43, "firm_siret": CABINET, "firm_name": "Cabinet Legrand", field: value}
    assert_error(api.post("/v1/activations", user=MANAGER, json=body), 400, field)


def test_activation_with_an_unknown_field_is_400_naming_it(api, companies):
    body = {"token": "t" * 43, "firm_siret": CABINET, "firm_name": "Cabinet Legrand", "scope": ["entreprise"]}
    assert_error(api.post("/v1/activations", user=MANAGER, json=body), 400, "scope")


# ---- one delegation --------------------------------------------------------------------------------


@pytest.fixture
def delegation(api, companies) -> dict:
    return api.delegate(DUPONT, ADMIN, MANAGER, CABINET, FIRM_SCOPE)


@pytest.mark.parametrize("reader", [ADMIN, MANAGER])
def test_company_admin_and_firm_manager_read_the_delegation(api, delegation, reader):
    response = api.get(f"/v1/delegations/{delegation['id']}", user=reader)
    assert response.status_code == 200
    body = response.get_json()
    assert_link_body(body, "active")
    assert body["id"] == delegation["id"]
    assert body["scope"] == sorted(FIRM_SCOPE)


@pytest.mark.parametrize("person", [STRANGER, OTHER_ADMIN, COLLAB])
def test_reading_a_delegation_without_a_link_to_it_is_403(api, delegation, person):
    assert_error(api.get(f"/v1/delegations/{delegation['id']}", user=person), 403)


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_unknown_delegation_is_404(api, delegation, method):
    body = {"scope": ["compte"]} if method == "PATCH" else None
    kw = {"json": body} if body else {}
    assert_error(api.call(method, "/v1/delegations/0000000000000000deadbeef", user=ADMIN, **kw), 404)


def test_company_admin_narrows_a_delegation_and_the_firm_loses_the_right(api, delegation):
    assert api.decide(MANAGER, "cotisations", DUPONT) is True
    response = api.patch(f"/v1/delegations/{delegation['id']}", user=ADMIN, json={"scope": ["compte", "declarations"]})
    assert response.status_code == 200
    body = response.get_json()
    assert_link_body(body, "active")
    assert body["scope"] == ["compte", "declarations"]
    assert api.decide(MANAGER, "cotisations", DUPONT) is False
    assert api.decide(MANAGER, "compte", DUPONT) is True


def test_company_admin_widens_a_delegation(api, delegation):
    response = api.patch(f"/v1/delegations/{delegation['id']}", user=ADMIN,
                         json={"scope": [*FIRM_SCOPE, "intemperies", "attestations"]})
    assert response.status_code == 200
    assert response.get_json()["scope"] == sorted([*FIRM_SCOPE, "intemperies", "attestations"])
    assert api.decide(MANAGER, "intemperies", DUPONT) is True


def test_company_admin_sets_then_removes_an_end_date(api, delegation, clock):
    ends = clock() + timedelta(days=30)
    body = api.patch(f"/v1/delegations/{delegation['id']}", user=ADMIN, json={"ends_at": _iso(ends)}).get_json()
    assert datetime.fromisoformat(body["ends_at"]) == ends
    assert_time(body["ends_at"])
    cleared = api.patch(f"/v1/delegations/{delegation['id']}", user=ADMIN, json={"ends_at": None})
    assert cleared.status_code == 200
    assert cleared.get_json()["ends_at"] is None


def test_delegation_past_its_end_date_reads_expired_and_denies(api, companies, clock):
    ends = clock() + timedelta(days=2)
    delegation = api.delegate(DUPONT, ADMIN, MANAGER, CABINET, ["compte"], ends_at=_iso(ends))
    clock.advance(days=3)
    assert api.get(f"/v1/delegations/{delegation['id']}", user=ADMIN).get_json()["status"] == "expired"
    assert api.decide(MANAGER, "compte", DUPONT) is False


@pytest.mark.parametrize("body, field", [
    ({"scope": ["compte", "teleportation"]}, "scope"),
    ({"scope": "compte"}, "scope"),
    ({"scope": []}, "scope"),
    ({"ends_at": "tomorrow"}, "ends_at"),
    ({"ends_at": "2030-01-01T00:00:00"}, "ends_at"),
    ({"status": "active"}, "status"),
    ({"scope": ["compte"], "firm": "44306184100047"}, "firm"),
])
def test_changing_a_delegation_with_an_invalid_body_is_400_naming_the_field(api, delegation, body, field):
    assert_error(api.patch(f"/v1/delegations/{delegation['id']}", user=ADMIN, json=body), 400, field)


def test_changing_a_delegation_with_an_empty_body_is_400(api, delegation):
    assert_error(api.patch(f"/v1/delegations/{delegation['id']}", user=ADMIN, json={}), 400)


def test_widening_a_delegation_to_the_fraud_sensitive_right_is_403(api, delegation):
    response = api.patch(f"/v1/delegations/{delegation['id']}", user=ADMIN, json={"scope": ["compte", "entreprise"]})
    assert_error(response, 403)


@pytest.mark.parametrize("person", [MANAGER, STRANGER, OTHER_ADMIN])
def test_changing_a_delegation_by_someone_other_than_the_company_admin_is_403(api, delegation, person):
    assert_error(api.patch(f"/v1/delegations/{delegation['id']}", user=person, json={"scope": ["compte"]}), 403)


def test_changing_a_revoked_delegation_is_409(api, delegation):
    api.delete(f"/v1/delegations/{delegation['id']}", user=ADMIN)
    assert_error(api.patch(f"/v1/delegations/{delegation['id']}", user=ADMIN, json={"scope": ["compte"]}), 409)


@pytest.mark.parametrize("revoker", [ADMIN, MANAGER])
def test_company_revokes_or_firm_renounces_a_delegation(api, delegation, revoker):
    response = api.delete(f"/v1/delegations/{delegation['id']}", user=revoker)
    assert response.status_code == 200
    assert_link_body(response.get_json(), "revoked")
    assert response.get_json()["id"] == delegation["id"]
    assert api.decide(MANAGER, "compte", DUPONT) is False
    assert api.decide(ADMIN, "compte", DUPONT) is True


@pytest.mark.parametrize("person", [STRANGER, OTHER_ADMIN, COLLAB])
def test_revoking_a_delegation_without_a_link_to_it_is_403(api, delegation, person):
    assert_error(api.delete(f"/v1/delegations/{delegation['id']}", user=person), 403)
    assert api.decide(MANAGER, "compte", DUPONT) is True
