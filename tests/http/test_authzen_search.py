"""AuthZEN searches: POST /access/v1/search/resource, /search/subject, /search/action,
their pagination, and the promise that every result, evaluated, is allowed."""

from __future__ import annotations

import pytest

from tests.http.conftest import COLLAB_SCOPE, FIRM_SCOPE, RIGHTS, assert_error
from tests.support import ADMIN, CABINET, COLLAB, COLLAB2, DUPONT, MANAGER, MARTIN, OTHER_ADMIN, STRANGER, siret

RESOURCE = "/access/v1/search/resource"
SUBJECT = "/access/v1/search/subject"
ACTION = "/access/v1/search/action"

# Five more clients of CABINET; COLLAB gets `declarations` on the first three.
CLIENTS = [siret(5_0000_0000_0000 + n) for n in range(1, 6)]
EXTRA_ADMINS = ["agathe@dupont.example", "basile@dupont.example", "celine@dupont.example"]


@pytest.fixture
def portfolio(api, story):
    for n, company in enumerate(CLIENTS):
        admin = f"admin{n}@client{n}.example"
        api.register_company(company, f"Client {n}", admin)
        api.delegate(company, admin, MANAGER, CABINET, ["compte", "declarations"])
        if n < 3:
            api.grant(CABINET, MANAGER, COLLAB, company, ["declarations"])
    for email in EXTRA_ADMINS:
        assert api.post(f"/v1/companies/{DUPONT}/admins", user=ADMIN, json={"email": email}).status_code == 201
    api.add_collaborator(CABINET, MANAGER, COLLAB2)
    api.grant(CABINET, MANAGER, COLLAB2, DUPONT, ["salaries"])
    return story


def _resource_search(user: str, right: str, page: dict | None = None) -> dict:
    body = {"subject": {"type": "user", "id": user}, "action": {"name": right}, "resource": {"type": "company"}}
    return body if page is None else {**body, "page": page}


def _subject_search(company: str, right: str, page: dict | None = None) -> dict:
    body = {"subject": {"type": "user"}, "action": {"name": right}, "resource": {"type": "company", "id": company}}
    return body if page is None else {**body, "page": page}


def _action_search(user: str, company: str, page: dict | None = None) -> dict:
    body = {"subject": {"type": "user", "id": user}, "resource": {"type": "company", "id": company}}
    return body if page is None else {**body, "page": page}


def _search(api, path: str, body: dict, key: str = "pep") -> dict:
    response = api.post(path, key=key, json=body)
    assert response.status_code == 200, response.get_json()
    found = response.get_json()
    assert set(found) >= {"results", "page"}
    assert set(found["page"]) >= {"next_token", "count", "total"}
    assert found["page"]["count"] == len(found["results"])
    return found


def _all_pages(api, path: str, body: dict, limit: int) -> tuple[list, list[dict]]:
    """Follow next_token from the first page to the one whose next_token is ""."""
    results, pages = [], []
    token = None
    for _ in range(100):
        page = {"limit": limit} if token is None else {"limit": limit, "token": token}
        found = _search(api, path, {**body, "page": page})
        assert len(found["results"]) <= limit
        results.extend(found["results"])
        pages.append(found["page"])
        token = found["page"]["next_token"]
        if token == "":
            return results, pages
    raise AssertionError("pagination never ended")


def _check_paging(api, path: str, body: dict, limit: int) -> list:
    everything = _search(api, path, body)
    assert everything["page"]["next_token"] == ""
    assert everything["page"]["total"] == len(everything["results"])
    results, pages = _all_pages(api, path, body, limit)
    assert results == everything["results"]
    assert len({repr(r) for r in results}) == len(results), "a result came twice"
    assert all(page["total"] == len(results) for page in pages)
    assert [page["count"] for page in pages[:-1]] == [limit] * (len(pages) - 1)
    assert all(page["next_token"] for page in pages[:-1])
    assert len(pages) == max(1, -(-len(results) // limit))
    return results


# ---- resource search -----------------------------------------------------------------------


def test_resource_search_lists_the_firm_managers_clients(api, portfolio):
    found = _search(api, RESOURCE, _resource_search(MANAGER, "declarations"))
    assert {r["type"] for r in found["results"]} == {"company"}
    assert sorted(r["id"] for r in found["results"]) == sorted([DUPONT, *CLIENTS])
    assert (found["page"]["next_token"], found["page"]["count"], found["page"]["total"]) == ("", 6, 6)


@pytest.mark.parametrize("limit", [1, 2, 4, 6, 50])
def test_resource_search_pages_chain_until_an_empty_next_token(api, portfolio, limit):
    results = _check_paging(api, RESOURCE, _resource_search(MANAGER, "declarations"), limit)
    assert len(results) == 6


@pytest.mark.parametrize("user, right", [
    (MANAGER, "declarations"), (MANAGER, "compte"), (MANAGER, "cotisations"), (COLLAB, "declarations"),
    (COLLAB, "compte"), (ADMIN, "entreprise"), (COLLAB2, "salaries"),
])
def test_every_resource_search_result_evaluates_to_allow(api, portfolio, user, right):
    results, _ = _all_pages(api, RESOURCE, _resource_search(user, right), limit=2)
    assert results, "the story gives each of these at least one company"
    for result in results:
        assert api.decide(user, right, result["id"]) is True, result


def test_resource_search_for_the_collaborator_follows_grants(api, portfolio):
    found = _search(api, RESOURCE, _resource_search(COLLAB, "declarations"))
    assert sorted(r["id"] for r in found["results"]) == sorted([DUPONT, *CLIENTS[:3]])
    assert _search(api, RESOURCE, _resource_search(COLLAB, "compte"))["results"] == [{"type": "company", "id": DUPONT}]


def test_resource_search_drops_a_client_once_its_delegation_is_revoked(api, portfolio):
    assert api.delete(f"/v1/delegations/{portfolio.delegation['id']}", user=ADMIN).status_code == 200
    found = _search(api, RESOURCE, _resource_search(MANAGER, "declarations"))
    assert DUPONT not in [r["id"] for r in found["results"]]
    assert DUPONT not in [r["id"] for r in _search(api, RESOURCE, _resource_search(COLLAB, "declarations"))["results"]]


@pytest.mark.parametrize("user, right", [(STRANGER, "compte"), (MANAGER, "teleportation"), (MANAGER, "entreprise")])
def test_resource_search_with_nothing_to_find_is_an_empty_last_page(api, portfolio, user, right):
    found = _search(api, RESOURCE, _resource_search(user, right))
    assert found["results"] == []
    assert found["page"]["next_token"] == ""
    assert (found["page"]["count"], found["page"]["total"]) == (0, 0)


# ---- subject search --------------------------------------------------------------------------


def test_subject_search_lists_everyone_who_holds_the_right_on_the_company(api, portfolio):
    found = _search(api, SUBJECT, _subject_search(DUPONT, "declarations"))
    assert {r["type"] for r in found["results"]} == {"user"}
    assert sorted(r["id"] for r in found["results"]) == sorted([ADMIN, *EXTRA_ADMINS, MANAGER, COLLAB])


@pytest.mark.parametrize("limit", [1, 2, 5, 6, 7])
def test_subject_search_pages_chain_until_an_empty_next_token(api, portfolio, limit):
    results = _check_paging(api, SUBJECT, _subject_search(DUPONT, "declarations"), limit)
    assert len(results) == 6


@pytest.mark.parametrize("company, right", [
    (DUPONT, "declarations"), (DUPONT, "salaries"), (DUPONT, "entreprise"), (DUPONT, "compte"),
    (CLIENTS[0], "declarations"), (MARTIN, "compte"),
])
def test_every_subject_search_result_evaluates_to_allow(api, portfolio, company, right):
    results, _ = _all_pages(api, SUBJECT, _subject_search(company, right), limit=2)
    assert results
    for result in results:
        assert api.decide(result["id"], right, company) is True, result


def test_subject_search_for_the_fraud_sensitive_right_lists_only_company_admins(api, portfolio):
    found = _search(api, SUBJECT, _subject_search(DUPONT, "entreprise"))
    assert sorted(r["id"] for r in found["results"]) == sorted([ADMIN, *EXTRA_ADMINS])


@pytest.mark.parametrize("company, right", [(siret(777), "compte"), (DUPONT, "teleportation")])
def test_subject_search_with_nothing_to_find_is_an_empty_last_page(api, portfolio, company, right):
    found = _search(api, SUBJECT, _subject_search(company, right))
    assert (found["results"], found["page"]["next_token"], found["page"]["total"]) == ([], "", 0)


# ---- action search ----------------------------------------------------------------------------


@pytest.mark.parametrize("user, expected", [
    (ADMIN, RIGHTS), (MANAGER, FIRM_SCOPE), (COLLAB, COLLAB_SCOPE), (COLLAB2, ["salaries"]), (STRANGER, []),
    (OTHER_ADMIN, []),
])
def test_action_search_lists_the_rights_the_user_holds_on_the_company(api, portfolio, user, expected):
    found = _search(api, ACTION, _action_search(user, DUPONT))
    assert sorted(r["name"] for r in found["results"]) == sorted(expected)
    assert found["page"]["total"] == len(expected)


@pytest.mark.parametrize("limit", [1, 3, 8, 9])
def test_action_search_pages_chain_until_an_empty_next_token(api, portfolio, limit):
    results = _check_paging(api, ACTION, _action_search(ADMIN, DUPONT), limit)
    assert len(results) == len(RIGHTS)


@pytest.mark.parametrize("user", [ADMIN, MANAGER, COLLAB, COLLAB2])
def test_every_action_search_result_evaluates_to_allow(api, portfolio, user):
    results, _ = _all_pages(api, ACTION, _action_search(user, DUPONT), limit=3)
    assert results
    for result in results:
        assert api.decide(user, result["name"], DUPONT) is True, result


def test_action_search_follows_narrowing_upstream(api, portfolio):
    api.patch(f"/v1/delegations/{portfolio.delegation['id']}", user=ADMIN, json={"scope": ["compte"]})
    assert [r["name"] for r in _search(api, ACTION, _action_search(COLLAB, DUPONT))["results"]] == ["compte"]


# ---- malformed searches ------------------------------------------------------------------------


SEARCHES = [
    (RESOURCE, _resource_search(MANAGER, "declarations")),
    (SUBJECT, _subject_search(DUPONT, "declarations")),
    (ACTION, _action_search(ADMIN, DUPONT)),
]


@pytest.mark.parametrize("path, body", SEARCHES, ids=["resource", "subject", "action"])
@pytest.mark.parametrize("token", ["not-a-token", "!!!", "Zm9vYmFy", "a" * 600, "\u00e9t\u00e9"])
def test_invalid_page_token_is_400(api, story, path, body, token):
    assert_error(api.post(path, key="pep", json={**body, "page": {"token": token, "limit": 2}}), 400, "page")


@pytest.mark.parametrize("path, body", SEARCHES, ids=["resource", "subject", "action"])
@pytest.mark.parametrize("page", [{"limit": 0}, {"limit": -1}, {"limit": "2"}, {"limit": 1.5}, {"token": 5},
                                  "first", [1]])
def test_malformed_page_is_400(api, path, body, page):
    assert_error(api.post(path, key="pep", json={**body, "page": page}), 400, "page")


@pytest.mark.parametrize("path, body, part, field", [
    (RESOURCE, _resource_search(MANAGER, "compte"), "subject", "id"),
    (RESOURCE, _resource_search(MANAGER, "compte"), "subject", "type"),
    (RESOURCE, _resource_search(MANAGER, "compte"), "action", "name"),
    (RESOURCE, _resource_search(MANAGER, "compte"), "resource", "type"),
    (SUBJECT, _subject_search(DUPONT, "compte"), "subject", "type"),
    (SUBJECT, _subject_search(DUPONT, "compte"), "resource", "id"),
    (SUBJECT, _subject_search(DUPONT, "compte"), "resource", "type"),
    (SUBJECT, _subject_search(DUPONT, "compte"), "action", "name"),
    (ACTION, _action_search(ADMIN, DUPONT), "subject", "id"),
    (ACTION, _action_search(ADMIN, DUPONT), "subject", "type"),
    (ACTION, _action_search(ADMIN, DUPONT), "resource", "id"),
    (ACTION, _action_search(ADMIN, DUPONT), "resource", "type"),
])
def test_search_missing_a_needed_field_is_400_naming_it(api, path, body, part, field):
    body = {key: dict(value) for key, value in body.items()}
    del body[part][field]
    error = assert_error(api.post(path, key="pep", json=body), 400, part)
    assert field in error["details"][part]


@pytest.mark.parametrize("path, body", SEARCHES, ids=["resource", "subject", "action"])
def test_search_ignores_unknown_fields(api, portfolio, path, body):
    noisy = {**body, "context": {"ip": "192.0.2.1"}, "trace": True, "page": {"limit": 1000, "cursor": "x"}}
    assert _search(api, path, noisy)["results"] == _search(api, path, body)["results"]


def test_search_with_foreign_types_finds_nothing(api, portfolio):
    body = _resource_search(MANAGER, "compte")
    body["resource"]["type"] = "firm"
    assert _search(api, RESOURCE, body)["results"] == []
