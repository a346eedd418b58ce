"""The decision tables kept beside the policy (``policies/tests/*.yaml``), and their runner.

Each shipped table is one pytest test, failing with the runner's own report. The
runner is then checked on tables and drafts written to ``tmp_path``: a wrong
expectation fails, a malformed file is named, and a policy with a rule broken fails
the shipped tables.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from authz.engine import Engine, read_policy
from authz.policy_tests import PolicyTestReport, format_report, load_tables, run_policy_tests, run_table
from tests.support import ROOT

TABLES = ROOT / "policies" / "tests"


@pytest.mark.parametrize("table", load_tables(TABLES), ids=lambda table: f"{table.file}::{table.name}")
def test_shipped_table_holds(engine, table):
    report = PolicyTestReport([run_table(engine, table)])
    assert report.ok, format_report(report, verbose=True)


def test_shipped_tables_reach_every_rule_and_every_broken_link(engine):
    report = run_policy_tests(engine, TABLES)
    reasons = {case.reason for case in report.cases}
    granting = {"company_admin", "firm_manager", "collaborator_grant"}
    denying = {
        "unknown_right", "unknown_company", "no_link", "not_delegable",
        "delegation_revoked", "delegation_expired", "delegation_out_of_scope",
        "grant_revoked", "grant_expired", "grant_out_of_scope",
    }
    assert granting | denying <= reasons, sorted(granting | denying - reasons)
    # A pending designation has no firm yet, so explain may name it or find no delegation.
    assert reasons & {"delegation_pending", "no_delegation"}
    searches = {case.label.split()[0] for case in report.cases if case.reason is None}
    assert searches == {"companies", "who", "rights"}


def test_shipped_tables_run_from_the_default_folder(engine):
    report = run_policy_tests(engine)
    assert report.ok and report.failed == 0 and report.passed == len(report.cases) > 50


# ---- the runner on tables written for the occasion ---------------------------------------

DUPONT = """
    name: {name}
    people:
      alice: alice@dupont.example
      bruno: bruno@legrand.example
    companies:
      dupont: {{siret: "73214568900012", admins: [alice]}}
    firms:
      legrand: {{siret: "44809123700017", manager: bruno}}
    delegations:
      dupont-legrand: {{company: dupont, firm: legrand, status: active, scope: [compte]}}
"""


def write(folder, name: str, text: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")


def test_a_wrong_expectation_is_reported_as_failed(engine, tmp_path):
    write(tmp_path, "wrong.yaml", DUPONT.format(name="bruno's rights") + """
    expect:
      - who: bruno
        on: dupont
        allow: [compte, entreprise]
        why: someone thought the firm holds the bank details
    """)

    report = run_policy_tests(engine, tmp_path)

    assert not report.ok
    assert (report.passed, report.failed, report.errors) == (1, 1, [])
    [failed] = [case for case in report.cases if not case.passed]
    assert (failed.label, failed.expected, failed.actual) == (
        "bruno: entreprise on dupont", "allow", "deny (not_delegable)"
    )
    [failure] = report.failures
    assert failure.file == "wrong.yaml" and "entreprise on dupont" in failure.message
    text = format_report(report)
    assert "FAILED  wrong.yaml::bruno's rights" in text
    assert "bruno: entreprise on dupont: expected allow, got deny (not_delegable)" in text
    assert "why: someone thought the firm holds the bank details" in text
    assert text.endswith("==== 1 passed, 1 failed in 1 table ====")


ROW = """
    expect:
      - {who: alice, on: dupont, allow: [compte]}
"""


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("name: [never closed\n", "not valid YAML"),
        (DUPONT.format(name="typo") + "\n    expect:\n      - {who: chloe, on: dupont, allow: [compte]}\n",
         "expect[1].who: 'chloe' is not in people"),
        (DUPONT.format(name="typo") + "\n    expect:\n      - {who: alise, on: dupont, allow: [compte]}\n",
         "did you mean 'alice'?"),
        (DUPONT.format(name="siret").replace("73214568900012", "73214568900013") + ROW,
         "companies.dupont.siret: '73214568900013' is not a SIRET"),
        (DUPONT.format(name="key").replace("scope:", "scop:") + ROW,
         "delegations.dupont-legrand: unknown key 'scop'"),
        (DUPONT.format(name="dup").replace("  bruno:", "  alice: other@dupont.example\n      bruno:") + ROW,
         "duplicate key 'alice'"),
        (DUPONT.format(name="when").replace("[compte]}", "[compte], ends_at: tomorrow}", 1) + ROW,
         "ends_at: 'tomorrow' is neither RFC 3339"),
        (DUPONT.format(name="status").replace("active", "lapsed") + ROW,
         "status: 'lapsed' is not one of pending, active, revoked"),
        (DUPONT.format(name="twice").replace(
            "  dupont-legrand:", "  again: {company: dupont, firm: legrand, status: active}\n      dupont-legrand:"
        ) + ROW, "the fixtures break a rule of the database: UNIQUE constraint failed"),
        (DUPONT.format(name="silent"), "the table asks nothing"),
    ],
    ids=["syntax", "unknown-person", "did-you-mean", "bad-siret", "unknown-key", "duplicate-key",
         "bad-date", "bad-status", "two-active-delegations", "no-question"],
)
def test_a_malformed_table_is_reported_with_its_file_name(engine, tmp_path, text, complaint):
    write(tmp_path, "broken.yaml", text)
    write(tmp_path, "sound.yaml", DUPONT.format(name="sound") + ROW)

    report = run_policy_tests(engine, tmp_path)

    assert not report.ok
    [error] = report.errors
    assert error.file == "broken.yaml"
    assert error.error.startswith("broken.yaml") and complaint in error.error
    assert [table.ok for table in report.tables if table.file == "sound.yaml"] == [True]
    assert "ERROR   broken.yaml::" in format_report(report)


def test_a_folder_without_tables_does_not_pass(engine, tmp_path):
    report = run_policy_tests(engine, tmp_path)
    assert not report.ok
    assert "no *.yaml decision tables" in format_report(report)


# ---- drafts with a rule broken fail the shipped tables -------------------------------------

COLLABORATOR_RULE = re.compile(r'holds_right\(user: User, right: String, company: Company, "collaborator_grant"\) if.*?;', re.S)


def without_collaborator_rule(sources):
    sources["policies/firm.polar"], found = COLLABORATOR_RULE.subn("", sources["policies/firm.polar"])
    return found


def entreprise_delegable(sources):
    sources["policies.polar"] += '\ndelegable("entreprise");\n'
    return 1


def lapsing_after_end(sources):
    before = "link.ends_at <= now;"
    sources["policies.polar"] = sources["policies.polar"].replace(before, "link.ends_at < now;")
    return sources["policies.polar"].count("link.ends_at < now;")


@pytest.mark.parametrize(
    ("breaking", "failing_files"),
    [
        (without_collaborator_rule, {"collaborator.yaml", "searches.yaml"}),
        (entreprise_delegable, {"delegation.yaml", "collaborator.yaml"}),
        (lapsing_after_end, {"delegation.yaml"}),
    ],
    ids=["collaborator-rule-removed", "entreprise-delegable", "lapse-one-instant-late"],
)
def test_a_draft_with_a_rule_broken_fails_the_shipped_tables(tmp_path, breaking, failing_files):
    sources = read_policy(ROOT)
    assert breaking(sources) == 1, "the edit no longer matches the shipped policy"
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")

    report = run_policy_tests(Engine(tmp_path), TABLES)

    assert not report.ok and not report.errors
    assert {table.file for table in report.tables if not table.ok} == failing_files, format_report(report)
