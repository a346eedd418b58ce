"""Two pairs with the same impact shape are the same facts under a renaming of identifiers
and an order-keeping renaming of instants. The check is a search for such a renaming,
independent of how ``shape`` names things; the pairs are random, or a renamed copy of
a random pair with one detail of its facts changed (the hard case for a shape)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from authz import model
from authz.impact_shapes import shape
from authz.store import reaching

EMAILS = ("a@x.example", "b@x.example")
SIRETS = ("73282932000074", "55208131766522", "44306184100047")
RIGHTS = ("declarations", "compte", "conges")
TIMES = (None, 100.0, 200.0, 300.0)
GROUPS = ("admin_of", "manages", "collaborates")

scopes = st.frozensets(st.sampled_from(RIGHTS), max_size=2)
statuses = st.sampled_from(["active", "revoked"])
ids = st.sampled_from(["d1", "d2", "g1", "g2"])


@st.composite
def pairs(draw) -> tuple[model.User, model.Company]:
    siret = draw(st.sampled_from(SIRETS))
    delegations = draw(st.lists(st.builds(
        model.Delegation, id=ids, company=st.sampled_from(SIRETS), manager_email=st.sampled_from(EMAILS),
        firm=st.sampled_from(SIRETS), status=statuses, scope=scopes, ends_at=st.sampled_from(TIMES),
    ), max_size=2, unique_by=lambda d: d.id))
    grants = draw(st.lists(st.builds(
        model.Grant, id=ids, firm=st.sampled_from(SIRETS), collaborator=st.sampled_from(EMAILS),
        company=st.sampled_from(SIRETS), status=statuses, scope=scopes, ends_at=st.sampled_from(TIMES),
    ), max_size=2, unique_by=lambda g: g.id))
    user = model.User(
        draw(st.sampled_from(EMAILS)), draw(st.sampled_from([100.0, 150.0, 250.0])),
        admin_of=draw(st.frozensets(st.sampled_from(SIRETS), max_size=2)),
        manages=draw(st.frozensets(st.sampled_from(SIRETS), max_size=2)),
        collaborates=draw(st.frozensets(st.sampled_from(SIRETS), max_size=2)),
    )
    return user, model.Company(siret, tuple(delegations), tuple(grants))


def reached(pair):
    user, company = pair
    return user, reaching(company, user)


def identifiers(pair) -> list[str]:
    user, company = pair
    found = {user.email, company.siret, *user.admin_of, *user.manages, *user.collaborates}
    for link in (*company.delegations, *company.grants):
        found |= set(fields(link))
    return sorted(found - {None})


def instants(pair) -> list[float]:
    user, company = pair
    ends = {link.ends_at for link in (*company.delegations, *company.grants)} - {None}
    return sorted({user.now, *ends})


def fields(link) -> tuple:
    """A link's identifiers."""
    if isinstance(link, model.Delegation):
        return link.id, link.company, link.manager_email, link.firm
    return link.id, link.firm, link.collaborator, link.company


def renamed(pair, names: dict, times: dict):
    user, company = pair
    name = lambda value: None if value is None else names[value]  # noqa: E731
    time = lambda value: None if value is None else times[value]  # noqa: E731
    return (
        model.User(name(user.email), times[user.now], *(frozenset(map(name, getattr(user, g))) for g in GROUPS)),
        model.Company(
            name(company.siret),
            tuple(replace(d, id=name(d.id), company=name(d.company), manager_email=name(d.manager_email),
                          firm=name(d.firm), ends_at=time(d.ends_at)) for d in company.delegations),
            tuple(replace(g, id=name(g.id), firm=name(g.firm), collaborator=name(g.collaborator),
                          company=name(g.company), ends_at=time(g.ends_at)) for g in company.grants),
        ),
    )


def same_facts_renamed(a, b) -> bool:
    """Whether a renaming of identifiers, and of instants keeping their order, turns a into b.

    The instants' renaming is forced by their order; links are matched one by one,
    binding their identifiers, with backtracking; identifiers seen only in the
    memberships must then agree on which groups hold each.
    """
    (user_a, company_a), (user_b, company_b) = a, b
    times_a, times_b = instants(a), instants(b)
    if len(times_a) != len(times_b):
        return False
    times = dict(zip(times_a, times_b, strict=True))

    def bind(names: dict, values) -> dict | None:
        names = dict(names)
        images = set(names.values())
        for x, y in values:
            if (x is None) != (y is None):
                return None
            if x is None:
                continue
            if x in names:
                if names[x] != y:
                    return None
            elif y in images:
                return None
            else:
                names[x] = y
                images.add(y)
        return names

    def alike(x, y) -> bool:
        ends = None if x.ends_at is None else times[x.ends_at]
        return type(x) is type(y) and (x.status, x.scope, ends) == (y.status, y.scope, y.ends_at)

    def memberships_agree(names: dict) -> bool:
        images = set(names.values())
        if any({names[x] for x in getattr(user_a, g) if x in names} != {y for y in getattr(user_b, g) if y in images}
               for g in GROUPS):
            return False

        def patterns(user, known) -> list:
            alone = {x for g in GROUPS for x in getattr(user, g)} - known
            return sorted(tuple(x in getattr(user, g) for g in GROUPS) for x in alone)

        return patterns(user_a, set(names)) == patterns(user_b, images)

    def match(names: dict, left: list, right: list) -> bool:
        if not left:
            return not right and memberships_agree(names)
        for i, candidate in enumerate(right):
            if alike(left[0], candidate):
                bound = bind(names, zip(fields(left[0]), fields(candidate), strict=True))
                if bound is not None and match(bound, left[1:], right[:i] + right[i + 1:]):
                    return True
        return False

    start = bind({}, [(user_a.email, user_b.email), (company_a.siret, company_b.siret)])
    return (
        times[user_a.now] == user_b.now and start is not None
        and match(start, [*company_a.delegations, *company_a.grants], [*company_b.delegations, *company_b.grants])
    )


@st.composite
def tweaked_copies(draw, pair):
    """``pair`` renamed (identifiers shuffled, instants shifted in order), then maybe one
    detail of the facts a decision loads changed."""
    names = identifiers(pair)
    shuffled = draw(st.permutations([f"{n}{name}" for n, name in enumerate(names)]))
    user, company = reached(renamed(pair, dict(zip(names, shuffled, strict=True)),
                                   {t: t + 1000.0 for t in instants(pair)}))
    what = draw(st.sampled_from(["nothing", "status", "scope", "ends_at", "ends_at", "ends_at", "membership",
                                 "identifier", "identifier"]))
    links = [*company.delegations, *company.grants]
    known = identifiers((user, company))
    if what == "membership" or not links:
        group = draw(st.sampled_from(GROUPS))
        other = draw(st.sampled_from([*known, "an-unrelated-siret"]))
        return replace(user, **{group: getattr(user, group) ^ {other}}), company
    i = draw(st.integers(0, len(links) - 1))
    if what == "identifier":
        field = draw(st.sampled_from(["id", "company", "firm"]))
        change = {field: draw(st.sampled_from([*known, "a-new-identifier"]))}
    else:
        change = {
            "nothing": {},
            "status": {"status": draw(statuses)},
            "scope": {"scope": links[i].scope ^ {draw(st.sampled_from(RIGHTS))}},
            "ends_at": {"ends_at": draw(st.sampled_from([None, user.now, *instants((user, company)), 1175.0, 9999.0]))},
        }[what]
    links[i] = replace(links[i], **change)
    return user, model.Company(company.siret, tuple(x for x in links if isinstance(x, model.Delegation)),
                               tuple(x for x in links if isinstance(x, model.Grant)))


@settings(max_examples=800, deadline=None)
@given(data=st.data())
def test_pairs_of_the_same_shape_are_the_same_facts_renamed(data):
    first = reached(data.draw(pairs()))
    second = data.draw(st.one_of(pairs().map(reached), tweaked_copies(first)))

    if shape(*first) == shape(*second):
        assert same_facts_renamed(first, second)


@settings(max_examples=200, deadline=None)
@given(pair=pairs())
def test_the_shape_reads_the_links_a_decision_loads_and_no_others(pair):
    user, company = pair

    assert shape(user, company) == shape(user, reaching(company, user))


@settings(max_examples=100, deadline=None)
@given(pair=pairs())
def test_the_search_finds_the_renaming_between_a_pair_and_its_renamed_copy(pair):
    first = reached(pair)
    names = identifiers(first)
    copy = renamed(first, {name: f"{name}-copy" for name in names}, {t: t * 2 for t in instants(first)})

    assert same_facts_renamed(first, copy)


def test_a_link_ending_at_the_instant_is_not_shaped_like_one_that_ended_before():
    manager = model.User("m@x.example", 150.0, manages=frozenset({"F"}))
    ending = model.Company("73282932000074", (model.Delegation("d", "73282932000074", "m@x.example", "F", "active",
                                                                frozenset({"compte"}), 150.0),))
    ended = replace(ending, delegations=(replace(ending.delegations[0], ends_at=100.0),))
    later = replace(ending, delegations=(replace(ending.delegations[0], ends_at=200.0),))

    assert len({shape(manager, ending), shape(manager, ended), shape(manager, later)}) == 3


def test_clients_of_a_firm_differing_only_by_identifiers_share_a_shape():
    def client(siret: str, delegation_id: str) -> model.Company:
        return model.Company(siret, (model.Delegation(delegation_id, siret, "m@x.example", "F", "active",
                                                      frozenset({"compte"}), None),))

    manager = model.User("m@x.example", 10.0, manages=frozenset({"F"}))

    assert shape(manager, client("73282932000074", "d-one")) == shape(manager, client("55208131766522", "d-two"))
