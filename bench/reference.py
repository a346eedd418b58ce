"""The limit: the same questions answered by plain Python over dicts preloaded from the database.

No SQL, no policy engine, no locking: what a decision costs when everything it needs is
already in memory in the most convenient shape. It follows the rules of the policy
(admins hold every right; a firm holds the delegable rights of a delegation in force; a
collaborator holds a right of a grant in force only while the firm holds it), and the
benchmark checks it agrees with the service on every question it times.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select

from authz.dataset import DELEGABLE
from authz.store import Database
from authz.tables import collaborators, company_admins, delegations, firms, grants

RIGHTS = frozenset((*DELEGABLE, "entreprise"))
DELEGABLE_SET = frozenset(DELEGABLE)
ACTIVE = "active"


@dataclass
class Preloaded:
    admin_of: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    manages: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    collaborates: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # (company, firm) -> [(status, scope, ends_at)]
    delegations: dict[tuple[str, str], list] = field(default_factory=lambda: defaultdict(list))
    # (collaborator, company) -> [(firm, status, scope, ends_at)]
    grants: dict[tuple[str, str], list] = field(default_factory=lambda: defaultdict(list))
    # firm -> companies with a delegation of any state (the candidates of a client list)
    clients: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    seconds: float = 0.0

    @classmethod
    def load(cls, db: Database) -> Preloaded:
        started = time.perf_counter()
        found = cls()
        with db.engine.connect() as conn:
            for email, siret in conn.execute(select(company_admins.c.user_email, company_admins.c.company_siret)):
                found.admin_of[email].add(siret)
            for email, siret in conn.execute(select(firms.c.manager_email, firms.c.siret)):
                found.manages[email].add(siret)
            for email, siret in conn.execute(select(collaborators.c.user_email, collaborators.c.firm_siret)):
                found.collaborates[email].add(siret)
            scopes: dict[str, frozenset] = {}
            for row in conn.execute(
                select(delegations.c.company_siret, delegations.c.firm_siret, delegations.c.status,
                       delegations.c.scope, delegations.c.ends_at).where(delegations.c.firm_siret.is_not(None))
            ):
                scope = scopes.setdefault(row.scope, frozenset(row.scope.split()))
                ends = None if row.ends_at is None else row.ends_at.timestamp()
                found.delegations[(row.company_siret, row.firm_siret)].append((row.status, scope, ends))
                found.clients[row.firm_siret].add(row.company_siret)
            for row in conn.execute(
                select(grants.c.collaborator_email, grants.c.company_siret, grants.c.firm_siret, grants.c.status,
                       grants.c.scope, grants.c.ends_at)
            ):
                scope = scopes.setdefault(row.scope, frozenset(row.scope.split()))
                ends = None if row.ends_at is None else row.ends_at.timestamp()
                found.grants[(row.collaborator_email, row.company_siret)].append(
                    (row.firm_siret, row.status, scope, ends)
                )
        found.seconds = time.perf_counter() - started
        return found

    def firm_holds(self, firm: str, right: str, siret: str, now: float) -> bool:
        for status, scope, ends in self.delegations.get((siret, firm), ()):
            if status == ACTIVE and (ends is None or ends > now) and right in scope:
                return True
        return False

    def decide(self, email: str, right: str, siret: str, now: float) -> bool:
        if right not in RIGHTS:
            return False
        if siret in self.admin_of.get(email, ()):
            return True
        if right not in DELEGABLE_SET:
            return False
        for firm in self.manages.get(email, ()):
            if self.firm_holds(firm, right, siret, now):
                return True
        works_for = self.collaborates.get(email, ())
        for firm, status, scope, ends in self.grants.get((email, siret), ()):
            if (firm in works_for and status == ACTIVE and (ends is None or ends > now) and right in scope
                    and self.firm_holds(firm, right, siret, now)):
                return True
        return False

    def resources(self, email: str, right: str, now: float) -> list[str]:
        """The companies an admin or firm manager holds ``right`` on, sorted (a firm's client list)."""
        candidates = set(self.admin_of.get(email, ()))
        for firm in self.manages.get(email, ()):
            candidates |= self.clients.get(firm, set())
        return sorted(siret for siret in candidates if self.decide(email, right, siret, now))
