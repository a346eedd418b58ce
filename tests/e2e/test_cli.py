"""The `authz` console script, run as an operator runs it, on a fresh SQLite file."""

from __future__ import annotations

import re
import shutil

import pytest

from authz.demo import COMPANY, MANAGER
from service.app import create_app
from tests.e2e.harness import Cli, environment, last_line
from tests.support import ROOT

COLLABORATOR = "chloe@legrand.example"  # demo collaborator granted declarations and compte
ID = r"[0-9a-f]{8,}"


@pytest.fixture(scope="module")
def demo_cli(tmp_path_factory) -> Cli:
    """`authz` on a SQLite file holding the demo story; tests only read it (or add keys)."""
    workdir = tmp_path_factory.mktemp("e2e-demo")
    demo = Cli(environment(f"sqlite:///{workdir / 'authz.sqlite3'}"), workdir)
    demo.ok("db", "upgrade")
    demo.ok("demo")
    return demo


def test_db_upgrade_creates_the_schema_and_can_run_again(cli):
    first = cli("db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert "schema up to date" in first.stdout
    again = cli("db", "upgrade")
    assert again.returncode == 0, again.stderr


def test_keys_create_prints_the_key_last_and_refuses_a_duplicate_name(cli):
    cli.ok("db", "upgrade")
    created = cli("keys", "create", "--role", "pep", "--name", "portal-pep")
    assert created.returncode == 0, created.stderr
    key = last_line(created.stdout)
    assert len(key) >= 32 and " " not in key

    duplicate = cli("keys", "create", "--role", "pep", "--name", "portal-pep")
    assert duplicate.returncode != 0
    assert "portal-pep" in duplicate.stderr and "already exists" in duplicate.stderr
    assert "Traceback" not in duplicate.stderr
    assert key not in duplicate.stdout


def test_keys_create_rejects_an_unknown_role(cli):
    cli.ok("db", "upgrade")
    refused = cli("keys", "create", "--role", "superuser", "--name", "nobody")
    assert refused.returncode != 0
    assert "superuser" in refused.stderr and "pep" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_demo_loads_once_then_says_it_is_already_loaded(cli):
    cli.ok("db", "upgrade")
    first = cli.ok("demo")
    assert first.stdout.startswith("demo loaded")
    second = cli.ok("demo")
    assert second.stdout.startswith("demo already loaded")


def test_check_allows_a_granted_right_and_denies_entreprise_with_exit_codes(demo_cli):
    cli = demo_cli
    allowed = cli("check", COLLABORATOR, "declarations", COMPANY)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert allowed.stdout.split()[0] == "allow"
    denied = cli("check", COLLABORATOR, "entreprise", COMPANY)
    assert denied.returncode == 1, denied.stdout + denied.stderr
    assert denied.stdout.split()[0] == "deny"


def test_explain_shows_the_delegation_and_grant_behind_an_allow(demo_cli):
    cli = demo_cli
    shown = cli("explain", COLLABORATOR, "declarations", COMPANY)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.startswith("allow")
    assert re.search(rf"^\s+delegation {ID} holds status=active", shown.stdout, re.M), shown.stdout
    assert re.search(rf"^\s+grant {ID} holds status=active scope=compte,declarations", shown.stdout, re.M), shown.stdout


def test_explain_names_the_broken_link_behind_a_deny(demo_cli):
    cli = demo_cli
    # The firm holds salaries on the company, but the collaborator's grant does not.
    shown = cli("explain", COLLABORATOR, "salaries", COMPANY)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert shown.stdout.startswith("deny")
    assert re.search(rf"^\s+broken: grant {ID} does not hold .*\(grant_out_of_scope\)", shown.stdout, re.M), shown.stdout
    # The manager asking for a right the company never delegated: the delegation breaks.
    shown = cli("explain", MANAGER, "intemperies", COMPANY)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert re.search(rf"^\s+broken: delegation {ID} does not hold .*\(delegation_out_of_scope\)", shown.stdout, re.M), \
        shown.stdout


def test_revoked_key_gets_401_from_the_app(demo_cli):
    cli = demo_cli
    key = cli.create_key("portal", "leaving-portal")
    client = create_app({"AUTHZ_DATABASE_URL": cli.env["AUTHZ_DATABASE_URL"]}).test_client()
    question = {"subject": {"type": "user", "id": COLLABORATOR}, "action": {"name": "declarations"},
                "resource": {"type": "company", "id": COMPANY}}
    allowed = client.post("/access/v1/evaluation", json=question, headers={"Authorization": f"Bearer {key}"})
    assert allowed.status_code == 200
    assert allowed.get_json()["decision"] is True

    revoked = cli("keys", "revoke", "leaving-portal")
    assert revoked.returncode == 0, revoked.stderr
    refused = client.post("/access/v1/evaluation", json=question, headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.get_json()["error"]["code"] == "unauthenticated"

    again = cli("keys", "revoke", "leaving-portal")
    assert again.returncode != 0
    assert "leaving-portal" in again.stderr


def test_bad_activation_ttl_is_a_clear_configuration_error(cli, sqlite_url):
    bad = environment(sqlite_url, AUTHZ_ACTIVATION_TTL_HOURS="abc")
    for command in (["db", "upgrade"], ["serve", "--port", "1"]):
        refused = cli(*command, env=bad)
        assert refused.returncode != 0, command
        assert "AUTHZ_ACTIVATION_TTL_HOURS" in refused.stderr and "'abc'" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


def test_policy_census_builds_the_census_that_impact_reports_then_refresh(demo_cli, tmp_path):
    env = {**demo_cli.env, "AUTHZ_CACHE_DIR": str(tmp_path / "census")}
    draft = tmp_path / "draft"
    shutil.copytree(ROOT / "policies", draft / "policies")
    shutil.copy(ROOT / "policies.polar", draft / "policies.polar")

    built = demo_cli("policy", "census", env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    assert re.fullmatch(r"census built from the whole store in [\d.]+s: [1-9]\d* \(user, company\) pairs, "
                        r"[1-9]\d* companies, [1-9]\d* shapes asked of policy \w+; kept in .*\n", built.stdout)
    report = demo_cli("policy", "impact", str(draft), env=env)
    assert report.returncode == 0, report.stdout + report.stderr
    # The running policy was asked by the command: the report asks only the draft.
    assert "census refreshed; the running policy's answers recalled" in last_line(report.stdout)

    off = demo_cli("policy", "census", env={**env, "AUTHZ_CACHE_DIR": "off"})
    assert off.returncode == 1 and "AUTHZ_CACHE_DIR is off" in off.stderr
