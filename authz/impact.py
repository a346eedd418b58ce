"""The impact of a change: who would gain or lose which right on which company.

Every (user, company) pair of the store is asked, under the policy before and after
the change, which rights the entry rule ``allow`` gives; the report lists the
differences. Asking the policy is the cost (one ``allow`` query takes milliseconds,
and a national store has about two million pairs), so pairs are grouped by the shape
of their facts and each group is asked once, in the coarsest grouping both policies
allow (``authz.impact_shapes``):

* shapes with identifiers compared by equality, asked right by right with each
  scope reduced to whether it holds that right (a few thousand questions for a
  national store), and a right the change leaves to the same rules asked once for
  both policies (``authz.policy_reading``);
* the same shapes, asked for every right at once;
* the engine's own shapes (``authz.shapes``: identifiers keep their order);
* no grouping at all, when a policy could see through shapes (``Engine.memoizable``).

The answers are those of the straightforward comparison, pair by pair and right by
right; only the number of questions changes. ``Impact.method`` says which grouping
was used and why not a coarser one.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from authz import census, impact_parallel, impact_shapes, model, pairs, policy_reading, shapes
from authz.engine import Engine
from authz.pairs import Population
from authz.store import Database, reaching

Alter = Callable[[model.Company], model.Company]
# The facts of a pair, built only when the policy must be asked about them.
Facts = Callable[[], tuple[model.User, model.Company]]


@dataclass(frozen=True)
class Change:
    """One (user, right, company) that a change gives or takes away."""

    user: str
    right: str
    company: str


@dataclass(frozen=True)
class Impact:
    gained: tuple[Change, ...] = field(default_factory=tuple)
    lost: tuple[Change, ...] = field(default_factory=tuple)
    pairs_checked: int = 0
    shapes: int = 0  # groups of pairs with the same facts up to renaming
    questions: int = 0  # allow queries asked of the two policies
    seconds: float = 0.0
    method: str = ""

    def by_right(self) -> dict[str, tuple[int, int]]:
        """Right -> (gained, lost) counts, rights in order."""
        gained = Counter(change.right for change in self.gained)
        lost = Counter(change.right for change in self.lost)
        return {right: (gained[right], lost[right]) for right in sorted(gained.keys() | lost.keys())}


# A report over a national store can list hundreds of thousands of changes: the lists
# stop here (in order: company, then person, then right); the counts are always complete.
LISTED_AT_MOST = 10_000


def document(found: Impact, listed_at_most: int = LISTED_AT_MOST) -> dict:
    """The report as JSON-ready data: counts per right, and the first changes of each list."""
    return {
        "counts": {"gained": len(found.gained), "lost": len(found.lost), "pairs_checked": found.pairs_checked,
                   "shapes": found.shapes, "questions": found.questions},
        "by_right": {right: {"gained": gained, "lost": lost} for right, (gained, lost) in found.by_right().items()},
        "gained": [asdict(change) for change in found.gained[:listed_at_most]],
        "lost": [asdict(change) for change in found.lost[:listed_at_most]],
        "truncated": len(found.gained) > listed_at_most or len(found.lost) > listed_at_most,
        "seconds": round(found.seconds, 3),
        "method": found.method,
    }


def measure(db: Database, before: Engine, after: Engine, now: float, alter: Alter | None = None,
            companies: list[str] | None = None, workers: int = 1, census_folder: Path | None = None) -> Impact:
    """Load the pairs of every company (or of ``companies``) at instant ``now`` and compare.

    Given a ``census_folder``, a whole-store report over a policy change takes the
    pairs from the census kept there (``authz.census``) when the two policies allow
    shapes by equality; otherwise it reads the whole store, split over ``workers``
    forked processes if more than one.
    """
    started = time.perf_counter()
    seen: set
    with _collector_paused():
        taken = None
        if census_folder is not None and companies is None and alter is None \
                and _Grouping.choose(before, after).by_equality:
            taken = census.current(db, now, census_folder)
        if taken is not None:
            assert census_folder is not None
            found, seen = compare_census(before, after, *taken, census_folder)
        elif companies is None and workers > 1 and impact_parallel.available():
            with db.transaction(write=False) as tx:
                bounds = pairs.shares(tx, workers)

            def share(first: str | None, until: str | None) -> tuple:
                with db.transaction(write=False) as tx:
                    population = pairs.load_all(tx, now, first, until)
                found, seen = _compare(before, after, population, alter)
                return found, {hash(key) for key in seen}

            found, seen = _merge(impact_parallel.run(db, bounds, share))
        else:
            with db.transaction(write=False) as tx:
                population = pairs.load_all(tx, now) if companies is None else pairs.load_some(tx, companies, now)
            found, seen = _compare(before, after, population, alter)
            del population
    return replace(found, shapes=len(seen), seconds=time.perf_counter() - started)


def prepare(db: Database, running: Engine, now: float, place: Path) -> census.Census | None:
    """Build the census of ``db`` in folder ``place`` from the whole store, and ask the
    ``running`` policy about each of its shapes: the next report takes seconds.

    None: the database has no lasting identity (SQLite in memory), so no census.
    """
    taken = census.current(db, now, place, rebuild=True)
    if taken is None:
        return None
    if _Grouping.choose(running, running).by_equality:  # else reports never use a census
        with _collector_paused():
            compare_census(running, running, *taken, place)
    return taken[0]


def _merge(shares: list[tuple[Impact, set]]) -> tuple[Impact, set]:
    """One report from the reports of consecutive shares of the companies."""
    seen: set = set()
    for _, keys in shares:
        seen |= keys
    found = Impact(
        gained=tuple(change for share, _ in shares for change in share.gained),
        lost=tuple(change for share, _ in shares for change in share.lost),
        pairs_checked=sum(share.pairs_checked for share, _ in shares),
        questions=sum(share.questions for share, _ in shares),
        method=shares[0][0].method if shares else "",
    )
    return found, seen


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while millions of facts are built.

    The facts hold no cycles; each collection would walk all of them again, which
    costs a third of the time on a national store.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compare(before: Engine, after: Engine, population: Population, alter: Alter | None = None) -> Impact:
    """Compare the rights ``allow`` gives under ``before`` and under ``after`` for every pair.

    ``alter`` turns a company's facts into the facts after a data change (None: the
    data stay as they are, only the policy changes).
    """
    found, seen = _compare(before, after, population, alter)
    return replace(found, shapes=len(seen))


def _sides(before: Engine, after: Engine) -> tuple[_Side, _Side, str]:
    """The two policies' sides of a comparison, and how pairs are grouped."""
    grouping = _Grouping.choose(before, after)
    old = new = _Side(before, grouping)
    alike: frozenset[str] = frozenset()
    if after is not before:
        if grouping.by_right:
            both = set(before.rights) & set(after.rights)
            alike = policy_reading.rights_answered_alike(before.sources, after.sources, both)
        new = _Side(after, grouping, twin=old, alike=alike)
    method = grouping.describe()
    if alike:
        method += f"; asked once for both policies: {', '.join(sorted(alike))} (the same rules decide them)"
    return old, new, method


def _questions(old: _Side, new: _Side) -> int:
    return old.questions + (new.questions if new is not old else 0)


def _compare(before: Engine, after: Engine, population: Population,
             alter: Alter | None) -> tuple[Impact, set[Hashable]]:
    old, new, method = _sides(before, after)
    key_of = old.grouping.key
    known: dict[Hashable, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    gained: list[Change] = []
    lost: list[Change] = []
    checked = 0
    for user, company in population.pairs():
        checked += 1
        if alter is None:
            key = key_of(user, company)
            found = known.get(key) if key is not None else None
            if found is None:
                facts = _given(user, reaching(company, user))
                found = _difference(old.held(facts, key), new.held(facts, key))
                if key is not None:
                    known[key] = found
        else:
            changed = alter(company)
            found = _difference(old.held(_given(user, reaching(company, user)), key_of(user, company)),
                                new.held(_given(user, reaching(changed, user)), key_of(user, changed)))
        for right in found[0]:
            gained.append(Change(user.email, right, company.siret))
        for right in found[1]:
            lost.append(Change(user.email, right, company.siret))
    report = Impact(tuple(gained), tuple(lost), checked, questions=_questions(old, new), method=method)
    return report, set(known) if alter is None else old.seen()


def compare_census(before: Engine, after: Engine, taken: census.Census, how: str,
                   place: Path) -> tuple[Impact, set]:
    """``compare`` over the pairs of a census (``how``: how it was obtained), and the shapes seen.

    Each shape is asked once, on its example pair. The running policy's answers are
    kept between reports in folder ``place`` (``census.recall``): a series of drafts
    against the same policy asks it each question once.
    """
    old, new, method = _sides(before, after)
    recalled = census.recall(place, before.version)
    old.recall(recalled)
    differences: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for number in sorted(set(taken.numbers)):
        facts = _example(taken, number)
        key = taken.shapes[number]
        differences[number] = _difference(old.held(facts, key), new.held(facts, key))
    changing = {number for number, (more, fewer) in differences.items() if more or fewer}
    gained: list[Change] = []
    lost: list[Change] = []
    sirets, offsets, people, emails = taken.sirets, taken.offsets, taken.people, taken.emails
    company = 0
    for position in [position for position, number in enumerate(taken.numbers) if number in changing]:
        while offsets[company + 1] <= position:
            company += 1
        more, fewer = differences[taken.numbers[position]]
        email, siret = emails[people[position]], sirets[company]
        gained.extend([Change(email, right, siret) for right in more])
        lost.extend([Change(email, right, siret) for right in fewer])
    checked = taken.size
    known = old.answers()
    if any(len(known[kind]) > len(recalled.get(kind, ())) for kind in known):
        census.remember(place, before.version, known)
    if recalled:
        how += (f"; the running policy's answers recalled from earlier reports ({len(recalled['shapes']):,} shapes, "
                f"{len(recalled['questions']):,} questions)")
    report = Impact(tuple(gained), tuple(lost), checked, questions=_questions(old, new),
                    method=f"{method}; {how}")
    return report, set(differences)


def _difference(before: frozenset[str], after: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(gained, lost) rights, each in order."""
    return tuple(sorted(after - before)), tuple(sorted(before - after))


@dataclass(frozen=True)
class _Grouping:
    """How pairs are grouped: by which shape, and whether right by right."""

    by_equality: bool
    by_right: bool
    every_pair: bool
    why_not_coarser: tuple[str, ...]

    @classmethod
    def choose(cls, before: Engine, after: Engine) -> _Grouping:
        if not (before.memoizable and after.memoizable):
            problems = [*before.opacity_problems, *after.opacity_problems]
            return cls(False, False, True, tuple(problems))
        readings = [policy_reading.coarsening(before.sources), policy_reading.coarsening(after.sources)]
        reasons = tuple(dict.fromkeys(reason for reading in readings for reason in reading.reasons))
        return cls(
            all(r.identifiers_by_equality for r in readings),
            all(r.one_right_at_a_time for r in readings),
            False,
            reasons,
        )

    @property
    def key(self) -> Callable[[model.User, model.Company], Hashable | None]:
        """The group of a pair, from the user and all the company's links (None: no group)."""
        if self.every_pair:
            return lambda user, company: None
        if self.by_equality:
            return impact_shapes.shape
        return lambda user, company: shapes.canonical(user, reaching(company, user))

    def describe(self) -> str:
        if self.every_pair:
            how = "every pair asked on its own (slow): a policy could see through shapes"
        elif self.by_right:
            return "one question per shape and right (identifiers by equality, scopes by the right asked)"
        elif self.by_equality:
            how = "one question per shape (identifiers by equality), every right"
        else:
            how = "one question per shape (identifiers in order), every right"
        reasons = "; ".join(self.why_not_coarser)
        return f"{how}; not coarser because the policy {reasons}" if reasons else how


class _Side:
    """One policy's answers, remembered per group of pairs.

    For the rights in ``alike``, the answers are those of the ``twin`` side (the
    other policy), which the reading of the two texts found decided by the same rules.
    """

    def __init__(self, engine: Engine, grouping: _Grouping, twin: _Side | None = None,
                 alike: frozenset[str] = frozenset()):
        self.engine = engine
        self.grouping = grouping
        self.rights = engine.rights
        self.twin = twin
        self.alike = alike if twin is not None else frozenset()
        self.questions = 0
        self._held: dict[Hashable, frozenset[str]] = {}
        self._by_right: dict[tuple, bool] = {}

    def seen(self) -> set[Hashable]:
        """The groups of pairs this side was asked about."""
        return set(self._held)

    def answers(self) -> dict[str, dict]:
        """This policy's answers so far, per shape and per question, for ``recall`` in a later comparison.

        Both are the policy's own answers about a shape's facts (with identifiers by
        equality): they hold whatever the data, and whatever the other policy.
        """
        return {"shapes": self._held, "questions": self._by_right}

    def recall(self, answers: dict[str, dict]) -> None:
        """Take the answers this policy gave in an earlier comparison (``answers``)."""
        self._held.update(answers.get("shapes", {}))
        self._by_right.update(answers.get("questions", {}))

    def held(self, facts: Facts, key: Hashable | None) -> frozenset[str]:
        """The rights ``allow`` gives on the pair's ``facts`` (``key``: the pair's group)."""
        if key is None:
            return self._ask(facts, self.rights)
        found = self._held.get(key)
        if found is None:
            if self.grouping.by_right:
                assert isinstance(key, tuple)
                skeleton, scopes = key[0], key[1]
                rights = self.rights
                alike: frozenset[str] = frozenset()
                if self.alike and self.twin is not None:  # the twin's answers on the same shape
                    alike = self.alike & self.twin.held(facts, key)
                    rights = tuple([right for right in rights if right not in self.alike])
                found = alike | frozenset(
                    right for right in rights
                    if self.holds(right, (right, skeleton, tuple([right in scope for scope in scopes])), facts)
                )
            else:
                found = self._ask(facts, self.rights)
            self._held[key] = found
        return found

    def holds(self, right: str, question: tuple, facts: Facts) -> bool:
        """Whether ``allow`` gives ``right``, for every pair that asks the same ``question``."""
        if right in self.alike and self.twin is not None:
            return self.twin.holds(right, question, facts)
        answer = self._by_right.get(question)
        if answer is None:
            answer = self._by_right[question] = bool(self._ask(facts, (right,)))
        return answer

    def _ask(self, facts: Facts, rights: tuple[str, ...]) -> frozenset[str]:
        self.questions += len(rights)
        user, company = facts()
        return frozenset(right for right in rights if self.engine.allows(user, right, company))


def _given(user: model.User, company: model.Company) -> Facts:
    return lambda: (user, company)


def _example(taken: census.Census, number: int) -> Facts:
    """The census's example of shape ``number``, built at most once, and only if asked for."""
    built: list[tuple[model.User, model.Company]] = []

    def facts() -> tuple[model.User, model.Company]:
        if not built:
            built.append(taken.example(number))
        return built[0]
    return facts
