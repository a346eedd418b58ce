"""An independent reference model of the delegation rules, in plain Python.

Written from the rules in ``/work/shared/domain.md``, not from the service: it never
imports ``authz`` (identifiers are plain strings here) and knows nothing of Polar or
SQL. The property test drives the service and this model with the same operations
and compares their answers.

The model has two halves:

* **state and decisions**: companies and their admins, delegations, firms,
  collaborators, grants; ``holds(user, right, company, now)`` and the searches.
* **write rules**: for each management operation, ``refusals_*`` returns the set of
  reasons (error kinds) for which the domain refuses it; an empty set means the
  operation must succeed. The service may report any one of them (the order in which
  it checks is its own business), but it must refuse iff the set is not empty.
  ``apply_*`` then mirrors an operation the service accepted.

Error kinds: ``forbidden`` (the actor may not), ``invalid`` (bad input: empty scope,
unknown right, end date not in the future), ``conflict`` (contradicts the state),
``not_found`` (no such link / person in that role), ``gone`` (used or expired
activation link).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

# The starting list of rights (domain.md, "Rights"), and the ones a firm may hold.
RIGHTS: tuple[str, ...] = (
    "declarations",
    "cotisations",
    "compte",
    "salaries",
    "conges",
    "intemperies",
    "attestations",
    "entreprise",
)
DELEGABLE: frozenset[str] = frozenset(RIGHTS) - {"entreprise"}

# Validity of an activation link (domain.md: 7 days by default).
ACTIVATION_TTL = timedelta(days=7)

PENDING, ACTIVE, REVOKED, EXPIRED = "pending", "active", "revoked", "expired"

FORBIDDEN, INVALID, CONFLICT, NOT_FOUND, GONE = "forbidden", "invalid", "conflict", "not_found", "gone"


def lapsed(ends_at: datetime | None, now: datetime) -> bool:
    """A link with an end date stops at that instant (ends_at <= now: lapsed)."""
    return ends_at is not None and ends_at <= now


@dataclass
class RefDelegation:
    id: str
    company: str
    manager_email: str
    scope: frozenset[str]
    ends_at: datetime | None
    link_expires_at: datetime          # activation link validity
    token: str
    firm: str | None = None            # set at activation
    status: str = PENDING              # stored state: pending, active, revoked

    def in_force(self, now: datetime) -> bool:
        return self.status == ACTIVE and not lapsed(self.ends_at, now)

    def link_usable(self, now: datetime) -> bool:
        return self.status == PENDING and now < self.link_expires_at

    def shown_status(self, now: datetime) -> str:
        """The state a reader sees: stored state, or ``expired`` once time ran out."""
        if self.status == PENDING and not now < self.link_expires_at:
            return EXPIRED
        if self.status == ACTIVE and lapsed(self.ends_at, now):
            return EXPIRED
        return self.status


@dataclass
class RefGrant:
    id: str
    firm: str
    collaborator: str
    company: str
    scope: frozenset[str]
    ends_at: datetime | None
    status: str = ACTIVE               # active or revoked

    def in_force(self, now: datetime) -> bool:
        return self.status == ACTIVE and not lapsed(self.ends_at, now)

    def shown_status(self, now: datetime) -> str:
        if self.status == ACTIVE and lapsed(self.ends_at, now):
            return EXPIRED
        return self.status


@dataclass
class Reference:
    """The whole state: who is admin where, the delegation graph, and its links."""

    admins: dict[str, set[str]] = field(default_factory=dict)          # company -> admins
    managers: dict[str, str] = field(default_factory=dict)             # firm -> manager e-mail
    collaborators: dict[str, set[str]] = field(default_factory=dict)   # firm -> collaborators
    delegations: dict[str, RefDelegation] = field(default_factory=dict)
    grants: dict[str, RefGrant] = field(default_factory=dict)

    # ---- decisions --------------------------------------------------------------

    def is_admin(self, user: str, company: str) -> bool:
        return user in self.admins.get(company, ())

    def firm_holds(self, firm: str, right: str, company: str, now: datetime) -> bool:
        """A firm holds a delegable right through an active, unexpired delegation."""
        return right in DELEGABLE and any(
            d.company == company and d.firm == firm and d.in_force(now) and right in d.scope
            for d in self.delegations.values()
        )

    def holds(self, user: str, right: str, company: str, now: datetime) -> bool:
        if right not in RIGHTS or company not in self.admins:
            return False  # default deny: unknown right or company
        if self.is_admin(user, company):
            return True  # the company keeps every right, delegable or not
        if any(
            manager == user and self.firm_holds(firm, right, company, now) for firm, manager in self.managers.items()
        ):
            return True
        return any(
            g.collaborator == user
            and g.company == company
            and user in self.collaborators.get(g.firm, ())
            and g.in_force(now)
            and right in g.scope
            and self.firm_holds(g.firm, right, company, now)  # attenuation
            for g in self.grants.values()
        )

    def resources(self, user: str, right: str, companies, now: datetime) -> list[str]:
        return sorted(c for c in set(companies) if self.holds(user, right, c, now))

    def subjects(self, company: str, right: str, users, now: datetime) -> list[str]:
        return sorted(u for u in set(users) if self.holds(u, right, company, now))

    def actions(self, user: str, company: str, now: datetime) -> list[str]:
        return sorted(r for r in RIGHTS if self.holds(user, r, company, now))

    def firm_clients(self, firm: str, companies, now: datetime) -> dict[str, list[str]]:
        """Company -> rights the firm holds there now (companies where it holds none left out)."""
        result = {}
        for company in sorted(set(companies)):
            held = sorted(r for r in RIGHTS if self.firm_holds(firm, r, company, now))
            if held:
                result[company] = held
        return result

    # ---- shared checks ----------------------------------------------------------

    @staticmethod
    def _scope_refusals(scope, delegation: bool) -> set[str]:
        scope = set(scope)
        reasons = set()
        if not scope or scope - set(RIGHTS):
            reasons.add(INVALID)
        if delegation and (scope & set(RIGHTS)) - DELEGABLE:
            reasons.add(FORBIDDEN)  # fraud-sensitive rights stay home
        return reasons

    @staticmethod
    def _end_refusals(ends_at: datetime | None, now: datetime) -> set[str]:
        return {INVALID} if ends_at is not None and ends_at <= now else set()

    def _pair_in_force(self, company: str, firm: str, now: datetime) -> bool:
        """One active delegation per company-firm pair (domain.md, open points); a lapsed one
        is no longer active and does not block a renewal."""
        return any(d.company == company and d.firm == firm and d.in_force(now) for d in self.delegations.values())

    # ---- companies --------------------------------------------------------------

    def refusals_register_company(self, siret: str) -> set[str]:
        return {CONFLICT} if siret in self.admins else set()

    def apply_register_company(self, siret: str, admin: str) -> None:
        self.admins[siret] = {admin}

    def refusals_add_admin(self, actor: str, siret: str, email: str) -> set[str]:
        if not self.is_admin(actor, siret):
            return {FORBIDDEN}
        return {CONFLICT} if email in self.admins[siret] else set()

    def apply_add_admin(self, siret: str, email: str) -> None:
        self.admins[siret].add(email)

    def refusals_remove_admin(self, actor: str, siret: str, email: str) -> set[str]:
        if not self.is_admin(actor, siret):
            return {FORBIDDEN}
        if email not in self.admins[siret]:
            return {NOT_FOUND}
        return {CONFLICT} if self.admins[siret] == {email} else set()  # the last admin stays

    def apply_remove_admin(self, siret: str, email: str) -> None:
        self.admins[siret].discard(email)

    # ---- delegations ------------------------------------------------------------

    def refusals_designate(self, actor, siret, manager_email, scope, ends_at, now) -> set[str]:
        reasons = set() if self.is_admin(actor, siret) else {FORBIDDEN}
        reasons |= self._scope_refusals(scope, delegation=True)
        reasons |= self._end_refusals(ends_at, now)
        if any(
            manager == manager_email and self._pair_in_force(siret, firm, now)
            for firm, manager in self.managers.items()
        ):
            reasons.add(CONFLICT)  # the firm already holds a delegation from the company: change it
        return reasons

    def apply_designate(self, id, token, siret, manager_email, scope, ends_at, now) -> RefDelegation:
        # A new designation to the same person replaces a pending one: the old link never works.
        for d in self.delegations.values():
            if d.company == siret and d.manager_email == manager_email and d.status == PENDING:
                d.status = REVOKED
        d = RefDelegation(id, siret, manager_email, frozenset(scope), ends_at, now + ACTIVATION_TTL, token)
        self.delegations[id] = d
        return d

    def delegation_by_token(self, token: str) -> RefDelegation | None:
        return next((d for d in self.delegations.values() if d.token == token), None)

    def refusals_activate(self, actor, token, firm, now) -> set[str]:
        d = self.delegation_by_token(token)
        if d is None:
            return {NOT_FOUND}
        reasons = set()
        if actor != d.manager_email:
            reasons.add(FORBIDDEN)  # only the person named at designation
        if not d.link_usable(now):
            reasons.add(GONE)  # used, replaced, revoked, or expired
        if firm in self.managers and self.managers[firm] != actor:
            reasons.add(FORBIDDEN)  # joining an existing firm is its manager's act
        if self._pair_in_force(d.company, firm, now):
            reasons.add(CONFLICT)
        return reasons

    def apply_activate(self, actor, token, firm) -> RefDelegation:
        d = self.delegation_by_token(token)
        if firm not in self.managers:
            self.managers[firm] = actor
            self.collaborators[firm] = set()
        d.firm = firm
        d.status = ACTIVE
        return d

    def refusals_change_delegation(self, actor, id, scope, ends_at, clear_ends_at, now) -> set[str]:
        d = self.delegations.get(id)
        if d is None:
            return {NOT_FOUND}
        reasons = set() if self.is_admin(actor, d.company) else {FORBIDDEN}
        if d.shown_status(now) not in (PENDING, ACTIVE):
            reasons.add(CONFLICT)  # revoked or expired links cannot change
        if scope is not None:
            reasons |= self._scope_refusals(scope, delegation=True)
        if not clear_ends_at:
            reasons |= self._end_refusals(ends_at, now)
        return reasons

    def apply_change_delegation(self, id, scope, ends_at, clear_ends_at) -> RefDelegation:
        d = self.delegations[id]
        if scope is not None:
            d.scope = frozenset(scope)
        if clear_ends_at:
            d.ends_at = None
        elif ends_at is not None:
            d.ends_at = ends_at
        return d

    def refusals_revoke_delegation(self, actor, id) -> set[str]:
        d = self.delegations.get(id)
        if d is None:
            return {NOT_FOUND}
        company_side = self.is_admin(actor, d.company)
        firm_side = d.firm is not None and self.managers.get(d.firm) == actor  # the firm may renounce
        return set() if company_side or firm_side else {FORBIDDEN}

    def apply_revoke_delegation(self, id) -> RefDelegation:
        d = self.delegations[id]
        d.status = REVOKED
        return d

    # ---- firms ------------------------------------------------------------------

    def is_manager(self, actor: str, firm: str) -> bool:
        return firm in self.managers and self.managers[firm] == actor

    def refusals_add_collaborator(self, actor, firm, email) -> set[str]:
        if not self.is_manager(actor, firm):
            return {FORBIDDEN}
        return {CONFLICT} if email in self.collaborators[firm] else set()

    def apply_add_collaborator(self, firm, email) -> None:
        self.collaborators[firm].add(email)

    def refusals_remove_collaborator(self, actor, firm, email) -> set[str]:
        if not self.is_manager(actor, firm):
            return {FORBIDDEN}
        return set() if email in self.collaborators[firm] else {NOT_FOUND}

    def apply_remove_collaborator(self, firm, email, now) -> tuple[set[str], set[str]]:
        """Remove the collaborator and end all their grants in the firm.

        Returns the ids the service must report as ended (the grants in force) and
        those it may report (also the lapsed ones, not yet closed: reporting them is a
        presentation choice).
        """
        must, may = set(), set()
        for g in self.grants.values():
            if g.firm == firm and g.collaborator == email and g.status == ACTIVE:
                (must if g.in_force(now) else may).add(g.id)
                g.status = REVOKED
        self.collaborators[firm].discard(email)
        return must, must | may

    # ---- grants -----------------------------------------------------------------

    def refusals_grant(self, actor, firm, collaborator, company, scope, ends_at, now) -> set[str]:
        if not self.is_manager(actor, firm):
            return {FORBIDDEN}
        reasons = self._scope_refusals(scope, delegation=False)
        reasons |= self._end_refusals(ends_at, now)
        if collaborator not in self.collaborators[firm]:
            reasons.add(CONFLICT)
        if any(r in RIGHTS and not self.firm_holds(firm, r, company, now) for r in scope):
            reasons.add(FORBIDDEN)  # no widening at write time
        if any(
            g.firm == firm and g.collaborator == collaborator and g.company == company and g.in_force(now)
            for g in self.grants.values()
        ):
            reasons.add(CONFLICT)  # one grant per collaborator and company: change it
        return reasons

    def apply_grant(self, id, firm, collaborator, company, scope, ends_at) -> RefGrant:
        g = RefGrant(id, firm, collaborator, company, frozenset(scope), ends_at)
        self.grants[id] = g
        return g

    def refusals_change_grant(self, actor, id, scope, ends_at, clear_ends_at, now) -> set[str]:
        g = self.grants.get(id)
        if g is None:
            return {NOT_FOUND}
        if not self.is_manager(actor, g.firm):
            return {FORBIDDEN}
        reasons = set()
        if not g.in_force(now):
            reasons.add(CONFLICT)  # revoked or expired grants cannot change
        if scope is not None:
            reasons |= self._scope_refusals(scope, delegation=False)
            if any(r in RIGHTS and not self.firm_holds(g.firm, r, g.company, now) for r in scope):
                reasons.add(FORBIDDEN)
        if not clear_ends_at:
            reasons |= self._end_refusals(ends_at, now)
        return reasons

    def apply_change_grant(self, id, scope, ends_at, clear_ends_at) -> RefGrant:
        g = self.grants[id]
        if scope is not None:
            g.scope = frozenset(scope)
        if clear_ends_at:
            g.ends_at = None
        elif ends_at is not None:
            g.ends_at = ends_at
        return g

    def refusals_revoke_grant(self, actor, id) -> set[str]:
        g = self.grants.get(id)
        if g is None:
            return {NOT_FOUND}
        return set() if self.is_manager(actor, g.firm) else {FORBIDDEN}

    def apply_revoke_grant(self, id) -> RefGrant:
        g = self.grants[id]
        g.status = REVOKED
        return g
