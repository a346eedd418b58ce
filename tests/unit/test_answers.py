"""The answer cache: what it keeps, and that nothing survives its truth."""

from hypothesis import given
from hypothesis import strategies as st

from authz import model
from authz.answers import AnswerCache, Entry, Found

USER = model.User("ana@example.org", now=0.0)
COMPANY = model.Company("10000000000016")


def entry(valid_until: float = 100.0) -> Entry:
    return Entry(USER, COMPANY, valid_until, registered=True, pending=())


def test_an_answer_is_served_until_its_horizon_only():
    cache = AnswerCache()
    generation = cache.sync(("policy", 1))
    cache.put(("ana", "c"), entry(valid_until=100.0), generation)
    assert cache.get(("ana", "c"), now=99.9) is not None
    assert cache.get(("ana", "c"), now=100.0) is None


def test_a_new_data_version_forgets_answers_and_searches():
    cache = AnswerCache()
    old = cache.sync(("policy", 1))
    cache.put(("ana", "c"), entry(), old)
    cache.keep_found(("resources", "ana", "compte"), Found(("c",), 100.0), old)
    cache.sync(("policy", 2))
    assert cache.get(("ana", "c"), now=0.0) is None
    assert cache.found(("resources", "ana", "compte"), now=0.0) is None


def test_an_answer_computed_under_an_older_generation_is_not_stored():
    # A slow request read data version 1; meanwhile a write made it 2 and another request
    # moved the cache on: the slow request's answer, from the old rows, must not be kept.
    cache = AnswerCache()
    slow = cache.sync(("policy", 1))
    cache.sync(("policy", 2))
    cache.put(("ana", "c"), entry(), slow)
    cache.keep_found(("resources", "ana", "compte"), Found(("c",), 100.0), slow)
    assert cache.get(("ana", "c"), now=0.0) is None
    assert cache.found(("resources", "ana", "compte"), now=0.0) is None


def test_searches_are_bounded_by_their_items_in_all():
    cache = AnswerCache(size=10)
    generation = cache.sync(("policy", 1))
    cache.keep_found(("resources", "a", "r"), Found(tuple("abcde"), 100.0), generation)
    cache.keep_found(("resources", "b", "r"), Found(tuple("abc"), 100.0), generation)
    cache.keep_found(("resources", "c", "r"), Found(tuple("ab"), 100.0), generation)  # evicts the oldest
    assert cache.found(("resources", "a", "r"), now=0.0) is None
    assert cache.found(("resources", "b", "r"), now=0.0).items == ("a", "b", "c")
    cache.keep_found(("resources", "d", "r"), Found(tuple("abcdefghijk"), 100.0), generation)  # too big alone
    assert cache.found(("resources", "d", "r"), now=0.0) is None


def test_a_zero_size_cache_keeps_nothing():
    cache = AnswerCache(size=0)
    generation = cache.sync(("policy", 1))
    cache.put(("ana", "c"), entry(), generation)
    cache.keep_found(("resources", "ana", "compte"), Found((), 100.0), generation)
    assert cache.get(("ana", "c"), now=0.0) is None
    assert cache.found(("resources", "ana", "compte"), now=0.0) is None


def _cache_holding(*pairs: tuple[str, str]) -> AnswerCache:
    cache = AnswerCache()
    generation = cache.sync(("policy", 1))
    for pair in pairs:
        cache.put(pair, entry(), generation)
    cache.keep_found(("resources", "ana", "compte"), Found(("c",), 100.0), generation)
    return cache


def _kept(cache: AnswerCache, *pairs: tuple[str, str]) -> set[tuple[str, str]]:
    return {pair for pair in pairs if cache.get(pair, now=0.0) is not None}


PAIRS = (("ana", "c1"), ("ana", "c2"), ("ben", "c1"), ("ben", "c2"))


def test_a_new_data_version_forgets_only_the_answers_of_the_users_and_companies_its_changes_named():
    cache = _cache_holding(*PAIRS)
    asked = []
    cache.sync(("policy", 3), lambda old, new: asked.append((old, new)) or frozenset({"user:ana", "keys"}))
    assert asked == [(1, 3)]
    assert _kept(cache, *PAIRS) == {("ben", "c1"), ("ben", "c2")}
    assert cache.found(("resources", "ana", "compte"), now=0.0) is None  # searches: at any change
    cache.sync(("policy", 4), lambda old, new: frozenset({"company:c2"}))
    assert _kept(cache, *PAIRS) == {("ben", "c1")}


def test_a_new_data_version_whose_changes_are_unknown_or_everything_forgets_every_answer():
    for changes in (None, frozenset({"*"}), frozenset({"user:ben", "*"})):
        cache = _cache_holding(*PAIRS)
        cache.sync(("policy", 2), lambda old, new, changes=changes: changes)
        assert _kept(cache, *PAIRS) == set()


def test_a_new_policy_or_a_version_that_went_back_forgets_every_answer_without_asking_what_changed():
    def never(old, new):
        raise AssertionError("the changes are not read")

    for generation in (("another policy", 2), ("policy", 0), ("policy", "not a number")):
        cache = _cache_holding(*PAIRS)
        cache.sync(generation, never)
        assert _kept(cache, *PAIRS) == set()


users = st.sampled_from(["ana", "ben", "cleo", "dan"])
companies = st.sampled_from(["c1", "c2", "c3", "c4", "c5"])


@given(puts=st.lists(st.tuples(users, companies, st.integers(0, 3)), max_size=40),
       named=st.sets(st.one_of(users.map(lambda u: f"user:{u}"), companies.map(lambda c: f"company:{c}"),
                               st.just("keys")), max_size=4),
       size=st.integers(1, 12))
def test_a_change_forgets_exactly_the_answers_it_names_whatever_was_kept_or_evicted_before(puts, named, size):
    cache = AnswerCache(size=size)
    generation = cache.sync(("policy", 1))
    for user, company, links in puts:  # entries of various weights: the oldest are evicted to make room
        grants = tuple(model.Grant(f"g{n}", "f", user, company, "active", frozenset(), None) for n in range(links))
        cache.put((user, company), Entry(model.User(user, 0.0), model.Company(company, grants=grants), 100.0,
                                         registered=True, pending=()), generation)
    before = {key for key in cache._answers.entries}

    cache.sync(("policy", 2), lambda old, new: frozenset(named))

    touched = {key for key in before if f"user:{key[0]}" in named or f"company:{key[1]}" in named}
    assert set(cache._answers.entries) == before - touched
    # Its indexes hold exactly the answers kept, so the next change finds them all.
    assert {key for keys in cache._by_user.values() for key in keys} == set(cache._answers.entries)
    assert {key for keys in cache._by_company.values() for key in keys} == set(cache._answers.entries)


# ---- facts read by another worker (``fresh``) -------------------------------------------


def test_facts_read_elsewhere_hold_until_a_change_names_their_user_or_company():
    cache = AnswerCache()
    cache.sync(("policy", 1))
    assert cache.fresh(("ana", "c1"), 1)
    cache.sync(("policy", 3), lambda old, new: frozenset({"user:ana"}))
    assert not cache.fresh(("ana", "c1"), 1)  # ana changed at 2 or 3: facts read at 1 may be wrong
    assert cache.fresh(("ben", "c1"), 1)
    assert cache.fresh(("ana", "c1"), 3)  # read after the change
    cache.sync(("policy", 4), lambda old, new: frozenset({"company:c1"}))
    assert not cache.fresh(("ben", "c1"), 3)
    assert cache.fresh(("ben", "c2"), 1)


def test_facts_read_before_this_cache_knows_the_changes_or_after_its_version_are_refused():
    cache = AnswerCache()
    assert not cache.fresh(("ana", "c1"), 1)  # a cache that never synced knows nothing
    cache.sync(("policy", 5))
    assert not cache.fresh(("ana", "c1"), 4)  # changes between 4 and 5 were never seen here
    assert not cache.fresh(("ana", "c1"), 6)  # read at a version this cache has not reached
    assert not cache.fresh(("ana", "c1"), "5")
    assert cache.fresh(("ana", "c1"), 5)


def test_an_unknown_change_a_new_policy_or_a_version_that_went_back_refuses_facts_read_before():
    for generation, changes in ((("policy", 7), None), (("policy", 7), frozenset({"*"})),
                                (("another policy", 7), frozenset()), (("policy", 2), frozenset())):
        cache = AnswerCache()
        cache.sync(("policy", 5))
        cache.sync(generation, lambda old, new, changes=changes: changes)
        assert not cache.fresh(("ana", "c1"), 5)
        assert cache.fresh(("ana", "c1"), generation[1])


def test_too_many_changed_scopes_to_remember_refuses_facts_read_before(monkeypatch):
    monkeypatch.setattr("authz.answers.CHANGES_REMEMBERED", 2)
    cache = AnswerCache()
    cache.sync(("policy", 1))
    cache.sync(("policy", 2), lambda old, new: frozenset({"user:a", "user:b", "user:c"}))
    assert not cache.fresh(("ben", "c1"), 1)  # ben was not named, but the names were not kept
    assert cache.fresh(("ben", "c1"), 2)


SCOPES = ["user:ana", "user:ben", "company:c1", "company:c2", "keys", "*"]


@given(log=st.lists(st.sets(st.sampled_from(SCOPES), max_size=2), min_size=1, max_size=12),
       moves=st.lists(st.tuples(st.integers(0, 12), st.booleans(), st.booleans()), min_size=1, max_size=12),
       tag=st.integers(0, 12), user=st.sampled_from(["ana", "ben", "cleo"]),
       company=st.sampled_from(["c1", "c2", "c3"]))
def test_facts_judged_fresh_were_named_by_no_change_since_they_were_read(log, moves, tag, user, company):
    # ``log[v - 1]``: the scopes data version v changed. The cache moves to versions in any
    # order, now and then under another policy or without knowing what changed.
    def changed(old, new):
        return frozenset().union(*log[old:new])

    cache = AnswerCache()
    for target, policy_changes, history_lost in moves:
        version = min(target, len(log))
        cache.sync(("another policy" if policy_changes else "policy", version),
                   (lambda old, new: None) if history_lost else changed)
    at = cache._generation[1]
    if cache.fresh((user, company), tag):
        assert tag <= at
        since = frozenset().union(*log[tag:at])
        assert not since & {f"user:{user}", f"company:{company}", "*"}, (tag, at, since)
    assert cache.fresh((user, company), at)  # facts read at the version the cache is at always hold
