"""Policy administration over HTTP: read, validate a draft, reload, impact."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest

from authz.impact_jobs import ABANDONED_AFTER, RUNNING_AT_MOST
from service.app import create_app
from service.policy_admin import WAIT_SECONDS, _wait_preferred
from tests.http.conftest import FIRM_SCOPE, Api, CheckedClient, assert_error
from tests.support import ADMIN, CABINET, COLLAB, DUPONT, MANAGER, ROOT


@pytest.fixture
def live(tmp_path):
    """A copy of the shipped policy that the tests may edit."""
    shutil.copy(ROOT / "policies.polar", tmp_path / "policies.polar")
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    return tmp_path


@pytest.fixture
def app(db, clock, live):
    url = db.engine.url.render_as_string(hide_password=False)
    app = create_app({"AUTHZ_DATABASE_URL": url, "AUTHZ_POLICY_DIR": live, "TESTING": True}, clock=clock)
    app.test_client_class = CheckedClient
    yield app
    app.extensions["authz"].db.dispose()


def shipped_files() -> dict[str, str]:
    files = {"policies.polar": (ROOT / "policies.polar").read_text()}
    for path in sorted((ROOT / "policies").glob("*.polar")):
        files[f"policies/{path.name}"] = path.read_text()
    return files


def test_policy_reports_version_files_and_rights(api: Api):
    body = api.get("/v1/policy", key="admin").get_json()
    assert len(body["version"]) == 16
    assert body["files"][0] == "policies.polar" and "policies/firm.polar" in body["files"]
    assert "entreprise" in body["rights"] and "entreprise" not in body["delegable"]
    assert api.get("/readyz", key=None).get_json()["policy_version"] == body["version"]


@pytest.mark.parametrize("role", ["pep", "portal"])
def test_policy_administration_needs_an_admin_key(api: Api, role):
    assert_error(api.get("/v1/policy", key=role), 403)
    assert_error(api.post("/v1/policy/reload", key=role, json={}), 403)
    assert_error(api.post("/v1/policy/validate", key=role, json={"files": shipped_files()}), 403)


def test_validate_accepts_the_shipped_policy(api: Api):
    body = api.post("/v1/policy/validate", key="admin", json={"files": shipped_files()}).get_json()
    assert body == {"valid": True, "errors": []}


def test_validate_reports_a_syntax_error_with_file_line_and_column(api: Api):
    files = shipped_files()
    firm = files["policies/firm.polar"]
    files["policies/firm.polar"] = firm.replace("grant.firm in user.manages;", "grant.firm in user.manages")

    body = api.post("/v1/policy/validate", key="admin", json={"files": files}).get_json()

    assert body["valid"] is False
    [error] = body["errors"]
    assert error["file"] == "policies/firm.polar" and error["line"] > 1 and error["column"] >= 1


def test_validate_reports_the_traps_oso_only_prints(api: Api):
    files = shipped_files()
    files["policies/extra.polar"] = (
        'holds_right(user: Usr, right: String, company: Company, "x") if user.email = right and company = company;\n'
        "orphan(x) if x = 1;\n"
    )

    body = api.post("/v1/policy/validate", key="admin", json={"files": files}).get_json()

    messages = {(e["file"], e["line"], e["message"]) for e in body["errors"]}
    assert ("policies/extra.polar", 1, "Unknown specializer Usr") in messages
    assert ("policies/extra.polar", 2, "rule orphan is never called: it can never fire") in messages


@pytest.mark.parametrize(
    "files",
    [{}, {"../etc/passwd.polar": "x"}, {"policies/sub/dir.polar": "x"}, {"policies.polar": 3}],
)
def test_validate_refuses_a_malformed_draft(api: Api, files):
    assert_error(api.post("/v1/policy/validate", key="admin", json={"files": files}), 400)


def test_validate_changes_nothing(api: Api):
    before = api.get("/v1/policy", key="admin").get_json()["version"]
    files = shipped_files()
    files["policies.polar"] += '\nright("formation");\n'
    api.post("/v1/policy/validate", key="admin", json={"files": files})
    assert api.get("/v1/policy", key="admin").get_json()["version"] == before


def test_reload_swaps_an_edited_policy_and_audits_it(api: Api, live):
    before = api.get("/v1/policy", key="admin").get_json()["version"]
    with (live / "policies" / "company.polar").open("a") as policy:
        policy.write("\n# Reviewed with the fund's legal team, November 2026.\n")

    reloaded = api.post("/v1/policy/reload", key="admin", json={}, headers={"X-Request-ID": "deploy-42"})

    assert reloaded.status_code == 200
    body = reloaded.get_json()
    assert body["accepted"] is True and body["old_version"] == before and body["version"] != before
    assert api.get("/v1/policy", key="admin").get_json()["version"] == body["version"]
    [record] = [r for r in api.get("/v1/audit", key="admin").get_json()["records"] if r["action"] == "policy.reload"]
    assert record["details"]["old_version"] == before and record["details"]["new_version"] == body["version"]
    assert record["actor"] == "key:test-admin" and record["request_id"] == "deploy-42"


def test_reload_refuses_an_invalid_policy_and_keeps_serving(api: Api, live, story):
    before = api.get("/v1/policy", key="admin").get_json()["version"]
    (live / "policies" / "broken.polar").write_text("holds_right(user: Usr, r, c, \"x\") if r = c;\n")

    refused = api.post("/v1/policy/reload", key="admin", json={})

    error = assert_error(refused, 422, "errors", code="policy_invalid")
    assert error["details"]["errors"][0]["file"] == "policies/broken.polar"
    assert api.get("/v1/policy", key="admin").get_json()["version"] == before
    assert api.decide(COLLAB, "declarations", DUPONT) is True
    actions = [r["action"] for r in api.get("/v1/audit", key="admin").get_json()["records"]]
    assert "policy.reload_refused" in actions


def test_reload_refuses_a_policy_that_fails_its_decision_tables(api: Api, live):
    before = api.get("/v1/policy", key="admin").get_json()["version"]
    firm = live / "policies" / "firm.polar"
    # Collaborators would keep rights the firm lost: the shipped tables must catch it.
    firm.write_text(firm.read_text().replace(
        "    right in grant.scope and\n    firm_holds(grant.firm, right, company, user.now);",
        "    right in grant.scope;"))

    refused = api.post("/v1/policy/reload", key="admin", json={})

    error = assert_error(refused, 422, code="policy_invalid")
    assert any(e["file"] == "collaborator.yaml" for e in error["details"]["errors"])
    assert api.get("/v1/policy", key="admin").get_json()["version"] == before


def test_impact_of_a_draft_lists_who_gains_and_loses(api: Api, story):
    files = shipped_files()
    # The draft stops delegating `compte`: the firm's manager and its collaborator lose it.
    files["policies.polar"] = files["policies.polar"].replace('delegable("compte");\n', "")

    body = api.post("/v1/policy/impact", key="admin", json={"files": files}).get_json()

    lost = {(c["user"], c["right"], c["company"]) for c in body["lost"]}
    assert lost == {(MANAGER, "compte", DUPONT), (COLLAB, "compte", DUPONT)}
    assert body["gained"] == []
    assert body["counts"]["lost"] == 2 and body["counts"]["pairs_checked"] >= 3


def test_impact_lists_stop_at_their_bound_while_the_counts_stay_complete(api: Api, story, monkeypatch):
    from service import policy_admin

    monkeypatch.setattr(policy_admin, "MAX_LISTED", 1)
    files = shipped_files()
    files["policies.polar"] = files["policies.polar"].replace('delegable("compte");\n', "")

    body = api.post("/v1/policy/impact", key="admin", json={"files": files}).get_json()

    assert body["counts"]["lost"] == 2
    assert body["lost"] == [{"user": MANAGER, "right": "compte", "company": DUPONT}]


def test_impact_of_an_invalid_draft_is_422(api: Api):
    assert_error(api.post("/v1/policy/impact", key="admin", json={"files": {"policies.polar": "allow("}}), 422)


def _drops_compte() -> dict[str, str]:
    files = shipped_files()
    files["policies.polar"] = files["policies.polar"].replace('delegable("compte");\n', "")
    return files


def _poll(api: Api, href: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        response = api.get(href, key="admin")
        assert response.status_code in (200, 202)
        body = response.get_json()
        if body["status"] != "running" or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_an_impact_report_asked_asynchronously_is_answered_202_then_polled(api: Api, story, app):
    expected = app.extensions["authz"].policy_admin.impact_of_draft(_drops_compte())

    started = api.post("/v1/policy/impact", key="admin", json={"files": _drops_compte()},
                       headers={"Prefer": "respond-async"})

    assert started.status_code == 202
    assert started.headers["Location"] == started.get_json()["href"]
    assert int(started.headers["Retry-After"]) > 0
    assert started.get_json()["status"] == "running" and "counts" not in started.get_json()
    done = _poll(api, started.headers["Location"])
    assert done["status"] == "done" and done["error"] is None
    assert done["lost"] == [asdict(change) for change in expected.lost]
    assert done["counts"]["lost"] == len(expected.lost) == 2 and done["by_right"] == {"compte": {"gained": 0, "lost": 2}}
    assert done["requested_by"] == "test-admin" and done["truncated"] is False
    assert done["policy_version"] == api.get("/v1/policy", key="admin").get_json()["version"]
    assert done["draft_version"] != done["policy_version"]
    # The report's own process started from the census the first report left (authz.census).
    assert "census built" in expected.method and "census refreshed" in done["method"]


def test_an_impact_report_that_fails_is_answered_failed_with_its_error(api: Api, story):
    files = shipped_files()
    # Valid Polar that breaks when asked: the attribute does not exist on a user.
    files["policies.polar"] += '\nallow(user: User, "compte", _company: Company) if user.no_such_attribute = 1;\n'

    body = _poll(api, api.post("/v1/policy/impact", key="admin", json={"files": files}).get_json()["href"])

    assert body["status"] == "failed" and body["error"]
    assert "counts" not in body


def test_an_impact_report_whose_process_stopped_is_answered_failed(api: Api, app, db):
    jobs = app.extensions["authz"].policy_admin.jobs
    jobs.launch = lambda job_id: None  # the process never starts, as if killed at once
    started = api.post("/v1/policy/impact", key="admin", json={"files": shipped_files()},
                       headers={"Prefer": "respond-async"}).get_json()
    assert api.get(started["href"], key="admin").status_code == 202

    with db.transaction() as tx:
        tx.update_impact_report(started["id"], heartbeat_at=datetime.now(UTC) - ABANDONED_AFTER - timedelta(seconds=1))

    body = api.get(started["href"], key="admin").get_json()
    assert body["status"] == "failed" and "stopped" in body["error"]


def test_impact_reports_running_at_once_are_bounded(api: Api, app):
    app.extensions["authz"].policy_admin.jobs.launch = lambda job_id: None  # they stay running
    for _ in range(RUNNING_AT_MOST):
        started = api.post("/v1/policy/impact", key="admin", json={"files": shipped_files()},
                           headers={"Prefer": "wait=0"})
        assert started.status_code == 202

    refused = api.post("/v1/policy/impact", key="admin", json={"files": shipped_files()})

    assert_error(refused, 429, code="busy")
    assert int(refused.headers["Retry-After"]) > 0


def test_an_unknown_impact_report_is_404(api: Api):
    assert_error(api.get("/v1/policy/impact/nope", key="admin"), 404)
    assert_error(api.get("/v1/policy/impact/nope", key="portal"), 403)


@pytest.mark.parametrize(("prefer", "seconds"), [
    ("", WAIT_SECONDS), ("respond-async", 0), ("respond-async, wait=10", 0), ("wait=3", 3),
    ("wait=999999", WAIT_SECONDS), ("handling=lenient; wait=5", 5), ("nowait=5", WAIT_SECONDS),
])
def test_the_prefer_header_sets_how_long_a_report_is_waited_for(prefer, seconds):
    assert _wait_preferred(prefer) == seconds


def test_impact_of_narrowing_a_delegation_names_what_it_takes_away(api: Api, story):
    path = f"/v1/delegations/{story.delegation['id']}/impact"

    narrowed = api.post(path, key="admin", json={"scope": ["compte"]}).get_json()
    revoked = api.post(path, key="admin", json={"scope": None}).get_json()

    assert {(c["user"], c["right"]) for c in narrowed["lost"]} == (
        {(MANAGER, r) for r in FIRM_SCOPE if r != "compte"} | {(COLLAB, "declarations")}
    )
    assert {(c["user"], c["right"]) for c in revoked["lost"]} == (
        {(MANAGER, r) for r in FIRM_SCOPE} | {(COLLAB, "declarations"), (COLLAB, "compte")}
    )
    assert all(c["user"] != ADMIN for c in revoked["lost"])
    # A preview changes nothing.
    assert api.decide(MANAGER, "salaries", DUPONT) is True
    assert story.delegation["firm"] == CABINET


def test_impact_of_an_unknown_delegation_is_404(api: Api):
    assert_error(api.post("/v1/delegations/nope/impact", key="admin", json={"scope": None}), 404)


def test_a_worker_started_while_the_files_are_refused_serves_the_last_accepted_policy(app, db, clock, live):
    accepted = app.extensions["authz"].policy().version  # this app's start kept a copy
    (live / "policies" / "broken.polar").write_text("holds_right(user: Usr, r, c, \"x\") if r = c;\n")
    url = db.engine.url.render_as_string(hide_password=False)

    restarted = create_app({"AUTHZ_DATABASE_URL": url, "AUTHZ_POLICY_DIR": live, "TESTING": True}, clock=clock)

    ready = restarted.test_client().get("/readyz").get_json()
    assert ready["policy_version"] == accepted
    assert ready["policy_files"].startswith("refused: ")
    restarted.extensions["authz"].db.dispose()


def test_without_an_accepted_policy_a_refused_one_stops_the_start(db, clock, live):
    from authz.engine import PolicyRejected

    (live / "policies" / "broken.polar").write_text("holds_right(user: Usr, r, c, \"x\") if r = c;\n")
    url = db.engine.url.render_as_string(hide_password=False)
    with pytest.raises(PolicyRejected):
        create_app({"AUTHZ_DATABASE_URL": url, "AUTHZ_POLICY_DIR": live, "TESTING": True}, clock=clock)
