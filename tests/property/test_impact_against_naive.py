"""An impact report equals the straightforward comparison, pair by pair and right by right.

The report groups pairs by shape, asks one question per shape and right, and shares
answers between the two policies where their texts allow. The naive comparison asks
``allow`` for every pair, every right, under each policy, on the very facts a
decision loads. Random stores (small pools of identifiers and instants, so that many
pairs share a shape while their identifiers differ) and drafts chosen to hit every
grouping: the coarsest, scopes read by a literal, identifiers ordered, a policy that
could see through shapes.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from authz import census, impact, model
from authz.engine import Engine, read_policy
from authz.pairs import Population
from authz.store import reaching
from tests.support import ROOT

EMAILS = ("alice@dupont.example", "bruno@legrand.example", "chloe@legrand.example", "damien@rival.example")
COMPANIES = ("73282932000074", "55208131766522", "12345678901237", "44306184100047")
FIRMS = ("44306184100047", "35600000000048", "38012986600027")  # the first is also a company
RIGHTS = ("declarations", "cotisations", "compte", "conges", "entreprise", "formation")
TIMES = (None, None, 100.0, 200.0, 300.0)
NOW = 200.0  # an end date may fall exactly on it

NEW_RIGHT = 'right("formation");\ndelegable("formation");\n'
SENIOR = ('holds_right(user: User, right: String, company: Company, "senior") if\n'
          '    right = "compte" and grant in company.grants and grant.collaborator = user.email and\n'
          '    grant.firm < company.siret;\n')
DECLARANT = ('holds_right(user: User, right: String, company: Company, "declarant") if\n'
             '    right = "attestations" and grant in company.grants and grant.collaborator = user.email and\n'
             '    "declarations" in grant.scope;\n')
TWO_FIRMS = ('holds_right(user: User, right: String, company: Company, "two_firms") if\n'
             '    right = "cotisations" and company.siret in user.admin_of and\n'
             '    first in user.manages and second in user.manages and first != second;\n')
PREFIX = ('holds_right(user: User, right: String, company: Company, "prefix") if\n'
          '    right = "conges" and company.siret.startswith("7") and company.siret in user.admin_of;\n')


def _edit(file: str, old: str, new: str):
    def apply(sources: dict[str, str]) -> dict[str, str]:
        assert old in sources[file], old
        return {**sources, file: sources[file].replace(old, new)}
    return apply


def _append(file: str, text: str):
    return lambda sources: {**sources, file: sources[file] + text}


DRAFTS = {
    "the same policy": lambda sources: dict(sources),
    "a new delegable right": _append("policies.polar", NEW_RIGHT),
    "compte no longer delegable": _edit("policies.polar", 'delegable("compte");\n', ""),
    "entreprise delegable": _append("policies.polar", 'delegable("entreprise");\n'),
    "an end date no longer ends the day itself": _edit("policies.polar", "link.ends_at <= now", "link.ends_at < now"),
    "grants in force whatever their status": _edit("policies/firm.polar", "in_force(grant, user.now) and", ""),
    "collaborators no longer bounded by their firm": _edit(
        "policies/firm.polar", "firm_holds(grant.firm, right, company, user.now);\n", "delegable(right);\n"),
    "a scope read by a literal": _append("policies/firm.polar", DECLARANT),
    "identifiers compared by order": _append("policies/firm.polar", SENIOR),
    "a method call: no shapes at all": _append("policies/company.polar", PREFIX),
    "managers of two firms hold cotisations": _append("policies/company.polar", TWO_FIRMS),
}
# Compared with it, a policy's report lists exactly the rights it gives.
NOBODY = _edit("policies.polar", "    holds_right(user, right, company, _rule);",
               '    holds_right(user, right, company, _rule) and right = "nobody";')

_engines: dict[str, Engine] = {}


def engine(draft: str) -> Engine:
    if draft not in _engines:
        edit = NOBODY if draft == "nobody holds anything" else DRAFTS[draft]
        _engines[draft] = Engine(edit(read_policy(ROOT)))
    return _engines[draft]


def naive(before: Engine, after: Engine, population: Population, alter=None) -> tuple[list, list, int]:
    """Every pair, every right, under each policy: ``allow`` on the facts a decision loads."""
    gained, lost, pairs = [], [], 0
    for siret in sorted(population.people):
        for email in population.people[siret]:
            pairs += 1
            user, company = population.users[email], population.companies[siret]
            facts_before = reaching(company, user)
            facts_after = reaching(alter(company), user) if alter else facts_before
            held_before = {r for r in before.rights if before.allows(user, r, facts_before)}
            held_after = {r for r in after.rights if after.allows(user, r, facts_after)}
            gained += [(email, r, siret) for r in sorted(held_after - held_before)]
            lost += [(email, r, siret) for r in sorted(held_before - held_after)]
    return gained, lost, pairs


def listed(changes) -> list[tuple[str, str, str]]:
    return [(change.user, change.right, change.company) for change in changes]


scopes = st.frozensets(st.sampled_from(RIGHTS), max_size=4)
statuses = st.sampled_from(["active", "active", "active", "revoked", "pending"])
ends = st.sampled_from(TIMES)


@st.composite
def stores(draw) -> tuple[dict, dict, dict]:
    """A few users and companies, linked as in a real store: (users, companies, people of
    each company: its admins, the managers of its firms, its grantees, and maybe someone else)."""
    managers = {firm: draw(st.sampled_from(EMAILS)) for firm in FIRMS}
    staff = {firm: draw(st.frozensets(st.sampled_from(EMAILS), max_size=2)) for firm in FIRMS}
    users = {
        email: model.User(
            email, NOW,
            admin_of=draw(st.frozensets(st.sampled_from(COMPANIES), max_size=2)),
            manages=frozenset(firm for firm in FIRMS if managers[firm] == email),
            collaborates=frozenset(firm for firm in FIRMS if email in staff[firm]),
        )
        for email in EMAILS
    }
    companies, people = {}, {}
    for n, siret in enumerate(COMPANIES[:3]):
        delegations = []
        for i in range(draw(st.integers(0, 3))):
            firm = draw(st.sampled_from(FIRMS))
            manager = draw(st.one_of(st.just(managers[firm]), st.sampled_from(EMAILS)))
            delegations.append(model.Delegation(f"d{n}{i}", siret, manager, firm, draw(statuses), draw(scopes),
                                                draw(ends)))
        grants = []
        for i in range(draw(st.integers(0, 3))):
            firm = draw(st.sampled_from(FIRMS))
            someone = draw(st.one_of(st.sampled_from(sorted(staff[firm]) or EMAILS), st.sampled_from(EMAILS)))
            grants.append(model.Grant(f"g{n}{i}", firm, someone, siret, draw(statuses), draw(scopes), draw(ends)))
        companies[siret] = model.Company(siret, tuple(delegations), tuple(grants))
        linked = {email for email, user in users.items() if siret in user.admin_of}
        linked |= {managers[d.firm] for d in delegations} | {g.collaborator for g in grants}
        linked |= draw(st.frozensets(st.sampled_from(EMAILS), max_size=1))
        people[siret] = sorted(linked or EMAILS[:1])
    return users, companies, people


def renamed(store: tuple[dict, dict, dict], copy: int) -> tuple[dict, dict, dict]:
    """The same store under other identifiers (all distinct from the original's)."""
    users, companies, people = store
    siret = {s: f"9{copy}{s[2:]}" for s in (*COMPANIES, *FIRMS)}
    email = {e: e.replace("@", f"{copy}@") for e in EMAILS}
    link = lambda id_: f"c{copy}{id_}"  # noqa: E731
    return (
        {email[e]: replace(u, email=email[e], admin_of=frozenset(siret[s] for s in u.admin_of),
                           manages=frozenset(siret[s] for s in u.manages),
                           collaborates=frozenset(siret[s] for s in u.collaborates)) for e, u in users.items()},
        {siret[s]: model.Company(
            siret[s],
            tuple(replace(d, id=link(d.id), company=siret[d.company], manager_email=email[d.manager_email],
                          firm=siret[d.firm]) for d in c.delegations),
            tuple(replace(g, id=link(g.id), firm=siret[g.firm], collaborator=email[g.collaborator],
                          company=siret[g.company]) for g in c.grants),
        ) for s, c in companies.items()},
        {siret[s]: sorted(email[e] for e in emails) for s, emails in people.items()},
    )


@st.composite
def tweaked(draw, store: tuple[dict, dict, dict]) -> tuple[dict, dict, dict]:
    """``store`` with one thing changed, most often on a link someone reaches: a status, a
    right of a scope, an end date, a link's firm or person, or a user's memberships."""
    users, companies, people = store
    siret = draw(st.sampled_from(sorted(companies)))
    company = companies[siret]
    firms = {f for email in people[siret] for f in users[email].manages | users[email].collaborates}
    links = [("d", i) for i, d in enumerate(company.delegations) if d.firm in firms]
    links += [("g", i) for i, g in enumerate(company.grants) if g.collaborator in people[siret]]
    links = links or [("d", i) for i in range(len(company.delegations))] + [
        ("g", i) for i in range(len(company.grants))]
    what = draw(st.sampled_from(["status", "scope", "scope", "ends_at", "firm", "person", "membership"]))
    if what == "membership" or not links:
        email = draw(st.sampled_from(sorted(users)))
        group = draw(st.sampled_from(["admin_of", "manages", "collaborates"]))
        other = draw(st.sampled_from(sorted({*companies, *(f for u in users.values() for f in u.manages)})))
        members = getattr(users[email], group) ^ {other}
        return {**users, email: replace(users[email], **{group: members})}, companies, people
    kind, i = draw(st.sampled_from(links))
    old = company.delegations[i] if kind == "d" else company.grants[i]
    change = {
        "status": {"status": draw(statuses)},
        "scope": {"scope": old.scope ^ {draw(st.sampled_from(RIGHTS))}},
        "ends_at": {"ends_at": draw(st.sampled_from(TIMES))},
        "firm": {"firm": draw(st.sampled_from(sorted({d.firm for d in company.delegations} | {old.firm})))},
        "person": ({"manager_email": draw(st.sampled_from(sorted(users)))} if kind == "d"
                   else {"collaborator": draw(st.sampled_from(sorted(users)))}),
    }[what]
    new = replace(old, **change)
    if kind == "d":
        company = replace(company, delegations=(*company.delegations[:i], new, *company.delegations[i + 1:]))
    else:
        company = replace(company, grants=(*company.grants[:i], new, *company.grants[i + 1:]))
    return users, {**companies, siret: company}, people


@st.composite
def rescoped(draw, store: tuple[dict, dict, dict]) -> tuple[dict, dict, dict]:
    """``store`` with every scope drawn again: the same shapes, other scopes."""
    users, companies, people = store
    return users, {
        siret: model.Company(siret, tuple(replace(d, scope=draw(scopes)) for d in company.delegations),
                             tuple(replace(g, scope=draw(scopes)) for g in company.grants))
        for siret, company in companies.items()
    }, people


@st.composite
def populations(draw) -> Population:
    """A small store and renamed copies of it: one as it is, one with other scopes, one
    with one detail changed. Many pairs share a shape while their identifiers differ,
    and many differ only by their scopes or by one detail."""
    store = draw(stores())
    users, companies, people = dict(store[0]), dict(store[1]), dict(store[2])
    copies = (renamed(store, 1), draw(rescoped(renamed(store, 2))), draw(tweaked(renamed(store, 3))))
    for more in copies:
        users |= more[0]
        companies |= more[1]
        people |= more[2]
    return Population(NOW, people, companies, users)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(population=populations(), draft=st.sampled_from(sorted(DRAFTS)), replaced=st.booleans())
def test_impact_of_a_draft_equals_the_pair_by_pair_comparison(population, draft, replaced):
    # The shipped policy replaced by the draft, or the draft by a policy that gives nothing
    # (whose report then lists every right the draft gives, pair by pair).
    before, after = (engine("the same policy"), engine(draft)) if replaced else (
        engine(draft), engine("nobody holds anything"))

    found = impact.compare(before, after, population)

    gained, lost, pairs = naive(before, after, population)
    assert (listed(found.gained), listed(found.lost), found.pairs_checked) == (gained, lost, pairs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(population=populations(), earlier=populations(), draft=st.sampled_from(sorted(DRAFTS)), replaced=st.booleans())
def test_impact_over_a_census_equals_the_pair_by_pair_comparison(population, earlier, draft, replaced):
    """The census's pairs and example facts, with the running policy's answers recalled
    from an earlier report over other data, give the naive comparison's lists."""
    before, after = (engine("the same policy"), engine(draft)) if replaced else (
        engine(draft), engine("nobody holds anything"))
    assume(impact._Grouping.choose(before, after).by_equality)  # measure() takes a census only then

    with tempfile.TemporaryDirectory() as folder:
        impact.compare_census(before, after, _census_of(earlier), "", Path(folder))
        found, _ = impact.compare_census(before, after, _census_of(population), "", Path(folder))

    gained, lost, pairs = naive(before, after, population)
    assert (listed(found.gained), listed(found.lost), found.pairs_checked) == (gained, lost, pairs)


def _census_of(population: Population) -> census.Census:
    taken = census.Census(identity=(), now=NOW, built=0.0, reread_from=None, applied=set(), landmark=())
    taken.take(population)
    return taken


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(population=populations(), data=st.data())
def test_impact_of_a_delegation_change_equals_the_pair_by_pair_comparison(population, data):
    delegations = [d for company in population.companies.values() for d in company.delegations]
    if not delegations:
        return
    target = data.draw(st.sampled_from(delegations))
    scope = data.draw(st.one_of(st.none(), scopes))

    def alter(company: model.Company) -> model.Company:
        changed = (
            (replace(d, status="revoked") if scope is None else replace(d, scope=scope)) if d.id == target.id else d
            for d in company.delegations
        )
        return model.Company(company.siret, tuple(changed), company.grants)

    shipped = engine("the same policy")
    found = impact.compare(shipped, shipped, population, alter)

    gained, lost, pairs = naive(shipped, shipped, population, alter)
    assert (listed(found.gained), listed(found.lost), found.pairs_checked) == (gained, lost, pairs)


@pytest.mark.parametrize(("draft", "method"), [
    ("a new delegable right", "one question per shape and right"),
    ("a scope read by a literal", "one question per shape (identifiers by equality), every right"),
    ("identifiers compared by order", "one question per shape (identifiers in order)"),
    ("a method call: no shapes at all", "every pair asked on its own"),
])
def test_each_draft_of_the_property_test_takes_the_grouping_it_is_meant_to_exercise(draft, method):
    found = impact.compare(engine("the same policy"), engine(draft), Population(NOW, {}, {}, {}))

    assert found.method.startswith(method), found.method


def test_rights_a_draft_leaves_alone_are_asked_once_for_both_policies():
    found = impact.compare(engine("the same policy"), engine("a new delegable right"), Population(NOW, {}, {}, {}))

    assert "asked once for both policies: attestations, compte, conges" in found.method
