"""A per-process cache of answers that never outlives its truth.

Two kinds of entries: the facts and answers of one (user, company), and the result of
one search (the companies a user holds a right on, or the users holding a right on a
company). An entry is served only while three things hold:
* the policy version it was computed under is still the one in service;
* no change since it was computed named its user or its company (a search: no change
  at all). Every change bumps the data version and names what it touched, in its own
  transaction; each request reads the version first, and on a new one the cache forgets
  what the changes in between named, so after a write returns, every process forgets
  the answers it may have changed, and keeps the others. That is enough because an
  entry's facts are its user's memberships (admin of, manager of, collaborator of) and
  its company's rows (registration, delegations and so pending designations, grants),
  and each ``Tx`` method that writes such a row names that user or that company;
* the clock has not reached the entry's horizon: the earliest end date among the
  links it was computed from (and at most ``max_age`` seconds), so an answer that
  depends on an end date is never served past that date.

An entry is stored only under the generation it was computed for: a request that
read the old data version cannot put its answer into a cache that has already moved
on to the new one.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from authz import model

# The scopes a data version names (see ``tables.data_changes``): the cached answers of a
# user, of a company, all of them, or none (API keys: no answer depends on one).
USER = "user:"
COMPANY = "company:"
EVERYTHING = "*"
KEYS = "keys"

# Scopes a cache remembers as changed (``AnswerCache.fresh``) before it forgets them all and
# takes no facts read before its current version.
CHANGES_REMEMBERED = 100_000

# ``changed(old, new)``: the scopes data versions old+1 .. new changed, None if unknown.
Changed = Callable[[int, int], "frozenset[str] | None"]


@dataclass
class Entry:
    """Answers for one (user, company), computed right by right from the facts kept here,
    and the facts a denial's reason needs besides, read with them."""

    user: model.User
    company: model.Company
    valid_until: float
    registered: bool  # the company is registered
    pending: tuple[model.Delegation, ...]  # its designations to the user's e-mail still pending
    rules: dict[str, str | None] = field(default_factory=dict)  # right -> granting rule or None
    reasons: dict[str, str] = field(default_factory=dict)  # deny reasons, filled on demand


@dataclass(frozen=True)
class Found:
    """A search result, sorted, and the instant it may change by itself."""

    items: tuple[str, ...]
    valid_until: float


def horizon(company: model.Company, now: float, max_age: float) -> float:
    """The instant an answer computed from ``company``'s links at ``now`` may change by itself."""
    links: list[model.Delegation | model.Grant] = [*company.delegations, *company.grants]
    ends = [link.ends_at for link in links if link.ends_at is not None and link.ends_at > now]
    return min([now + max_age, *ends])


class _Lru:
    """A map bounded by the total weight of its entries, which expire at ``valid_until``."""

    def __init__(self, size: int, weigh=lambda entry: 1):
        self.size = size
        self.weigh = weigh
        self.weight = 0
        self.entries: OrderedDict = OrderedDict()

    def clear(self) -> None:
        self.entries.clear()
        self.weight = 0

    def pop(self, key) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.weight -= self.weigh(entry)

    def get(self, key, now: float):
        entry = self.entries.get(key)
        if entry is None or now >= entry.valid_until:
            return None
        self.entries.move_to_end(key)
        return entry

    def put(self, key, entry) -> list:
        """Keep ``entry`` under ``key`` if it fits; return the keys evicted to make room."""
        weight = self.weigh(entry)
        if weight > self.size or not math.isfinite(entry.valid_until):
            return []
        self.pop(key)
        self.entries[key] = entry
        self.weight += weight
        evicted = []
        while self.weight > self.size:
            gone, entry = self.entries.popitem(last=False)
            self.weight -= self.weigh(entry)
            evicted.append(gone)
        return evicted


def _weight(entry: Entry) -> int:
    return 1 + len(entry.company.delegations) + len(entry.company.grants) + len(entry.pending)


class AnswerCache:
    def __init__(self, size: int = 50_000, max_age: float = 300.0):
        self.max_age = max_age
        self._generation: tuple | None = None
        # Both are bounded by what they hold: an answer weighs one plus the links of its
        # facts (a company with a long history is a big entry), a search result one plus
        # its items.
        self._answers = _Lru(size, weigh=_weight)
        self._searches = _Lru(size, weigh=lambda found: 1 + len(found.items))
        # The keys of the answers kept, by user and by company: what a change names. Without
        # them, every worker scanned its whole cache at each change: under 5 changes a second,
        # the benchmark stream's p99 went from 3.6 to 8.7 ms (PostgreSQL, two workers).
        self._by_user: dict[str, set[tuple[str, str]]] = {}
        self._by_company: dict[str, set[tuple[str, str]]] = {}
        # What this cache learned of changes, to judge facts read elsewhere (``fresh``): every
        # change since data version ``_known_since`` named only scopes in ``_changed_at``,
        # each with the version of the sync that learned it (at or after the change).
        self._known_since: int | None = None
        self._changed_at: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.shared = 0  # misses answered by facts another worker read (``fresh``)

    @property
    def size(self) -> int:
        return self._answers.size

    def sync(self, generation: tuple, changed: Changed | None = None) -> tuple:
        """Move to ``generation`` (the policy version, the data version) if the cache is not
        there yet; return it, to store this request's answers under.

        Moving on forgets every search, and the answers whose user or company a change in
        between named: ``changed(old, new)`` gives the scopes that data versions old+1 ..
        new changed (see ``tables.data_changes``), None if it cannot tell. Everything is
        forgotten when the policy changed, when the versions are not integers with the new
        one above the old, or when a scope is ``*``."""
        with self._lock:
            current = self._generation
            if generation == current:
                return generation
        scopes = None
        if changed is not None and current is not None and current[0] == generation[0]:
            old, new = current[1], generation[1]
            if type(old) is int and type(new) is int and old < new:
                scopes = changed(old, new)  # a read: outside the lock
        with self._lock:
            if self._generation != current:  # another thread moved it meanwhile
                scopes = None
            self._forget(scopes)
            self._learn(scopes, generation[1])
            self._generation = generation
        return generation

    def _learn(self, scopes: frozenset[str] | None, version: object) -> None:
        if scopes is None or EVERYTHING in scopes or type(version) is not int:
            self._known_since = version if type(version) is int else None
            self._changed_at.clear()
            return
        for scope in scopes:
            self._changed_at[scope] = version
        if len(self._changed_at) > CHANGES_REMEMBERED:
            self._known_since = version
            self._changed_at.clear()

    def fresh(self, key: tuple[str, str], version: object) -> bool:
        """Whether facts of ``key`` read after data version ``version`` (by another process)
        still hold at the version this cache is at: this cache has learned every change
        since ``version`` (the version is neither before its knowledge starts nor after
        the version it is at) and none of them named the pair's user or company."""
        with self._lock:
            since = self._known_since
            if since is None or self._generation is None or type(version) is not int:
                return False
            at = self._generation[1]
            if not since <= version <= at:
                return False
            changed = self._changed_at
            return (changed.get(USER + key[0], since) <= version
                    and changed.get(COMPANY + key[1], since) <= version)

    def count_shared(self) -> None:
        """Count a miss of ``get`` that ``fresh`` facts from elsewhere answered."""
        with self._lock:
            self.misses -= 1
            self.shared += 1

    def _forget(self, scopes: frozenset[str] | None) -> None:
        self._searches.clear()  # a search depends on more than its user or company
        if scopes is None or EVERYTHING in scopes:
            self._answers.clear()
            self._by_user.clear()
            self._by_company.clear()
            return
        doomed: set[tuple[str, str]] = set()
        for scope in scopes:
            if scope.startswith(USER):
                doomed.update(self._by_user.get(scope.removeprefix(USER), ()))
            elif scope.startswith(COMPANY):
                doomed.update(self._by_company.get(scope.removeprefix(COMPANY), ()))
        for key in doomed:
            self._answers.pop(key)
            self._unindex(key)

    def _unindex(self, key: tuple[str, str]) -> None:
        for index, name in ((self._by_user, key[0]), (self._by_company, key[1])):
            keys = index.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[name]

    def get(self, key: tuple[str, str], now: float) -> Entry | None:
        with self._lock:
            entry = self._answers.get(key, now)
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
            return entry

    def take_counts(self) -> tuple[int, int, int]:
        """The (hits, misses, shared) of answer lookups since the last call: misses are
        the lookups the database answered."""
        with self._lock:
            counts = (self.hits, self.misses, self.shared)
            self.hits = self.misses = self.shared = 0
            return counts

    def put(self, key: tuple[str, str], entry: Entry, generation: tuple) -> None:
        with self._lock:
            if generation == self._generation:
                for evicted in self._answers.put(key, entry):
                    self._unindex(evicted)
                if key in self._answers.entries:
                    self._by_user.setdefault(key[0], set()).add(key)
                    self._by_company.setdefault(key[1], set()).add(key)

    def found(self, key: tuple, now: float) -> Found | None:
        with self._lock:
            return self._searches.get(key, now)

    def keep_found(self, key: tuple, result: Found, generation: tuple) -> None:
        with self._lock:
            if generation == self._generation:
                self._searches.put(key, result)
