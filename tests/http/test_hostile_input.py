"""No input ever yields a 500: strings that databases and the policy engine choke on
(NUL characters, lone UTF-16 surrogates sent as JSON escapes) are answered with a deny,
a 4xx or a stored value, never a server error."""

from __future__ import annotations

import json

import pytest

from tests.http.conftest import assert_error, question
from tests.support import ADMIN, DUPONT, MANAGER, MARTIN, OTHER_ADMIN, RIVAL, RIVAL_MANAGER, STRANGER, siret

NUL = "\x00"
SURROGATE = "\ud800"  # json.dumps sends it as the escape \ud800, valid JSON text
HOSTILE = [pytest.param(NUL, id="nul"), pytest.param(SURROGATE, id="lone-surrogate")]


def _send(api, method: str, path: str, body: dict, key: str = "admin", user: str | None = ADMIN):
    """Send ``body`` as ASCII JSON text, so hostile characters travel as escapes."""
    return api.call(method, path, key=key, user=user, data=json.dumps(body))


def _deny_or_400(response) -> None:
    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 200:
        assert response.get_json()["decision"] is False
    else:
        assert_error(response, 400)


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize("part", ["subject", "resource", "action"])
def test_evaluation_with_a_hostile_string_is_a_deny_or_400(api, story, part, bad):
    body = question(ADMIN, "compte", DUPONT)
    if part == "action":
        body["action"]["name"] = "compte" + bad
    else:
        body[part]["id"] = body[part]["id"] + bad
    _deny_or_400(_send(api, "POST", "/access/v1/evaluation", body, key="pep", user=None))


@pytest.mark.parametrize("bad", HOSTILE)
def test_evaluations_with_a_hostile_string_are_denies_or_400(api, story, bad):
    body = {**question(ADMIN, "compte", DUPONT),
            "evaluations": [{}, {"subject": {"type": "user", "id": ADMIN + bad}},
                            {"resource": {"type": "company", "id": DUPONT + bad}}, {"action": {"name": bad}}]}
    response = _send(api, "POST", "/access/v1/evaluations", body, key="pep", user=None)
    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 200:
        assert [a["decision"] for a in response.get_json()["evaluations"]] == [True, False, False, False]


@pytest.mark.parametrize("raw", [b"\x00", b"\xed\xa0\x80"], ids=["nul-byte", "surrogate-bytes"])
def test_hostile_characters_sent_as_raw_bytes_are_invalid_json(api, story, raw):
    # Not escaped: JSON refuses a raw control character in a string, UTF-8 a raw surrogate.
    body = json.dumps(question(ADMIN, "compte", DUPONT)).encode().replace(b'"compte"', b'"compte' + raw + b'"')
    response = api.call("POST", "/access/v1/evaluation", key="pep", user=None, data=body)
    assert assert_error(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize("bad", HOSTILE)
def test_explain_with_a_hostile_string_is_a_deny_or_400(api, story, bad):
    body = question(MANAGER + bad, "compte" + bad, DUPONT + bad)
    response = _send(api, "POST", "/v1/explain", body, key="portal", user=None)
    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 200:
        assert response.get_json()["decision"] is False


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize("path, body", [
    ("/access/v1/search/resource", {"subject": {"type": "user", "id": MANAGER + "{bad}"},
                                    "action": {"name": "compte"}, "resource": {"type": "company"}}),
    ("/access/v1/search/subject", {"subject": {"type": "user"}, "action": {"name": "compte"},
                                   "resource": {"type": "company", "id": DUPONT + "{bad}"}}),
    ("/access/v1/search/action", {"subject": {"type": "user", "id": ADMIN},
                                  "resource": {"type": "company", "id": DUPONT + "{bad}"}}),
    ("/access/v1/search/resource", {"subject": {"type": "user", "id": MANAGER},
                                    "action": {"name": "compte{bad}"}, "resource": {"type": "company"}}),
], ids=["resource-by-user", "subject-by-company", "action-by-company", "resource-by-right"])
def test_search_with_a_hostile_string_finds_nothing_or_is_400(api, story, path, body, bad):
    body = json.loads(json.dumps(body).replace("{bad}", json.dumps(bad)[1:-1]))
    response = _send(api, "POST", path, body, key="pep", user=None)
    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 200:
        assert response.get_json()["results"] == []
    else:
        assert_error(response, 400)


@pytest.mark.parametrize("bad", HOSTILE)
def test_company_name_with_a_hostile_character_is_stored_or_400(api, bad):
    body = {"siret": siret(31337), "name": "Maçonnerie" + bad, "admin_email": STRANGER}
    response = _send(api, "POST", "/v1/companies", body, key="portal", user=None)
    assert response.status_code in (201, 400), response.status_code
    if response.status_code == 400:
        assert_error(response, 400, "name")


@pytest.mark.parametrize("bad", HOSTILE)
def test_firm_name_with_a_hostile_character_is_stored_or_400(api, story, bad):
    token = api.designate(MARTIN, OTHER_ADMIN, RIVAL_MANAGER, ["compte"])["activation"]["token"]
    body = {"token": token, "firm_siret": RIVAL, "firm_name": "Cabinet" + bad}
    response = _send(api, "POST", "/v1/activations", body, key="portal", user=RIVAL_MANAGER)
    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 400:
        assert_error(response, 400, "firm_name")


@pytest.mark.parametrize("bad", HOSTILE)
def test_activation_token_with_a_hostile_character_is_404(api, story, bad):
    body = {"token": "token" + bad, "firm_siret": RIVAL, "firm_name": "Cabinet Rival"}
    response = _send(api, "POST", "/v1/activations", body, key="portal", user=RIVAL_MANAGER)
    assert response.status_code in (400, 404), response.status_code


@pytest.mark.parametrize("bad", HOSTILE)
def test_unknown_right_with_a_hostile_character_is_400_naming_scope(api, story, bad):
    body = {"manager_email": RIVAL_MANAGER, "scope": ["compte" + bad]}
    assert_error(_send(api, "POST", f"/v1/companies/{DUPONT}/delegations", body), 400, "scope")


@pytest.mark.parametrize("bad", HOSTILE)
def test_unknown_field_with_a_hostile_name_is_400(api, bad):
    body = {"siret": siret(31337), "name": "Maçonnerie", "admin_email": STRANGER, "extra" + bad: 1}
    assert_error(_send(api, "POST", "/v1/companies", body, key="portal", user=None), 400)


@pytest.mark.parametrize("path", ["/v1/delegations/ab%00cd", "/v1/grants/ab%00cd"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_link_id_with_a_nul_character_is_404(api, story, method, path):
    assert_error(api.call(method, path, user=MANAGER), 404)


@pytest.mark.parametrize("path", [f"/v1/companies/{DUPONT}%00", f"/v1/firms/{RIVAL}%00/clients"])
def test_siret_with_a_nul_character_is_404(api, story, path):
    assert_error(api.get(path, user=ADMIN), 404)


@pytest.mark.parametrize("request_id", ["ab\x7fcd", "x" * 5000, "réf-42", "a\tb"])
def test_an_unusable_request_id_is_replaced_not_fatal(api, story, request_id):
    response = api.post("/access/v1/evaluation", key="pep", json=question(ADMIN, "compte", DUPONT),
                        headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers.get("X-Request-ID")
