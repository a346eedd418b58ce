"""Every (user, company) pair of the store, with the facts a single decision would load.

An impact report asks about everyone linked to every company: the company's admins,
the managers of the firms it designated, the collaborators holding grants on it. A
national store has about two million such pairs, so the whole store is read in six
queries (one per table) rather than company by company, and each fact object is built
once and shared by every pair it belongs to.

The facts of a pair are exactly those a single decision loads (``Tx.users_facts``,
``Tx.companies_facts`` then ``store.reaching``, which ``Tx.decision_facts`` gives in one
statement: tests/integration/test_decision_facts.py checks the two agree), and the
people of a company exactly ``Tx.users_reaching_each``: the comparison over pairs must
match a decision asked pair by pair.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from authz import model
from authz.store import Tx, scope_set
from authz.tables import collaborators, companies, company_admins, delegations, firms, grants


@dataclass(frozen=True)
class Population:
    """The people linked to each company, and the facts about them and it."""

    now: float
    people: dict[str, list[str]]  # company -> sorted e-mails of the people it reaches
    companies: dict[str, model.Company]  # every delegation to a firm, every grant
    users: dict[str, model.User]

    @property
    def size(self) -> int:
        return sum(len(emails) for emails in self.people.values())

    def pairs(self) -> Iterator[tuple[model.User, model.Company]]:
        """Each pair, companies in order then people in order, with all the company's links.

        A decision by the user loads only some of those links: ``store.reaching``.
        """
        users = self.users
        for siret in sorted(self.people):
            company = self.companies[siret]
            for email in self.people[siret]:
                yield users[email], company


def load_some(tx: Tx, sirets: Sequence[str], now: float) -> Population:
    """The pairs of a few companies, with the store's own per-company queries."""
    people = tx.users_reaching_each(sirets)
    users = tx.users_facts(sorted({email for emails in people.values() for email in emails}), now)
    return Population(now, people, tx.companies_facts(list(people)), users)


def load_all(tx: Tx, now: float, first: str | None = None, until: str | None = None) -> Population:
    """The pairs of every registered company, reading each table once.

    ``first`` and ``until`` keep the companies with ``first <= siret < until`` (a
    share of the store for one worker); the people's memberships are read whole.
    """
    conn = tx.conn

    def share(query, column):
        if first is not None:
            query = query.where(column >= first)
        if until is not None:
            query = query.where(column < until)
        return query

    people: dict[str, set[str]] = {
        siret: set() for (siret,) in conn.execute(share(select(companies.c.siret), companies.c.siret)).all()
    }
    admin_of: dict[str, set[str]] = defaultdict(set)
    for siret, email in conn.execute(select(company_admins.c.company_siret, company_admins.c.user_email)).all():
        admin_of[email].add(siret)
        if siret in people:
            people[siret].add(email)
    manager: dict[str, str] = {}
    manages: dict[str, set[str]] = defaultdict(set)
    for siret, email in conn.execute(select(firms.c.siret, firms.c.manager_email)).all():
        manager[siret] = email
        manages[email].add(siret)
    collaborates: dict[str, set[str]] = defaultdict(set)
    for siret, email in conn.execute(select(collaborators.c.firm_siret, collaborators.c.user_email)).all():
        collaborates[email].add(siret)

    epoch = _Epochs()
    dels: dict[str, list[model.Delegation]] = defaultdict(list)
    found = conn.execute(share(select(
        delegations.c.id, delegations.c.company_siret, delegations.c.manager_email, delegations.c.firm_siret,
        delegations.c.status, delegations.c.scope, delegations.c.ends_at,
    ).where(delegations.c.firm_siret.is_not(None)), delegations.c.company_siret)).all()
    for id_, siret, manager_email, firm, status, scope, ends_at in found:
        dels[siret].append(model.Delegation(id_, siret, manager_email, firm, status, scope_set(scope), epoch(ends_at)))
        if firm in manager:
            people[siret].add(manager[firm])
    grs: dict[str, list[model.Grant]] = defaultdict(list)
    found = conn.execute(share(select(
        grants.c.id, grants.c.firm_siret, grants.c.collaborator_email, grants.c.company_siret,
        grants.c.status, grants.c.scope, grants.c.ends_at,
    ), grants.c.company_siret)).all()
    for id_, firm, collaborator, siret, status, scope, ends_at in found:
        grs[siret].append(model.Grant(id_, firm, collaborator, siret, status, scope_set(scope), epoch(ends_at)))
        people[siret].add(collaborator)
    del found

    empty: frozenset[str] = frozenset()
    users = {}
    for emails in people.values():
        for email in emails:
            if email not in users:
                users[email] = model.User(
                    email, now,
                    frozenset(admin_of.get(email, empty)),
                    frozenset(manages.get(email, empty)),
                    frozenset(collaborates.get(email, empty)),
                )
    return Population(
        now,
        {siret: sorted(emails) for siret, emails in people.items()},
        {siret: model.Company(siret, tuple(dels.get(siret, ())), tuple(grs.get(siret, ()))) for siret in people},
        users,
    )


def shares(tx: Tx, count: int) -> list[str | None]:
    """Bounds that split the companies into ``count`` shares of about the same size."""
    total = tx.conn.execute(select(func.count()).select_from(companies)).scalar() or 0
    bounds: list[str | None] = [None]
    for i in range(1, count):
        bound = tx.conn.execute(
            select(companies.c.siret).order_by(companies.c.siret).offset(total * i // count).limit(1)
        ).scalar()
        if bound is not None and bound != bounds[-1]:
            bounds.append(bound)
    return [*bounds, None]


class _Epochs:
    """End dates to POSIX seconds (``model.epoch``), once per distinct date."""

    def __init__(self) -> None:
        self._seen: dict[datetime, float | None] = {}

    def __call__(self, moment: datetime | None) -> float | None:
        if moment is None:
            return None
        found = self._seen.get(moment)
        if found is None:
            found = self._seen[moment] = model.epoch(moment)
        return found
