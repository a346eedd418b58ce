"""A per-process cache of answers, keyed by (user, company), that never outlives its truth.

An entry is served only while three things hold:
* the policy version it was computed under is still the one in service;
* the data version (bumped in the transaction of every change) is still the one read
  at the start of the request: after a write returns, every process forgets;
* the clock has not reached the entry's horizon: the earliest end date among the
  links it was computed from (and at most ``max_age`` seconds), so an answer that
  depends on an end date is never served past that date.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from authz import model


@dataclass
class Entry:
    """Answers for one (user, company), computed right by right from the facts kept here."""

    user: model.User
    company: model.Company
    valid_until: float
    rules: dict[str, str | None] = field(default_factory=dict)  # right -> granting rule or None
    reasons: dict[str, str] = field(default_factory=dict)  # deny reasons, filled on demand


def horizon(company: model.Company, now: float, max_age: float) -> float:
    """The instant an answer computed from ``company``'s links at ``now`` may change by itself."""
    links: list[model.Delegation | model.Grant] = [*company.delegations, *company.grants]
    ends = [link.ends_at for link in links if link.ends_at is not None and link.ends_at > now]
    return min([now + max_age, *ends])


class AnswerCache:
    def __init__(self, size: int = 50_000, max_age: float = 300.0):
        self.size = size
        self.max_age = max_age
        self._generation: tuple | None = None
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def sync(self, generation: tuple) -> None:
        """Forget everything when the policy or the data changed since the last request."""
        with self._lock:
            if generation != self._generation:
                self._entries.clear()
                self._generation = generation

    def get(self, key: tuple[str, str], now: float) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or now >= entry.valid_until:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: tuple[str, str], entry: Entry) -> None:
        if not self.size or not math.isfinite(entry.valid_until):
            return
        with self._lock:
            self._entries[key] = entry
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
