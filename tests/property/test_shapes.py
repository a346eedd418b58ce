"""The shape memo never changes an answer: for random facts, the memoised table equals
the policy asked directly on the original facts, right by right, whether the memo keys
them by ``shapes.canonical`` or, for the facts a decision loads, by the coarser
``impact_shapes.question``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz import impact_shapes, model, shapes
from authz.engine import Engine, read_policy
from authz.store import reaching
from tests.support import ROOT

EMAILS = ["a@x.example", "b@x.example", "c@y.example"]
SIRETS = ["73282932000074", "55208131766522", "44306184100047", "12345678901237"]
RIGHTS = ["declarations", "cotisations", "compte", "entreprise", "conges"]
TIMES = [None, 100.0, 200.0, 300.0]


@pytest.fixture(scope="module")
def memoised() -> Engine:
    return Engine(ROOT, memo_size=64)  # small: evictions are exercised too


@pytest.fixture(scope="module")
def direct() -> Engine:
    engine = Engine(ROOT)
    engine.memoizable = False
    return engine


scopes = st.frozensets(st.sampled_from(RIGHTS), max_size=4)
statuses = st.sampled_from(["pending", "active", "active", "revoked", "expired"])
delegations = st.builds(
    model.Delegation, id=st.sampled_from(["d1", "d2", "d3"]), company=st.sampled_from(SIRETS),
    manager_email=st.sampled_from(EMAILS), firm=st.one_of(st.none(), st.sampled_from(SIRETS)),
    status=statuses, scope=scopes, ends_at=st.sampled_from(TIMES),
)
grants = st.builds(
    model.Grant, id=st.sampled_from(["g1", "g2"]), firm=st.sampled_from(SIRETS),
    collaborator=st.sampled_from(EMAILS), company=st.sampled_from(SIRETS),
    status=statuses, scope=scopes, ends_at=st.sampled_from(TIMES),
)
users = st.builds(
    model.User, email=st.sampled_from(EMAILS), now=st.sampled_from([50.0, 100.0, 150.0, 250.0, 350.0]),
    admin_of=st.frozensets(st.sampled_from(SIRETS), max_size=2),
    manages=st.frozensets(st.sampled_from(SIRETS), max_size=2),
    collaborates=st.frozensets(st.sampled_from(SIRETS), max_size=2),
)
companies = st.builds(
    model.Company, siret=st.sampled_from(SIRETS),
    delegations=st.lists(delegations, max_size=3).map(tuple), grants=st.lists(grants, max_size=3).map(tuple),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=users, company=companies)
def test_memoised_table_equals_direct_answers(memoised, direct, user, company):
    table = memoised.rights_table(user, company)
    expected = direct.rights_table(user, company)
    for right in memoised.rights:
        assert (table[right] is not None) == direct.allows(user, right, company), right
        assert table[right] == expected[right], right


@pytest.fixture(scope="module")
def shared() -> Engine:
    return Engine(ROOT)  # one memo for every example: questions of one key meet across examples


# Facts as the store holds them and a decision loads them (``store.reaching``): few
# firms and scopes, so that questions of one key but other identifiers meet often.
FIRMS = ["11111111100010", "22222222200020"]
COMPANY = "73282932000074"
small_scopes = st.frozensets(st.sampled_from(["compte", "conges"]))
loaded_users = st.builds(
    model.User, email=st.just("a@x.example"), now=st.sampled_from([50.0, 150.0, 250.0, 350.0]),
    admin_of=st.frozensets(st.sampled_from([COMPANY, SIRETS[1]]), max_size=1),
    manages=st.frozensets(st.sampled_from(FIRMS), max_size=1),
    collaborates=st.frozensets(st.sampled_from(FIRMS), max_size=2),
)


@st.composite
def loaded_facts(draw) -> tuple[model.User, model.Company]:
    user = draw(loaded_users)
    count = draw(st.integers(0, 2))
    delegations = tuple(
        model.Delegation(f"d{i}-{draw(st.integers(0, 9))}", COMPANY, "m@x.example", draw(st.sampled_from(FIRMS)),
                         draw(statuses), draw(small_scopes), draw(st.sampled_from(TIMES)))
        for i in range(count)
    )
    grants = tuple(
        model.Grant(f"g{i}-{draw(st.integers(0, 9))}", draw(st.sampled_from(FIRMS)), "a@x.example", COMPANY,
                    draw(statuses), draw(small_scopes), draw(st.sampled_from(TIMES)))
        for i in range(draw(st.integers(0, 2)))
    )
    return user, reaching(model.Company(COMPANY, delegations, grants), user)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(facts=loaded_facts())
def test_answers_shared_by_question_equal_direct_answers(shared, direct, facts):
    user, company = facts
    assert impact_shapes.question(user, "compte", company) is not None
    for right in shared.rights:
        assert shared.answer(user, right, company) == direct.answer(user, right, company), right


def test_shipped_policy_is_opaque_so_shapes_are_used(memoised):
    assert memoised.memoizable, memoised.opacity_problems
    assert memoised.by_question


def test_a_question_is_keyed_by_shape_only_for_the_links_the_user_reaches():
    manager = model.User("m@x.example", 10.0, manages=frozenset({"F"}))
    other = model.Delegation("d-other", "73282932000074", "o@y.example", "G", "active", frozenset({"compte"}), None)
    company = model.Company("73282932000074", (other,))

    assert impact_shapes.question(manager, "compte", company) is None
    assert impact_shapes.question(manager, "compte", reaching(company, manager)) is not None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('holds_right(u: User, r: String, c: Company, "x") if c.siret.startswith("75") and u = u and r = r;', "method"),
        ('holds_right(u: User, r: String, c: Company, "x") if u.now - 3600 > 0 and c = c and r = r;', "arithmetic"),
        ('holds_right(u: User, r: String, c: Company, "x") if c.siret = "73282932000074" and u = u and r = r;', "identifier"),
        ('holds_right(u: User, r: String, c: Company, "x") if c.siret < "5" and u = u and r = r;', "order"),
    ],
)
def test_a_policy_that_could_see_through_placeholders_is_evaluated_directly(line, problem):
    sources = read_policy(ROOT)
    sources["policies/extra.polar"] = line + "\n"
    assert any(problem in reason for reason in shapes.opacity_problems(sources))
    assert not Engine(sources).memoizable


def test_questions_of_the_same_shape_share_one_evaluation(memoised):
    def client(siret: str, delegation_id: str) -> model.Company:
        return model.Company(siret, (model.Delegation(delegation_id, siret, "m@x.example", "F", "active",
                                                      frozenset({"compte"}), None),))

    manager = model.User("m@x.example", 10.0, manages=frozenset({"F"}))
    first = shapes.canonical(manager, client("73282932000074", "d-one"))
    second = shapes.canonical(manager, client("55208131766522", "d-two"))
    assert first == second
    assert memoised.rights_table(manager, client("55208131766522", "d-two"))["compte"] == "firm_manager"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(asked=st.lists(st.tuples(users, companies, st.sampled_from(RIGHTS)), min_size=1, max_size=30))
def test_the_memo_never_holds_more_than_its_bound_of_shapes_and_links(asked):
    # A long-lived worker meets ever new shapes; what the memo keeps stays bounded by the
    # facts it holds (a shape with many links weighs more), and answers stay right.
    engine = Engine(ROOT, memo_size=12)
    for user, company, right in asked:
        engine.answer(user, right, company)
        held = sum(weight for weight, _ in engine._memo.values())
        assert held == engine._memo_weight <= 12
    for user, company, right in asked:
        assert engine.answer(user, right, company) == engine._answer(user, right, company)
