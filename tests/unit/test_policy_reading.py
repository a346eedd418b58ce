"""What an impact report reads from a policy's text: which coarser shapes it may use, and
which rights a draft leaves to the same rules. Each reading must say no to what it
cannot vouch for."""

from __future__ import annotations

import pytest

from authz.engine import Engine, read_policy
from authz.policy_reading import coarsening, rights_answered_alike
from tests.support import ROOT

SHIPPED = read_policy(ROOT)
RIGHTS = {"declarations", "cotisations", "compte", "salaries", "conges", "intemperies", "attestations", "entreprise"}


def with_rule(text: str, file: str = "policies/firm.polar") -> dict[str, str]:
    return {**SHIPPED, file: SHIPPED[file] + text + "\n"}


def edited(file: str, old: str, new: str) -> dict[str, str]:
    assert old in SHIPPED[file]
    return {**SHIPPED, file: SHIPPED[file].replace(old, new)}


def test_the_shipped_policy_allows_every_coarsening():
    assert coarsening(SHIPPED).identifiers_by_equality
    assert coarsening(SHIPPED).one_right_at_a_time


@pytest.mark.parametrize(("rule", "reason"), [
    ('holds_right(u: User, r: String, c: Company, "x") if right(r) and g in c.grants and '
     'g.collaborator = u.email and g.firm < c.siret;', "orders g.firm < c.siret"),
    ('holds_right(u: User, r: String, c: Company, "x") if right(r) and [first, *_] = u.admin_of and first = c.siret;',
     "list against a pattern"),
    ('holds_right(u: User, r: String, c: Company, "x") if right(r) and f in u.manages and cut and f = c.siret;',
     "cut"),
])
def test_a_policy_that_may_see_how_identifiers_sort_keeps_their_order(rule, reason):
    found = coarsening(with_rule(rule))

    assert not found.identifiers_by_equality and not found.one_right_at_a_time
    assert any(reason in why for why in found.reasons), found.reasons


@pytest.mark.parametrize(("sources", "reason"), [
    (with_rule('holds_right(u: User, r: String, c: Company, "x") if right(r) and g in c.grants and '
               'g.collaborator = u.email and "declarations" in g.scope;'), "reads a scope"),
    (with_rule('holds_right(u: User, r: String, c: Company, "x") if right(r) and g in c.grants and '
               'g.collaborator = u.email and s = g.scope and r in s;'), "reads a scope"),
    (with_rule('holds_right(u: User, r: String, c: Company, "x") if right(r) and d in c.delegations and '
               'g in c.grants and g.collaborator = u.email and d.scope = g.scope;'), "reads a scope"),
    # `other` holds another right than the one asked: its scope test is not about the asked right
    (with_rule('holds_right(u: User, r: String, c: Company, "x") if right(r) and firm_holds("F", "compte", c, u.now);'),
     "reads a scope"),
    (with_rule("resource Company { permissions = [\"read\"]; }", "policies.polar"), "resource block"),
])
def test_a_policy_that_reads_scopes_otherwise_is_asked_every_right_of_a_shape(sources, reason):
    Engine(sources)  # a valid policy
    found = coarsening(sources)

    assert found.identifiers_by_equality and not found.one_right_at_a_time
    assert any(reason in why for why in found.reasons), found.reasons


def test_comments_and_strings_do_not_count_as_rules():
    sources = with_rule('# a < b, [x, *y], cut, s = g.scope\nright_note("a < b ; cut [x, *y] scope");')
    sources = {**sources, "policies/firm.polar": sources["policies/firm.polar"].replace(
        "right_note", "# right_note")}

    assert coarsening(sources) == coarsening(SHIPPED)


def test_a_draft_adding_a_right_leaves_every_other_right_to_the_same_rules():
    draft = edited("policies.polar", 'delegable("attestations");\n',
                   'delegable("attestations");\nright("formation");\ndelegable("formation");\n')

    assert rights_answered_alike(SHIPPED, draft, RIGHTS) == RIGHTS


def test_a_draft_no_longer_delegating_a_right_changes_that_right_only():
    draft = edited("policies.polar", 'delegable("compte");\n', "")

    assert rights_answered_alike(SHIPPED, draft, RIGHTS) == RIGHTS - {"compte"}


@pytest.mark.parametrize("draft", [
    edited("policies/firm.polar", "in_force(grant, user.now) and", ""),
    edited("policies.polar", "link.ends_at <= now", "link.ends_at < now"),
    with_rule('holds_right(u: User, r: String, c: Company, "x") if right(r) and c.siret in u.collaborates;'),
    # a new way to hold every right, reading a fact about another right
    with_rule('holds_right(u: User, r: String, c: Company, "x") if right(r) and delegable(other) and '
              'other = "compte" and c.siret in u.manages;'),
])
def test_a_draft_changing_a_rule_that_decides_rights_shares_nothing(draft):
    Engine(draft)
    assert rights_answered_alike(SHIPPED, draft, RIGHTS) == frozenset()


@pytest.mark.parametrize("draft", [
    # management of grants: has_permission on a Grant never matches a question about a Company
    edited("policies/firm.polar", 'action in ["read", "change", "revoke"] and\n    grant.firm',
           'action in ["read", "revoke"] and\n    grant.firm'),
    # API keys: allow(key: ApiKey, ...) never matches a question asked for a User
    edited("policies/api.polar", ', "metrics"]', "]"),
    # who may grant: not called by allow at all
    edited("policies/firm.polar", "firm.siret in user.manages and\n    firm_holds", "firm.siret in user.manages and\n"
           "    firm.manager_email = user.email and\n    firm_holds"),
])
def test_rules_a_decision_about_a_right_never_reaches_do_not_matter(draft):
    Engine(draft)
    assert rights_answered_alike(SHIPPED, draft, RIGHTS) == RIGHTS


def test_rule_names_group_like_answers_only_when_allow_asks_holds_right_the_question():
    assert coarsening(SHIPPED).rule_one_right_at_a_time
    assert Engine(SHIPPED).by_question
    # allow no longer reaches holds_right: nothing vouches for how its rule names read scopes
    sources = edited("policies.polar", "holds_right(user, right, company, _rule)", "company.siret in user.admin_of")
    found = coarsening(sources)

    assert found.one_right_at_a_time and not found.rule_one_right_at_a_time
    assert not Engine(sources).by_question
