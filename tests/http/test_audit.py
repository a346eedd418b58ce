"""GET /v1/audit: the append-only log of changes (who, when, what, request id); the
admin key reads everything, a company admin reads their own company's records."""

from __future__ import annotations

import pytest

from tests.http.conftest import assert_error, assert_time
from tests.support import ADMIN, CABINET, COLLAB, DUPONT, MANAGER, MARTIN, OTHER_ADMIN, STRANGER


def _records(api, key="admin", acting=None, **query) -> list[dict]:
    response = api.get("/v1/audit", key=key, user=acting, query=query)
    assert response.status_code == 200, response.get_json()
    records = response.get_json()["records"]
    for record in records:
        assert_time(record["at"])
        assert record["actor"] and record["action"]
    return records


def test_admin_key_reads_every_change_of_the_story(api, story):
    actions = [r["action"] for r in _records(api)]
    for expected in ("company.register", "delegation.designate", "delegation.activate", "firm.collaborator_add",
                     "grant.create"):
        assert expected in actions, actions
    companies = {r["company"] for r in _records(api)}
    assert {DUPONT, MARTIN} <= companies


def test_audit_record_says_who_when_what_and_request_id(api, story, clock):
    response = api.patch(f"/v1/delegations/{story.delegation['id']}", user=ADMIN, json={"scope": ["compte"]},
                         headers={"X-Request-ID": "portal-narrow-0001"})
    assert response.status_code == 200
    found = [r for r in _records(api) if r["request_id"] == "portal-narrow-0001"]
    assert len(found) == 1, found
    record = found[0]
    assert record["actor"] == ADMIN
    assert record["company"] == DUPONT
    assert record["target"] == story.delegation["id"]
    assert record["at"].startswith(clock().date().isoformat())
    assert "compte" in str(record["details"])


def test_generated_request_id_appears_in_the_audit_record(api, story):
    response = api.post(f"/v1/firms/{CABINET}/collaborators", user=MANAGER, json={"email": "damien@legrand.example"})
    generated = response.headers["X-Request-ID"]
    assert generated
    found = [r for r in _records(api) if r["request_id"] == generated]
    assert [r["action"] for r in found] == ["firm.collaborator_add"]
    assert found[0]["actor"] == MANAGER


def test_company_admin_reads_only_their_company(api, story):
    records = _records(api, key="portal", acting=ADMIN, company=DUPONT)
    assert records
    assert {r["company"] for r in records} == {DUPONT}
    other = _records(api, key="portal", acting=OTHER_ADMIN, company=MARTIN)
    assert {r["company"] for r in other} == {MARTIN}


@pytest.mark.parametrize("person, company", [
    (ADMIN, MARTIN), (OTHER_ADMIN, DUPONT), (STRANGER, DUPONT), (MANAGER, DUPONT), (COLLAB, DUPONT),
])
def test_audit_of_a_company_one_does_not_administer_is_403(api, story, person, company):
    assert_error(api.get("/v1/audit", key="portal", user=person, query={"company": company}), 403)


def test_company_admin_must_name_the_company(api, story):
    response = api.get("/v1/audit", key="portal", user=ADMIN)
    assert_error(response, response.status_code)
    assert response.status_code in (400, 403)


def test_audit_through_a_portal_key_without_acting_user_is_refused(api, story):
    response = api.get("/v1/audit", key="portal", query={"company": DUPONT})
    assert_error(response, response.status_code)
    assert response.status_code in (400, 403)


def test_audit_with_a_pep_key_is_403(api, story):
    assert_error(api.get("/v1/audit", key="pep"), 403)


def test_audit_filters_by_user_and_since(api, story, clock):
    clock.advance(days=1)
    later = clock()
    api.delete(f"/v1/grants/{story.grant['id']}", user=MANAGER)
    recent = _records(api, since=later.isoformat())
    assert [r["action"] for r in recent] == ["grant.revoke"]
    by_manager = _records(api, user=MANAGER)
    assert by_manager and all(MANAGER in (r["actor"], r["subject"]) for r in by_manager)


def test_audit_limit_pages_through_the_log(api, story):
    everything = _records(api)
    first = api.get("/v1/audit", key="admin", query={"limit": 2}).get_json()
    assert len(first["records"]) == 2
    assert [r["id"] for r in first["records"]] == [r["id"] for r in everything[:2]]


def test_audit_is_append_only_through_the_api(api, story):
    before = _records(api)
    for method in ("POST", "PATCH", "DELETE", "PUT"):
        response = api.call(method, "/v1/audit", key="admin", json={})
        assert response.status_code == 405
    assert _records(api) == before


@pytest.mark.parametrize("query, field", [
    ({"company": "73282932000075"}, "company"), ({"user": "not-an-email"}, "user"),
    ({"since": "yesterday"}, "since"), ({"since": "2026-03-01T00:00:00"}, "since"),
    ({"limit": "0"}, "limit"), ({"limit": "many"}, "limit"), ({"limit": "100000"}, "limit"),
    ({"actor": ADMIN}, "actor"),
])
def test_audit_with_a_malformed_query_is_400_naming_the_parameter(api, story, query, field):
    assert_error(api.get("/v1/audit", key="admin", query=query), 400, field)


def test_denied_change_leaves_no_audit_record(api, story, clock):
    before = len(_records(api))
    clock.advance(minutes=1)
    assert api.delete(f"/v1/delegations/{story.delegation['id']}", user=STRANGER).status_code == 403
    assert len(_records(api)) == before
