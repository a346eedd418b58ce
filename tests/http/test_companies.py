"""Companies and their admins: POST /v1/companies, GET /v1/companies/{siret},
POST /v1/companies/{siret}/admins, DELETE /v1/companies/{siret}/admins/{email}."""

from __future__ import annotations

import pytest

from tests.http.conftest import assert_error, assert_time
from tests.support import ADMIN, DUPONT, MANAGER, MARTIN, OTHER_ADMIN, STRANGER, siret

BAD_LUHN = DUPONT[:-1] + str((int(DUPONT[-1]) + 1) % 10)
NEW_ADMIN = "agathe@dupont.example"


def _company(**changes) -> dict:
    return {"siret": DUPONT, "name": "Maçonnerie Dupont", "admin_email": ADMIN, **changes}


# ---- registration ---------------------------------------------------------------------------


def test_register_company_is_201_with_the_company_and_its_first_admin(api):
    response = api.post("/v1/companies", json=_company())
    assert response.status_code == 201
    body = response.get_json()
    assert body["siret"] == DUPONT
    assert body["name"] == "Maçonnerie Dupont"
    assert body["admins"] == [ADMIN]
    assert_time(body["created_at"])


def test_register_company_stores_the_admin_email_lower_cased(api):
    body = api.post("/v1/companies", json=_company(admin_email="Alice@Dupont.EXAMPLE")).get_json()
    assert body["admins"] == [ADMIN]


def test_register_company_needs_no_acting_user(api):
    assert api.post("/v1/companies", user=None, json=_company()).status_code == 201


def test_register_duplicate_company_is_409(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    assert_error(api.post("/v1/companies", json=_company(admin_email=STRANGER)), 409)


@pytest.mark.parametrize("missing", ["siret", "name", "admin_email"])
def test_register_company_without_a_field_is_400_naming_it(api, missing):
    body = _company()
    del body[missing]
    assert_error(api.post("/v1/companies", json=body), 400, missing)


@pytest.mark.parametrize("field, value", [
    ("siret", 73282932000074), ("name", 42), ("admin_email", ["alice@dupont.example"]), ("siret", None),
    ("name", {"fr": "Dupont"}),
])
def test_register_company_with_a_wrong_type_is_400_naming_the_field(api, field, value):
    assert_error(api.post("/v1/companies", json=_company(**{field: value})), 400, field)


@pytest.mark.parametrize("bad", [BAD_LUHN, DUPONT[:-1], DUPONT + "0", "7328293200007A", "", " " + DUPONT[1:],
                                 "٧٣٢٨٢٩٣٢٠٠٠٠٧٤"])
def test_register_company_with_a_malformed_siret_is_400(api, bad):
    assert_error(api.post("/v1/companies", json=_company(siret=bad)), 400, "siret")


@pytest.mark.parametrize("bad", ["alice", "alice@", "@dupont.example", "alice@dupont", "al ice@dupont.example",
                                 "alice@@dupont.example", "", "alice@dupont.example\n"])
def test_register_company_with_a_malformed_email_is_400(api, bad):
    assert_error(api.post("/v1/companies", json=_company(admin_email=bad)), 400, "admin_email")


def test_register_company_with_an_unknown_field_is_400_naming_it(api):
    assert_error(api.post("/v1/companies", json=_company(vat_number="FR123")), 400, "vat_number")


def test_register_company_with_a_pep_key_is_403(api):
    assert_error(api.post("/v1/companies", key="pep", json=_company()), 403)


# ---- reading ----------------------------------------------------------------------------------


def test_company_admin_reads_the_company_and_its_admins(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    response = api.get(f"/v1/companies/{DUPONT}", user=ADMIN)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["siret"], body["name"], body["admins"]) == (DUPONT, "Maçonnerie Dupont", [ADMIN])
    assert_time(body["created_at"])


def test_acting_user_is_compared_case_insensitively(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    assert api.get(f"/v1/companies/{DUPONT}", user="ALICE@dupont.example").status_code == 200


@pytest.mark.parametrize("person", [STRANGER, OTHER_ADMIN])
def test_reading_a_company_one_does_not_administer_is_403(api, person):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    api.register_company(MARTIN, "Charpente Martin", OTHER_ADMIN)
    assert_error(api.get(f"/v1/companies/{DUPONT}", user=person), 403)


def test_reading_a_company_with_a_malformed_siret_is_404(api):
    assert_error(api.get(f"/v1/companies/{BAD_LUHN}", user=ADMIN), 404)


def test_reading_an_unregistered_company_is_refused(api):
    response = api.get(f"/v1/companies/{siret(999)}", user=ADMIN)
    assert_error(response, response.status_code)
    assert response.status_code in (403, 404)


def test_management_call_without_acting_user_is_400(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    assert_error(api.get(f"/v1/companies/{DUPONT}"), 400, "Acting-User")


def test_management_call_with_a_malformed_acting_user_is_400(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    assert_error(api.get(f"/v1/companies/{DUPONT}", user="not an e-mail"), 400, "Acting-User")


# ---- admins -------------------------------------------------------------------------------------


def test_company_admin_adds_an_admin_201(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    response = api.post(f"/v1/companies/{DUPONT}/admins", user=ADMIN, json={"email": "Agathe@Dupont.example"})
    assert response.status_code == 201
    assert sorted(response.get_json()["admins"]) == sorted([ADMIN, NEW_ADMIN])
    assert api.get(f"/v1/companies/{DUPONT}", user=NEW_ADMIN).status_code == 200


def test_adding_an_existing_admin_is_409(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    assert_error(api.post(f"/v1/companies/{DUPONT}/admins", user=ADMIN, json={"email": ADMIN}), 409)


@pytest.mark.parametrize("body, field", [
    ({}, "email"), ({"email": 7}, "email"), ({"email": "agathe"}, "email"),
    ({"email": NEW_ADMIN, "role": "owner"}, "role"),
])
def test_adding_an_admin_with_an_invalid_body_is_400(api, body, field):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    assert_error(api.post(f"/v1/companies/{DUPONT}/admins", user=ADMIN, json=body), 400, field)


@pytest.mark.parametrize("person", [STRANGER, OTHER_ADMIN, MANAGER])
def test_adding_an_admin_to_a_company_one_does_not_administer_is_403(api, person):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    api.register_company(MARTIN, "Charpente Martin", OTHER_ADMIN)
    assert_error(api.post(f"/v1/companies/{DUPONT}/admins", user=person, json={"email": person}), 403)


def test_adding_an_admin_with_a_malformed_siret_is_404(api):
    assert_error(api.post(f"/v1/companies/{BAD_LUHN}/admins", user=ADMIN, json={"email": NEW_ADMIN}), 404)


def test_company_admin_removes_another_admin_200(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    api.post(f"/v1/companies/{DUPONT}/admins", user=ADMIN, json={"email": NEW_ADMIN})
    response = api.delete(f"/v1/companies/{DUPONT}/admins/{NEW_ADMIN}", user=ADMIN)
    assert response.status_code == 200
    assert response.get_json()["admins"] == [ADMIN]
    assert_error(api.get(f"/v1/companies/{DUPONT}", user=NEW_ADMIN), 403)


def test_removing_the_last_admin_is_409(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    assert_error(api.delete(f"/v1/companies/{DUPONT}/admins/{ADMIN}", user=ADMIN), 409)
    assert api.get(f"/v1/companies/{DUPONT}", user=ADMIN).get_json()["admins"] == [ADMIN]


def test_removing_the_last_admin_named_in_another_case_is_409(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    assert_error(api.delete(f"/v1/companies/{DUPONT}/admins/ALICE@DUPONT.EXAMPLE", user=ADMIN), 409)


def test_removing_someone_who_is_not_an_admin_is_404(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    assert_error(api.delete(f"/v1/companies/{DUPONT}/admins/{STRANGER}", user=ADMIN), 404)


def test_removing_an_admin_by_a_malformed_email_is_404(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    assert_error(api.delete(f"/v1/companies/{DUPONT}/admins/not-an-email", user=ADMIN), 404)


def test_removing_an_admin_of_a_company_one_does_not_administer_is_403(api):
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    api.post(f"/v1/companies/{DUPONT}/admins", user=ADMIN, json={"email": NEW_ADMIN})
    assert_error(api.delete(f"/v1/companies/{DUPONT}/admins/{NEW_ADMIN}", user=STRANGER), 403)
