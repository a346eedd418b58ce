"""Decision use cases: evaluate, search, explain.

Each loads the few rows its questions need (indexed queries, the rows of a whole batch
at once, one read transaction), then asks the policy. The explanation walks the same
facts to name the first broken link; it never changes the answer, which is always the
policy's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime

from authz import model
from authz.answers import AnswerCache, Entry, Found, horizon
from authz.engine import Engine, preferred_rule
from authz.shared_facts import SharedFacts
from authz.store import Database, Tx
from authz.tables import utcnow

# ``seen`` when the caller has not read the data version for this request.
UNREAD = object()

Pair = tuple[str, str]  # (email, siret)


class _Reading:
    """One request's view of the store: the data version it answers under, read first,
    and the rows its answers need, read only when some answer is not in the cache.

    The rows are read after the version, so never older than it: an answer stored under
    a version never comes from the rows before a change that bumped it."""

    def __init__(self, db: Database, stack: ExitStack, seen: object):
        self._db = db
        self._stack = stack
        self._tx: Tx | None = None
        self.version = db.data_version() if seen is UNREAD else seen

    def tx(self) -> Tx:
        if self._tx is None:
            self._tx = self._stack.enter_context(self._db.reading())
        return self._tx


class Decisions:
    """Answer "may user X do Y for company Z?" and its searches.

    Questions go through a per-process ``AnswerCache`` (see ``authz.answers`` for why a
    cached answer is never stale): it keeps the facts of each (user, company) and the
    answers for the rights of the policy; any other action is asked of the policy about
    the kept facts each time.

    ``seen`` is the data version the caller read at the start of the request (with the
    API key, say); then a question whose answer is cached needs no transaction at all.
    """

    def __init__(
        self,
        db: Database,
        policy: Callable[[], Engine],
        clock: Callable[[], datetime] = utcnow,
        cache: AnswerCache | None = None,
        shared: SharedFacts | None = None,
    ):
        self.db = db
        self.policy = policy
        self.clock = clock
        self.cache = cache if cache is not None else AnswerCache()
        self.shared = shared

    def under(self, engine: Engine) -> Decisions:
        """These decisions, with the same store and caches, every one answered by ``engine``:
        a caller that reports the policy version beside its answers pins the policy, so
        that a reload in between cannot make the version name another policy."""
        return Decisions(self.db, lambda: engine, self.clock, self.cache, self.shared)

    @contextmanager
    def _reading(self, engine: Engine, seen: object) -> Iterator[tuple[_Reading, tuple]]:
        with ExitStack() as stack:
            reading = _Reading(self.db, stack, seen)
            # Without a data version no change can be noticed: forget at every request.
            version = reading.version if reading.version is not None else object()
            yield reading, self.cache.sync((engine.version, version),
                                           lambda old, new: reading.tx().changes_between(old, new))

    def _entries(self, reading: _Reading, generation: tuple, pairs: Iterable[Pair], now: float,
                 search: bool = False) -> dict[Pair, Entry]:
        """The cache entry of every pair; the missing ones taken from the facts other
        workers read (``shared``, decisions only) where still true, the others loaded
        together, in one query (``search``: a search's candidates, see
        ``Tx.decision_facts``). A search's thousands of candidates are not shared: looking
        each up would cost more than the one query."""
        shared = None if search else self.shared
        found: dict[Pair, Entry] = {}
        missing: list[Pair] = []
        for pair in dict.fromkeys(pairs):
            entry = self.cache.get(pair, now)
            if entry is None and shared is not None:
                entry = self._from_shared(shared, pair, now, generation)
            if entry is None:
                missing.append(pair)
            else:
                found[pair] = entry
        if not missing:
            return found
        # A search's facts are read in its transaction, with its candidates (one snapshot on
        # SQLite); a decision's in a statement of their own (``Database.decision_facts``).
        facts = reading.tx().decision_facts(missing, now, search) if search else self.db.decision_facts(missing, now)
        for email, siret in missing:
            user, company, registered, pending = facts.of(email, siret)
            entry = found[(email, siret)] = Entry(user, company, horizon(company, now, self.cache.max_age),
                                                  registered, pending)
            self.cache.put((email, siret), entry, generation)
            if shared is not None and type(reading.version) is int:
                shared.put(email, siret, reading.version, entry.valid_until, (user, company, registered, pending))
        return found

    def _from_shared(self, shared: SharedFacts, pair: Pair, now: float, generation: tuple) -> Entry | None:
        """An entry from the facts another worker read, if this cache knows they still hold."""
        held = shared.get(pair[0], pair[1], now)
        if held is None:
            return None
        version, valid_until, (user, company, registered, pending) = held
        if not self.cache.fresh(pair, version):
            return None
        self.cache.count_shared()
        entry = Entry(user, company, valid_until, registered, pending)
        self.cache.put(pair, entry, generation)
        return entry

    def decide(self, email: str, right: str, siret: str, seen: object = UNREAD) -> model.Decision:
        """Answer one question, with the rule that allowed or the reason it denied."""
        return self.decide_many([(email, right, siret)], seen=seen)[0]

    def decide_many(
        self, questions: list[tuple[str, str, str]], stop_on: bool | None = None, seen: object = UNREAD
    ) -> list[model.Decision]:
        """Answer questions in order, in one read transaction; with ``stop_on`` set,
        stop after the first answer equal to it."""
        engine = self.policy()
        now = self.clock().timestamp()
        with self._reading(engine, seen) as (reading, generation):
            entries = self._entries(reading, generation, [(email, siret) for email, _, siret in questions], now)
            rules: list[str | None] = []
            for email, right, siret in questions:
                entry = entries[(email, siret)]
                rules.append(_rule(engine, entry, right) if right in engine.rights
                             else _unknown_right(engine, entry, right))
                if stop_on is not None and (rules[-1] is not None) is stop_on:
                    break
            asked = questions[: len(rules)]
            self._explain_denials(engine, [
                (entries[(email, siret)], right)
                for (email, right, siret), rule in zip(asked, rules, strict=True)
                if rule is None and right in engine.rights
            ])
        return [
            model.Decision(True, rule) if rule is not None
            else model.Decision(False, entries[(email, siret)].reasons[right] if right in engine.rights
                                else "unknown_right")
            for (email, right, siret), rule in zip(asked, rules, strict=True)
        ]

    @staticmethod
    def _explain_denials(engine: Engine, denied: list[tuple[Entry, str]]) -> None:
        """Give each denial its reason, kept in its entry (from facts the entry holds)."""
        for entry, right in denied:
            if right not in entry.reasons:
                broken = _diagnose(engine, entry.user, right, entry.company, entry.registered, entry.pending)
                entry.reasons[right] = broken.detail or "denied"

    def resources(self, email: str, right: str, seen: object = UNREAD) -> list[str]:
        """The companies on which ``email`` holds ``right``, sorted by SIRET."""
        engine = self.policy()
        now = self.clock().timestamp()
        with self._reading(engine, seen) as (reading, generation):
            kept = self.cache.found(("resources", email, right), now)
            if kept is not None:
                return list(kept.items)
            tx = reading.tx()
            user = tx.user_facts(email, now)
            candidates = tx.companies_reaching(user)
            if right not in engine.rights:
                facts = tx.companies_facts(candidates, firms=user.manages | user.collaborates, collaborators=[email])
                return [siret for siret in candidates if engine.allows(user, right, facts[siret])]
            entries = self._entries(reading, generation, [(email, siret) for siret in candidates], now, search=True)
        found = [siret for siret in candidates if _rule(engine, entries[(email, siret)], right) is not None]
        self._keep(("resources", email, right), found, entries.values(), now, generation)
        return found

    def subjects(self, siret: str, right: str, seen: object = UNREAD) -> list[str]:
        """The users who hold ``right`` on company ``siret``, sorted by e-mail."""
        engine = self.policy()
        now = self.clock().timestamp()
        with self._reading(engine, seen) as (reading, generation):
            kept = self.cache.found(("subjects", siret, right), now)
            if kept is not None:
                return list(kept.items)
            tx = reading.tx()
            candidates = tx.users_reaching(siret)
            if right not in engine.rights:
                users = tx.users_facts(candidates, now)
                company = tx.companies_facts([siret])[siret]
                return [email for email in candidates if engine.allows(users[email], right, company)]
            entries = self._entries(reading, generation, [(email, siret) for email in candidates], now)
        found = [email for email in candidates if _rule(engine, entries[(email, siret)], right) is not None]
        self._keep(("subjects", siret, right), found, entries.values(), now, generation)
        return found

    def _keep(self, key: tuple, found: list[str], entries: Iterable[Entry], now: float, generation: tuple) -> None:
        """Remember a search result until the first of its answers may change by itself."""
        until = min((entry.valid_until for entry in entries), default=now + self.cache.max_age)
        self.cache.keep_found(key, Found(tuple(found), until), generation)

    def actions(self, email: str, siret: str, seen: object = UNREAD) -> list[str]:
        """The rights ``email`` holds on company ``siret``, sorted."""
        engine = self.policy()
        now = self.clock().timestamp()
        with self._reading(engine, seen) as (reading, generation):
            entry = self._entries(reading, generation, [(email, siret)], now)[(email, siret)]
        return [right for right in engine.rights if _rule(engine, entry, right) is not None]

    def explain(self, email: str, right: str, siret: str) -> model.Explanation:
        """Show the chain behind a decision: the links that allowed, or the first broken one."""
        engine = self.policy()
        moment = self.clock()
        now = moment.timestamp()
        with self.db.reading() as tx:
            user, company, known, pending = tx.decision_facts([(email, siret)], now).of(email, siret)
        company_link = model.Link("company", siret, holds=known, detail=None if known else "unknown_company")
        if engine.allows(user, right, company):
            rule = preferred_rule(engine.rules_granting(user, right, company))
            chain = (company_link, *_allowing_chain(engine, rule, user, right, company))
            return model.Explanation(model.Decision(True, rule), rule, chain)
        broken = _diagnose(engine, user, right, company, known, pending)
        return model.Explanation(model.Decision(False, broken.detail or "denied"), None, (company_link,), broken)


def _rule(engine: Engine, entry: Entry, right: str) -> str | None:
    """The cached answer for ``right``, asked of the engine the first time."""
    if right not in entry.rules:
        entry.rules[right] = engine.answer(entry.user, right, entry.company)
    return entry.rules[right]


def _unknown_right(engine: Engine, entry: Entry, right: str) -> str | None:
    """Not a right of the policy: asked of the entry rule about the entry's facts, as a
    right of the policy is, but never remembered (not in ``entry.rules``, nor in the
    engine's memo): the right is whatever string the caller sent, and remembering those
    would let callers fill memory. The facts come from the cache all the same: a caller
    sending unknown rights costs a query per new pair, not per question."""
    if engine.allows(entry.user, right, entry.company):
        return preferred_rule(engine.rules_granting(entry.user, right, entry.company))
    return None


def _when(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _delegation_link(d: model.Delegation, holds: bool, detail: str | None = None) -> model.Link:
    return model.Link("delegation", d.id, holds, d.status, tuple(sorted(d.scope)), _when(d.ends_at), detail=detail)


def _grant_link(g: model.Grant, holds: bool, detail: str | None = None) -> model.Link:
    return model.Link("grant", g.id, holds, g.status, tuple(sorted(g.scope)), _when(g.ends_at), detail=detail)


def _allowing_chain(engine: Engine, rule: str, user: model.User, right: str, company: model.Company):
    """The links a granting rule went through, each confirmed by the policy."""
    if rule == "company_admin":
        return (model.Link("company_admin", user.email, True),)

    def holding(firm: str) -> model.Delegation | None:
        for delegation in company.delegations:
            alone = model.Company(company.siret, (delegation,))
            if delegation.firm == firm and engine.firm_holds(firm, right, alone, user.now):
                return delegation
        return None

    if rule == "firm_manager":
        for firm in sorted(user.manages):
            delegation = holding(firm)
            if delegation:
                return (_delegation_link(delegation, True), model.Link("firm_manager", user.email, True, detail=firm))
    if rule == "collaborator_grant":
        for grant in company.grants:
            alone = model.Company(company.siret, company.delegations, (grant,))
            delegation = holding(grant.firm)
            if delegation and engine.rules_granting(user, right, alone):
                return (_delegation_link(delegation, True), _grant_link(grant, True))
    return ()


def _link_problem(link, right: str, now: float) -> str | None:
    """Name what stops one link from carrying ``right`` (None: it carries it)."""
    if link.status != model.LinkStatus.ACTIVE:
        return link.status  # pending, revoked, or closed as expired
    if link.ends_at is not None and link.ends_at <= now:
        return "expired"
    if right not in link.scope:
        return "out_of_scope"
    return None


def _diagnose(
    engine: Engine,
    user: model.User,
    right: str,
    company: model.Company,
    known: bool,
    pending: tuple[model.Delegation, ...],
) -> model.Link:
    """Find the first broken link on the most promising path to ``right``.

    This only describes a denial the policy already gave; it never decides.
    """
    if right not in engine.rights:
        return model.Link("right", right, False, detail="unknown_right")
    if not known:
        return model.Link("company", company.siret, False, detail="unknown_company")
    paths: list[tuple[model.Grant | None, str]] = [(None, firm) for firm in sorted(user.manages)]
    paths += [
        (grant, grant.firm)
        for grant in company.grants
        if grant.collaborator == user.email and grant.firm in user.collaborates
    ]
    if paths and right not in engine.info.delegable:
        return model.Link("right", right, False, detail="not_delegable")
    for grant, firm in paths:
        if grant is not None:
            problem = _link_problem(grant, right, user.now)
            if problem:
                return _grant_link(grant, False, f"grant_{problem}")
        delegations = [d for d in company.delegations if d.firm == firm]
        if delegations:
            best = max(delegations, key=lambda d: (d.status == model.LinkStatus.ACTIVE, d.id))
            problem = _link_problem(best, right, user.now)
            return _delegation_link(best, False, f"delegation_{problem or 'broken'}")
    if pending:
        return _delegation_link(pending[-1], False, "delegation_pending")
    if not paths:
        return model.Link("user", user.email, False, detail="no_link")
    return model.Link("delegation", None, False, detail="no_delegation")
