"""POST /v1/explain: the decision plus the chain of links that allowed it, or the first
broken link that denied it (revoked, expired, pending, out of scope)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.http.conftest import assert_error, assert_time, question
from tests.support import ADMIN, COLLAB, DUPONT, MANAGER, MARTIN, OTHER_ADMIN, RIVAL_MANAGER, STRANGER

EXPLAIN = "/v1/explain"


def _explain(api, user: str, right: str, company: str, key: str = "portal") -> dict:
    response = api.post(EXPLAIN, key=key, json=question(user, right, company))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert isinstance(body["decision"], bool)
    assert isinstance(body["chain"], list)
    assert body["decision"] is api.decide(user, right, company), "explain must never change the answer"
    for link in body["chain"] + ([body["broken"]] if body.get("broken") else []):
        assert isinstance(link["kind"], str)
        if link.get("ends_at") is not None:
            assert_time(link["ends_at"])
    return body


def _link(body: dict, kind: str) -> dict:
    found = [link for link in body["chain"] if link["kind"] == kind]
    assert len(found) == 1, (kind, body["chain"])
    return found[0]


def _broken(body: dict, word: str) -> dict:
    """The broken link, checked to name ``word`` (revoked, expired, pending, out_of_scope)."""
    assert body["decision"] is False
    broken = body["broken"]
    assert broken is not None, body
    assert broken["holds"] is False
    assert word in (broken.get("detail") or "") or broken.get("status") == word, broken
    return broken


# ---- who may ask ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["portal", "admin"])
def test_explain_answers_admin_and_portal_keys(api, story, key):
    assert _explain(api, COLLAB, "declarations", DUPONT, key=key)["decision"] is True


def test_explain_with_a_pep_key_is_403(api, story):
    assert_error(api.post(EXPLAIN, key="pep", json=question(COLLAB, "declarations", DUPONT)), 403)


@pytest.mark.parametrize("part, field", [
    ("subject", "type"), ("subject", "id"), ("resource", "type"), ("resource", "id"), ("action", "name"),
])
def test_explain_missing_an_entity_field_is_400(api, story, part, field):
    body = question(ADMIN, "compte", DUPONT)
    del body[part][field]
    assert_error(api.post(EXPLAIN, key="portal", json=body), 400, part)


# ---- allowed: the chain ------------------------------------------------------------------------


def test_explained_allow_for_a_collaborator_shows_delegation_and_grant(api, story):
    body = _explain(api, COLLAB, "declarations", DUPONT)
    assert body["decision"] is True
    assert body.get("broken") is None
    delegation = _link(body, "delegation")
    grant = _link(body, "grant")
    assert delegation["id"] == story.delegation["id"]
    assert grant["id"] == story.grant["id"]
    assert delegation["holds"] is True and grant["holds"] is True
    assert delegation["status"] == "active" and grant["status"] == "active"
    assert "declarations" in delegation["scope"] and "declarations" in grant["scope"]
    kinds = [link["kind"] for link in body["chain"]]
    assert kinds.index("delegation") < kinds.index("grant"), "the chain runs company -> firm -> collaborator"


def test_explained_allow_for_the_firm_manager_shows_the_delegation(api, story):
    body = _explain(api, MANAGER, "cotisations", DUPONT)
    assert body["decision"] is True
    assert _link(body, "delegation")["id"] == story.delegation["id"]
    assert not [link for link in body["chain"] if link["kind"] == "grant"]


def test_explained_allow_for_a_company_admin_needs_no_delegation(api, story):
    body = _explain(api, ADMIN, "entreprise", DUPONT)
    assert body["decision"] is True
    assert not [link for link in body["chain"] if link["kind"] in ("delegation", "grant")]


def test_explanation_names_the_policy_version(api, story):
    body = _explain(api, COLLAB, "declarations", DUPONT)
    policy = api.get("/v1/policy", key="admin").get_json()
    assert body["policy_version"] == policy["version"]


# ---- denied: the first broken link -----------------------------------------------------------------


def test_explained_deny_after_revocation_names_the_revoked_delegation(api, story):
    api.delete(f"/v1/delegations/{story.delegation['id']}", user=ADMIN)
    for user in (MANAGER, COLLAB):
        broken = _broken(_explain(api, user, "declarations", DUPONT), "revoked")
        assert broken["kind"] == "delegation"
        assert broken["id"] == story.delegation["id"]


def test_explained_deny_after_grant_revocation_names_the_revoked_grant(api, story):
    api.delete(f"/v1/grants/{story.grant['id']}", user=MANAGER)
    broken = _broken(_explain(api, COLLAB, "declarations", DUPONT), "revoked")
    assert (broken["kind"], broken["id"]) == ("grant", story.grant["id"])


def test_explained_deny_past_the_end_date_names_the_expired_delegation(api, story, clock):
    ends = clock() + timedelta(days=1)
    api.patch(f"/v1/delegations/{story.delegation['id']}", user=ADMIN, json={"ends_at": ends.isoformat()})
    clock.advance(days=2)
    for user in (MANAGER, COLLAB):
        broken = _broken(_explain(api, user, "declarations", DUPONT), "expired")
        assert (broken["kind"], broken["id"]) == ("delegation", story.delegation["id"])


def test_explained_deny_past_the_grant_end_date_names_the_expired_grant(api, story, clock):
    ends = clock() + timedelta(hours=1)
    api.patch(f"/v1/grants/{story.grant['id']}", user=MANAGER, json={"ends_at": ends.isoformat()})
    clock.advance(hours=2)
    broken = _broken(_explain(api, COLLAB, "declarations", DUPONT), "expired")
    assert (broken["kind"], broken["id"]) == ("grant", story.grant["id"])


def test_explained_deny_outside_the_firm_scope_names_the_delegation_out_of_scope(api, story):
    broken = _broken(_explain(api, MANAGER, "intemperies", DUPONT), "out_of_scope")
    assert (broken["kind"], broken["id"]) == ("delegation", story.delegation["id"])


def test_explained_deny_outside_the_grant_scope_names_the_grant_out_of_scope(api, story):
    broken = _broken(_explain(api, COLLAB, "cotisations", DUPONT), "out_of_scope")
    assert (broken["kind"], broken["id"]) == ("grant", story.grant["id"])


def test_explained_deny_after_narrowing_upstream_names_the_delegation(api, story):
    api.patch(f"/v1/delegations/{story.delegation['id']}", user=ADMIN, json={"scope": ["compte"]})
    broken = _broken(_explain(api, COLLAB, "declarations", DUPONT), "out_of_scope")
    assert (broken["kind"], broken["id"]) == ("delegation", story.delegation["id"])


def test_explained_deny_for_a_pending_designation_names_the_pending_delegation(api, story):
    """The firm's manager already runs CABINET for DUPONT; MARTIN designates the same
    manager, who has not activated yet: the link that is missing is MARTIN's pending one."""
    designation = api.designate(MARTIN, OTHER_ADMIN, MANAGER, ["compte"])
    broken = _broken(_explain(api, MANAGER, "compte", MARTIN), "pending")
    assert (broken["kind"], broken["id"]) == ("delegation", designation["id"])


def test_explained_deny_for_a_first_time_manager_names_the_pending_delegation(api, story):
    designation = api.designate(MARTIN, OTHER_ADMIN, RIVAL_MANAGER, ["compte"])
    broken = _broken(_explain(api, RIVAL_MANAGER, "compte", MARTIN), "pending")
    assert (broken["kind"], broken["id"]) == ("delegation", designation["id"])


@pytest.mark.parametrize("user, right, company", [
    (STRANGER, "compte", DUPONT),
    (ADMIN, "teleportation", DUPONT),
    (ADMIN, "compte", "00000000000000"),
    (MANAGER, "entreprise", DUPONT),
    (OTHER_ADMIN, "compte", DUPONT),
])
def test_explained_deny_without_any_link_still_names_what_is_missing(api, story, user, right, company):
    body = _explain(api, user, right, company)
    assert body["decision"] is False
    assert body["broken"] is not None and body["broken"]["holds"] is False
    assert body["broken"].get("detail")
