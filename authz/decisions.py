"""Decision use cases: evaluate, search, explain.

Each loads the few rows a question needs (indexed queries, one read transaction),
then asks the policy. The explanation walks the same facts to name the first broken
link; it never changes the answer, which is always the policy's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from authz import model
from authz.engine import Engine
from authz.store import Database, Tx, delegation_fact
from authz.tables import utcnow

# Order in which an explanation prefers the rules that allowed.
RULE_ORDER = ("company_admin", "firm_manager", "collaborator_grant")


class Decisions:
    """Answer "may user X do Y for company Z?" and its searches."""

    def __init__(self, db: Database, policy: Callable[[], Engine], clock: Callable[[], datetime] = utcnow):
        self.db = db
        self.policy = policy
        self.clock = clock

    def _facts(self, tx: Tx, email: str, siret: str, now: float) -> tuple[model.User, model.Company]:
        user = tx.user_facts(email, now)
        if not (user.admin_of or user.manages or user.collaborates):
            return user, model.Company(siret)
        return user, tx.company_facts(siret, user)

    def decide(self, email: str, right: str, siret: str) -> model.Decision:
        """Answer one question, with the rule that allowed or the reason it denied."""
        engine = self.policy()
        now = self.clock().timestamp()
        with self.db.transaction(write=False) as tx:
            user, company = self._facts(tx, email, siret, now)
            if engine.allows(user, right, company):
                return model.Decision(True, _first_rule(engine.rules_granting(user, right, company)))
            known = tx.company_exists(siret)
            pending = _pending(tx, siret, email)
        return model.Decision(False, _diagnose(engine, user, right, company, known, pending).detail or "denied")

    def decide_many(self, questions: list[tuple[str, str, str]], stop_on: bool | None = None) -> list[model.Decision]:
        """Answer questions in order; with ``stop_on`` set, stop after the first such answer."""
        answers = []
        for email, right, siret in questions:
            answer = self.decide(email, right, siret)
            answers.append(answer)
            if stop_on is not None and answer.allowed is stop_on:
                break
        return answers

    def resources(self, email: str, right: str) -> list[str]:
        """The companies on which ``email`` holds ``right``, sorted by SIRET."""
        engine = self.policy()
        now = self.clock().timestamp()
        with self.db.transaction(write=False) as tx:
            user = tx.user_facts(email, now)
            companies = tx.companies_reaching(user)
        return [siret for siret, company in sorted(companies.items()) if engine.allows(user, right, company)]

    def subjects(self, siret: str, right: str) -> list[str]:
        """The users who hold ``right`` on company ``siret``, sorted by e-mail."""
        engine = self.policy()
        now = self.clock().timestamp()
        with self.db.transaction(write=False) as tx:
            candidates = tx.users_reaching(siret)
            users = tx.users_facts(candidates, now)
            company = tx.companies_facts([siret]).get(siret, model.Company(siret))
        return [email for email in candidates if engine.allows(users[email], right, company)]

    def actions(self, email: str, siret: str) -> list[str]:
        """The rights ``email`` holds on company ``siret``, sorted."""
        engine = self.policy()
        now = self.clock().timestamp()
        with self.db.transaction(write=False) as tx:
            user, company = self._facts(tx, email, siret, now)
        held = engine.rights_held(user, company)
        return [right for right in engine.rights if right in held]

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
            rule = _first_rule(engine.rules_granting(user, right, company))
            chain = (company_link, *_allowing_chain(engine, rule, user, right, company))
            return model.Explanation(model.Decision(True, rule), rule, chain)
        broken = _diagnose(engine, user, right, company, known, pending)
        return model.Explanation(model.Decision(False, broken.detail or "denied"), None, (company_link,), broken)


def _pending(tx: Tx, siret: str, email: str) -> list[model.Delegation]:
    """Designations of ``email`` by ``siret`` still awaiting activation (only explained)."""
    return [delegation_fact(row) for row in tx.pending_delegations_for(siret, email)]


def _first_rule(rules: list[str]) -> str:
    for rule in RULE_ORDER:
        if rule in rules:
            return rule
    return rules[0] if rules else "allowed"


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
    paths = [(None, firm) for firm in sorted(user.manages)]
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
