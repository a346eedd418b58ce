"""Decision use cases: evaluate, search, explain.

Each loads the few rows a question needs (indexed queries, one read transaction),
then asks the policy. The explanation walks the same facts to name the first broken
link; it never changes the answer, which is always the policy's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from authz import model
from authz.answers import AnswerCache, Entry, horizon
from authz.engine import Engine, preferred_rule
from authz.store import Database, Tx, delegation_fact, reaching
from authz.tables import utcnow


class Decisions:
    """Answer "may user X do Y for company Z?" and its searches.

    Answers for the rights of the policy go through a per-process ``AnswerCache``
    (see ``authz.answers`` for why a cached answer is never stale); any other action
    is asked of the policy directly.
    """

    def __init__(
        self,
        db: Database,
        policy: Callable[[], Engine],
        clock: Callable[[], datetime] = utcnow,
        cache: AnswerCache | None = None,
    ):
        self.db = db
        self.policy = policy
        self.clock = clock
        self.cache = cache if cache is not None else AnswerCache()

    def _facts(self, tx: Tx, email: str, siret: str, now: float) -> tuple[model.User, model.Company]:
        user = tx.user_facts(email, now)
        if not (user.admin_of or user.manages or user.collaborates):
            return user, model.Company(siret)
        return user, tx.company_facts(siret, user)

    def _sync(self, tx: Tx, engine: Engine) -> None:
        version = tx.data_version()
        # Without a data version no change can be noticed: forget at every request.
        self.cache.sync((engine.version, version if version is not None else object()))

    def _entry(self, tx: Tx, engine: Engine, email: str, siret: str, now: float) -> Entry:
        entry = self.cache.get((email, siret), now)
        if entry is None:
            user, company = self._facts(tx, email, siret, now)
            entry = Entry(user, company, horizon(company, now, self.cache.max_age))
            self.cache.put((email, siret), entry)
        return entry

    def decide(self, email: str, right: str, siret: str) -> model.Decision:
        """Answer one question, with the rule that allowed or the reason it denied."""
        return self.decide_many([(email, right, siret)])[0]

    def decide_many(self, questions: list[tuple[str, str, str]], stop_on: bool | None = None) -> list[model.Decision]:
        """Answer questions in order, in one read transaction; with ``stop_on`` set,
        stop after the first answer equal to it."""
        engine = self.policy()
        now = self.clock().timestamp()
        answers = []
        with self.db.transaction(write=False) as tx:
            self._sync(tx, engine)
            for email, right, siret in questions:
                answer = self._decide(tx, engine, email, right, siret, now)
                answers.append(answer)
                if stop_on is not None and answer.allowed is stop_on:
                    break
        return answers

    def _decide(self, tx: Tx, engine: Engine, email: str, right: str, siret: str, now: float) -> model.Decision:
        if right not in engine.rights:
            # Not a right of the policy: ask the entry rule directly, never from the cache.
            user, company = self._facts(tx, email, siret, now)
            if engine.allows(user, right, company):
                return model.Decision(True, preferred_rule(engine.rules_granting(user, right, company)))
            return model.Decision(False, "unknown_right")
        entry = self._entry(tx, engine, email, siret, now)
        rule = _rule(engine, entry, right)
        if rule is not None:
            return model.Decision(True, rule)
        if right not in entry.reasons:
            known, pending = tx.company_exists(siret), _pending(tx, siret, email)
            broken = _diagnose(engine, entry.user, right, entry.company, known, pending)
            entry.reasons[right] = broken.detail or "denied"
        return model.Decision(False, entry.reasons[right])

    def resources(self, email: str, right: str) -> list[str]:
        """The companies on which ``email`` holds ``right``, sorted by SIRET."""
        engine = self.policy()
        now = self.clock().timestamp()
        with self.db.transaction(write=False) as tx:
            self._sync(tx, engine)
            user = tx.user_facts(email, now)
            candidates = tx.companies_reaching(user)
            if right not in engine.rights:
                facts = tx.companies_facts(candidates, firms=user.manages | user.collaborates, collaborator=email)
                return [siret for siret in candidates if engine.allows(user, right, facts[siret])]
            cached: dict[str, Entry] = {}
            missing = []
            for siret in candidates:
                entry = self.cache.get((email, siret), now)
                if entry is None:
                    missing.append(siret)
                else:
                    cached[siret] = entry
            facts = tx.companies_facts(missing, firms=user.manages | user.collaborates, collaborator=email)
        for siret in missing:
            cached[siret] = Entry(user, facts[siret], horizon(facts[siret], now, self.cache.max_age))
            self.cache.put((email, siret), cached[siret])
        return [siret for siret in candidates if _rule(engine, cached[siret], right) is not None]

    def subjects(self, siret: str, right: str) -> list[str]:
        """The users who hold ``right`` on company ``siret``, sorted by e-mail."""
        engine = self.policy()
        now = self.clock().timestamp()
        with self.db.transaction(write=False) as tx:
            self._sync(tx, engine)
            candidates = tx.users_reaching(siret)
            users = tx.users_facts(candidates, now)
            company = tx.companies_facts([siret]).get(siret, model.Company(siret))
        if right not in engine.rights:
            return [email for email in candidates if engine.allows(users[email], right, company)]
        found = []
        for email in candidates:
            entry = self.cache.get((email, siret), now)
            if entry is None:
                mine = reaching(company, users[email])
                entry = Entry(users[email], mine, horizon(mine, now, self.cache.max_age))
                self.cache.put((email, siret), entry)
            if _rule(engine, entry, right) is not None:
                found.append(email)
        return found

    def actions(self, email: str, siret: str) -> list[str]:
        """The rights ``email`` holds on company ``siret``, sorted."""
        engine = self.policy()
        now = self.clock().timestamp()
        with self.db.transaction(write=False) as tx:
            self._sync(tx, engine)
            entry = self._entry(tx, engine, email, siret, now)
        return [right for right in engine.rights if _rule(engine, entry, right) is not None]

    def explain(self, email: str, right: str, siret: str) -> model.Explanation:
        """Show the chain behind a decision: the links that allowed, or the first broken one."""
        engine = self.policy()
        moment = self.clock()
        now = moment.timestamp()
        with self.db.transaction(write=False) as tx:
            user, company = self._facts(tx, email, siret, now)
            known = tx.company_exists(siret)
            pending = _pending(tx, siret, email)
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


def _pending(tx: Tx, siret: str, email: str) -> list[model.Delegation]:
    """Designations of ``email`` by ``siret`` still awaiting activation (only explained)."""
    return [delegation_fact(row) for row in tx.pending_delegations_for(siret, email)]


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
    pending: list[model.Delegation],
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
