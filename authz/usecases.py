"""Management use cases: the delegation lifecycle, each one transaction with its audit.

Every "may this person do this?" is asked of the policy (``Engine.allows``); this
module only checks the state of the data (does the row exist, is the link still
pending) and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from authz import audit, model, tokens
from authz.audit import Context
from authz.engine import Engine
from authz.errors import Conflict, Forbidden, Gone, InvalidInput, NotFound
from authz.records import delegation_record, delegation_status, grant_record, is_live
from authz.store import Database, Tx, delegation_fact, grant_fact, join_scope, new_id
from authz.tables import utcnow

DEFAULT_ACTIVATION_TTL = timedelta(days=7)
NOT_PERMITTED = "you are not allowed to do this"


class Management:
    """The management API of the library: companies, delegations, firms, grants."""

    def __init__(
        self,
        db: Database,
        policy: Callable[[], Engine],
        clock: Callable[[], datetime] = utcnow,
        activation_ttl: timedelta = DEFAULT_ACTIVATION_TTL,
    ):
        self.db = db
        self.policy = policy
        self.clock = clock
        self.activation_ttl = activation_ttl

    # ---- helpers ------------------------------------------------------------------

    def _require(self, engine: Engine, user: model.User, action: str, resource: object) -> None:
        if not engine.allows(user, action, resource):
            raise Forbidden(NOT_PERMITTED, code="forbidden")

    def _acting(self, tx: Tx, ctx: Context, now: datetime) -> model.User:
        if not ctx.user:
            raise InvalidInput("this call needs the Acting-User header", {"Acting-User": ["required"]})
        return tx.user_facts(ctx.user, now.timestamp())

    def _scope(self, engine: Engine, scope: Iterable[str], delegation: bool = False) -> list[str]:
        """Validate a scope against the policy's rights; for a delegation, also delegability."""
        scope = sorted(set(scope))
        if not scope:
            raise InvalidInput("a scope needs at least one right", {"scope": ["empty"]})
        unknown = [right for right in scope if right not in engine.rights]
        if unknown:
            raise InvalidInput(
                "the scope names rights the policy does not know",
                {"scope": [f"unknown right: {right}" for right in unknown]},
            )
        if delegation:
            refused = [right for right in scope if not engine.may_delegate(right)]
            if refused:
                raise Forbidden(
                    "these rights cannot be delegated to a firm",
                    {"not_delegable": refused},
                    code="not_delegable",
                )
        return scope

    def _future(self, ends_at: datetime | None, now: datetime) -> datetime | None:
        if ends_at is not None and ends_at <= now:
            raise InvalidInput("ends_at must be in the future", {"ends_at": ["in the past"]})
        return ends_at

    # ---- companies ------------------------------------------------------------------

    def register_company(self, ctx: Context, siret: str, name: str, admin_email: str) -> model.CompanyRecord:
        now = self.clock()
        with self.db.transaction() as tx:
            if tx.company_exists(siret, lock=True):
                raise Conflict("this company is already registered", code="company_exists")
            try:
                with tx.conn.begin_nested():
                    tx.insert_company(siret, name, now)
            except IntegrityError as exc:  # registered by a concurrent call since the check
                raise Conflict("this company is already registered", code="company_exists") from exc
            tx.add_admin(siret, admin_email, now)
            audit.record(tx, ctx, now, "company.register", company=siret, subject=admin_email, name=name)
            return _company(tx, siret)

    def get_company(self, ctx: Context, siret: str) -> model.CompanyRecord:
        now = self.clock()
        with self.db.transaction(write=False) as tx:
            self._require(self.policy(), self._acting(tx, ctx, now), "read", model.CompanySpace(siret))
            return _company(tx, siret)

    def add_admin(self, ctx: Context, siret: str, email: str) -> model.CompanyRecord:
        now = self.clock()
        with self.db.transaction() as tx:
            tx.company_exists(siret, lock=True)  # first: the policy must see the admins as they are now
            self._require(self.policy(), self._acting(tx, ctx, now), "manage_admins", model.CompanySpace(siret))
            if not tx.add_admin(siret, email, now):
                raise Conflict("this person is already an admin of the company", code="already_admin")
            audit.record(tx, ctx, now, "company.admin_add", company=siret, subject=email)
            return _company(tx, siret)

    def remove_admin(self, ctx: Context, siret: str, email: str) -> model.CompanyRecord:
        now = self.clock()
        with self.db.transaction() as tx:
            # Lock first, so an admin removed by a concurrent call can no longer act.
            tx.company_exists(siret, lock=True)
            self._require(self.policy(), self._acting(tx, ctx, now), "manage_admins", model.CompanySpace(siret))
            admins = tx.admins(siret)
            if email not in admins:
                raise NotFound("this person is not an admin of the company", code="admin_not_found")
            if admins == [email]:
                raise Conflict("the last admin of a company cannot be removed", code="last_admin")
            tx.remove_admin(siret, email)
            audit.record(tx, ctx, now, "company.admin_remove", company=siret, subject=email)
            return _company(tx, siret)

    # ---- delegations ------------------------------------------------------------------

    def designate(
        self,
        ctx: Context,
        siret: str,
        manager_email: str,
        scope: Iterable[str],
        ends_at: datetime | None = None,
    ) -> model.Designation:
        now = self.clock()
        engine = self.policy()
        with self.db.transaction() as tx:
            tx.company_exists(siret, lock=True)  # first: the policy must see the admins as they are now
            self._require(engine, self._acting(tx, ctx, now), "designate", model.CompanySpace(siret))
            scope = self._scope(engine, scope, delegation=True)
            self._future(ends_at, now)
            for firm in tx.user_facts(manager_email, now.timestamp()).manages:
                current = tx.active_delegation(siret, firm)
                if current is not None and delegation_status(current, now) == model.LinkStatus.ACTIVE:
                    raise Conflict(
                        "this firm already holds an active delegation from the company; change it instead",
                        {"firm": firm},
                        code="delegation_exists",
                    )
            # A new designation to the same person replaces a pending one: the old link
            # must never work once a new one is sent.
            replaced = []
            for row in tx.pending_delegations_for(siret, manager_email, lock=True):
                tx.update_delegation(row.id, status=model.LinkStatus.REVOKED, revoked_at=now, updated_at=now)
                replaced.append(row.id)
            token = tokens.new_secret()
            expires_at = now + self.activation_ttl
            delegation_id = new_id()
            tx.insert_delegation(
                id=delegation_id,
                company_siret=siret,
                manager_email=manager_email,
                firm_siret=None,
                status=model.LinkStatus.PENDING,
                scope=join_scope(scope),
                token_hash=tokens.digest(token),
                token_expires_at=expires_at,
                ends_at=ends_at,
                created_at=now,
                updated_at=now,
            )
            audit.record(
                tx, ctx, now, "delegation.designate", company=siret, subject=manager_email,
                target=delegation_id, scope=scope, ends_at=_iso(ends_at), replaced=replaced,
            )
            record = delegation_record(tx.delegation_row(delegation_id), now)
        return model.Designation(record, model.Activation(token=token, expires_at=expires_at))

    def list_delegations(self, ctx: Context, siret: str) -> list[model.DelegationRecord]:
        now = self.clock()
        with self.db.transaction(write=False) as tx:
            self._require(self.policy(), self._acting(tx, ctx, now), "list_delegations", model.CompanySpace(siret))
            return [delegation_record(row, now) for row in tx.delegations_of_company(siret)]

    def activate(self, ctx: Context, token: str, firm_siret: str, firm_name: str) -> model.DelegationRecord:
        now = self.clock()
        engine = self.policy()
        with self.db.transaction() as tx:
            row = tx.delegation_by_token(tokens.digest(token), lock=True)
            if row is None:
                raise NotFound("this activation link is unknown", code="unknown_token")
            user = self._acting(tx, ctx, now)
            self._require(engine, user, "activate", delegation_fact(row))
            if row.status != model.LinkStatus.PENDING:
                raise Gone("this activation link has already been used or withdrawn", code="token_used")
            if delegation_status(row, now) == model.LinkStatus.EXPIRED:
                raise Gone("this activation link has expired; ask the company for a new one", code="token_expired")
            firm = tx.firm_row(firm_siret, lock=True)
            if firm is None:
                tx.ensure_user(user.email, now)
                tx.insert_firm(firm_siret, firm_name, user.email, now)
            else:
                self._require(engine, user, "activate_into", model.Firm(firm.siret, firm.manager_email))
            closed = self._close_if_lapsed(tx, tx.active_delegation(row.company_siret, firm_siret, lock=True), now)
            tx.update_delegation(
                row.id, status=model.LinkStatus.ACTIVE, firm_siret=firm_siret, activated_at=now, updated_at=now
            )
            audit.record(
                tx, ctx, now, "delegation.activate", company=row.company_siret, firm=firm_siret,
                subject=user.email, target=row.id, firm_created=firm is None, lapsed_closed=closed,
                firm_name=firm_name if firm is None else firm.name,
            )
            return delegation_record(tx.delegation_row(row.id), now)

    @staticmethod
    def _close_if_lapsed(tx: Tx, current, now: datetime) -> str | None:
        """Refuse a second live delegation for a pair; close the old one if it has lapsed.

        A lapsed delegation still reads ``active`` in storage (its end date did the
        work), and the one-active-per-pair index would refuse the new one.
        """
        if current is None:
            return None
        if delegation_status(current, now) == model.LinkStatus.ACTIVE:
            raise Conflict(
                "the firm already holds an active delegation from this company",
                code="delegation_exists",
            )
        tx.update_delegation(current.id, status=model.LinkStatus.EXPIRED, updated_at=now)
        return current.id

    def _delegation(self, tx: Tx, ctx: Context, now: datetime, delegation_id: str, action: str, lock: bool = False):
        row = tx.delegation_row(delegation_id, lock=lock)
        if row is None:
            raise NotFound("no such delegation", code="delegation_not_found")
        self._require(self.policy(), self._acting(tx, ctx, now), action, delegation_fact(row))
        return row

    def get_delegation(self, ctx: Context, delegation_id: str) -> model.DelegationRecord:
        now = self.clock()
        with self.db.transaction(write=False) as tx:
            return delegation_record(self._delegation(tx, ctx, now, delegation_id, "read"), now)

    def change_delegation(
        self,
        ctx: Context,
        delegation_id: str,
        scope: Iterable[str] | None = None,
        ends_at: datetime | None = None,
        clear_ends_at: bool = False,
    ) -> model.DelegationRecord:
        now = self.clock()
        engine = self.policy()
        with self.db.transaction() as tx:
            row = self._delegation(tx, ctx, now, delegation_id, "change", lock=True)
            if not is_live(delegation_status(row, now)):
                raise Conflict("only a pending or active delegation can change", code="delegation_closed")
            changes: dict = {}
            if scope is not None:
                changes["scope"] = join_scope(self._scope(engine, scope, delegation=True))
            if clear_ends_at:
                changes["ends_at"] = None
            elif ends_at is not None:
                changes["ends_at"] = self._future(ends_at, now)
            if changes:
                tx.update_delegation(row.id, updated_at=now, **changes)
                audit.record(
                    tx, ctx, now, "delegation.change", company=row.company_siret, firm=row.firm_siret,
                    target=row.id, before={"scope": row.scope.split(), "ends_at": _iso(row.ends_at)},
                    after={"scope": changes.get("scope", row.scope).split(),
                           "ends_at": _iso(changes.get("ends_at", row.ends_at))},
                )
            return delegation_record(tx.delegation_row(row.id), now)

    def revoke_delegation(self, ctx: Context, delegation_id: str) -> model.DelegationRecord:
        now = self.clock()
        with self.db.transaction() as tx:
            row = self._delegation(tx, ctx, now, delegation_id, "revoke", lock=True)
            if row.status != model.LinkStatus.REVOKED:
                tx.update_delegation(row.id, status=model.LinkStatus.REVOKED, revoked_at=now, updated_at=now)
                audit.record(
                    tx, ctx, now, "delegation.revoke", company=row.company_siret, firm=row.firm_siret,
                    target=row.id, previous_status=str(delegation_status(row, now)),
                )
            return delegation_record(tx.delegation_row(row.id), now)

    # ---- firms -----------------------------------------------------------------------

    def _firm(self, tx: Tx, ctx: Context, now: datetime, siret: str, action: str, lock: bool = False) -> model.User:
        row = tx.firm_row(siret, lock=lock)
        user = self._acting(tx, ctx, now)
        firm = model.Firm(siret, row.manager_email if row else None)
        self._require(self.policy(), user, action, firm)
        return user

    def clients(self, ctx: Context, firm_siret: str) -> list[model.ClientRecord]:
        """The firm's client companies, each with the rights the firm holds there now."""
        now = self.clock()
        engine = self.policy()
        with self.db.transaction(write=False) as tx:
            user = self._firm(tx, ctx, now, firm_siret, "read_clients")
            rows = tx.delegations_of_firm(firm_siret)
            facts = tx.companies_facts([row.company_siret for row in rows], firms=[firm_siret], with_grants=False)
        result = []
        for row in rows:
            company = facts[row.company_siret]
            held = tuple(sorted(engine.rights_firm_holds(firm_siret, company, user.now)))
            if held:
                result.append(model.ClientRecord(row.company_siret, row.name, row.id, held, row.ends_at))
        return result

    def collaborators(self, ctx: Context, firm_siret: str) -> list[model.CollaboratorRecord]:
        now = self.clock()
        with self.db.transaction(write=False) as tx:
            self._firm(tx, ctx, now, firm_siret, "manage_collaborators")
            rows = tx.collaborators(firm_siret)
            return [model.CollaboratorRecord(r.firm_siret, r.user_email, r.created_at) for r in rows]

    def add_collaborator(self, ctx: Context, firm_siret: str, email: str) -> model.CollaboratorRecord:
        now = self.clock()
        with self.db.transaction() as tx:
            self._firm(tx, ctx, now, firm_siret, "manage_collaborators", lock=True)
            if tx.is_collaborator(firm_siret, email):
                raise Conflict("this person is already a collaborator of the firm", code="already_collaborator")
            tx.add_collaborator(firm_siret, email, now)
            audit.record(tx, ctx, now, "firm.collaborator_add", firm=firm_siret, subject=email)
            return model.CollaboratorRecord(firm_siret, email, now)

    def remove_collaborator(self, ctx: Context, firm_siret: str, email: str) -> list[str]:
        """Remove a collaborator and end all their grants in the firm; return those grant ids."""
        now = self.clock()
        with self.db.transaction() as tx:
            self._firm(tx, ctx, now, firm_siret, "manage_collaborators", lock=True)
            if not tx.is_collaborator(firm_siret, email):
                raise NotFound("this person is not a collaborator of the firm", code="collaborator_not_found")
            ended = [row.id for row in tx.active_grants_of(firm_siret, email)]
            for grant_id in ended:
                tx.update_grant(grant_id, status=model.LinkStatus.REVOKED, revoked_at=now, updated_at=now)
            tx.remove_collaborator(firm_siret, email)
            audit.record(tx, ctx, now, "firm.collaborator_remove", firm=firm_siret, subject=email, grants_revoked=ended)
            return ended

    # ---- grants ------------------------------------------------------------------------

    def _grantable(self, engine: Engine, tx: Tx, user: model.User, firm: str, company: str, scope: list[str]) -> None:
        """Refuse a scope with a right the firm does not hold on the company now."""
        facts = tx.companies_facts([company], firms=[firm], with_grants=False)[company]
        manager_firm = model.Firm(firm, user.email)
        exceeding = [right for right in scope if not engine.may_grant(user, right, manager_firm, facts)]
        if exceeding:
            raise Forbidden(
                "the firm does not hold these rights on this company",
                {"exceeding": exceeding},
                code="scope_exceeds_firm",
            )

    def grant(
        self,
        ctx: Context,
        firm_siret: str,
        collaborator: str,
        company: str,
        scope: Iterable[str],
        ends_at: datetime | None = None,
    ) -> model.GrantRecord:
        now = self.clock()
        engine = self.policy()
        with self.db.transaction() as tx:
            user = self._firm(tx, ctx, now, firm_siret, "grant", lock=True)
            scope = self._scope(engine, scope)
            self._future(ends_at, now)
            if not tx.is_collaborator(firm_siret, collaborator):
                raise Conflict("this person is not a collaborator of the firm", code="not_a_collaborator")
            self._grantable(engine, tx, user, firm_siret, company, scope)
            current = tx.active_grant(firm_siret, collaborator, company)
            closed = None
            if current is not None:
                if grant_record(current, now).status == model.LinkStatus.ACTIVE:
                    raise Conflict(
                        "this collaborator already has a grant on this company; change it instead",
                        code="grant_exists",
                    )
                # A lapsed grant still reads active in storage; close it so the new one fits.
                tx.update_grant(current.id, status=model.LinkStatus.EXPIRED, updated_at=now)
                closed = current.id
            grant_id = new_id()
            try:
                tx.insert_grant(
                    id=grant_id, firm_siret=firm_siret, collaborator_email=collaborator, company_siret=company,
                    status=model.LinkStatus.ACTIVE, scope=join_scope(scope), ends_at=ends_at,
                    created_at=now, updated_at=now,
                )
            except IntegrityError as exc:
                raise Conflict("this grant conflicts with another change", code="grant_exists") from exc
            audit.record(
                tx, ctx, now, "grant.create", company=company, firm=firm_siret, subject=collaborator,
                target=grant_id, scope=scope, ends_at=_iso(ends_at), lapsed_closed=closed,
            )
            return grant_record(tx.grant_row(grant_id), now)

    def _grant(self, tx: Tx, ctx: Context, now: datetime, grant_id: str, action: str, lock: bool = False):
        row = tx.grant_row(grant_id, lock=lock)
        if row is None:
            raise NotFound("no such grant", code="grant_not_found")
        user = self._acting(tx, ctx, now)
        self._require(self.policy(), user, action, grant_fact(row))
        return row, user

    def get_grant(self, ctx: Context, grant_id: str) -> model.GrantRecord:
        now = self.clock()
        with self.db.transaction(write=False) as tx:
            row, _ = self._grant(tx, ctx, now, grant_id, "read")
            return grant_record(row, now)

    def change_grant(
        self,
        ctx: Context,
        grant_id: str,
        scope: Iterable[str] | None = None,
        ends_at: datetime | None = None,
        clear_ends_at: bool = False,
    ) -> model.GrantRecord:
        now = self.clock()
        engine = self.policy()
        with self.db.transaction() as tx:
            row, user = self._grant(tx, ctx, now, grant_id, "change", lock=True)
            if not is_live(grant_record(row, now).status):
                raise Conflict("only an active grant can change", code="grant_closed")
            changes: dict = {}
            if scope is not None:
                new_scope = self._scope(engine, scope)
                self._grantable(engine, tx, user, row.firm_siret, row.company_siret, new_scope)
                changes["scope"] = join_scope(new_scope)
            if clear_ends_at:
                changes["ends_at"] = None
            elif ends_at is not None:
                changes["ends_at"] = self._future(ends_at, now)
            if changes:
                tx.update_grant(row.id, updated_at=now, **changes)
                audit.record(
                    tx, ctx, now, "grant.change", company=row.company_siret, firm=row.firm_siret,
                    subject=row.collaborator_email, target=row.id,
                    before={"scope": row.scope.split(), "ends_at": _iso(row.ends_at)},
                    after={"scope": changes.get("scope", row.scope).split(),
                           "ends_at": _iso(changes.get("ends_at", row.ends_at))},
                )
            return grant_record(tx.grant_row(row.id), now)

    def revoke_grant(self, ctx: Context, grant_id: str) -> model.GrantRecord:
        now = self.clock()
        with self.db.transaction() as tx:
            row, _ = self._grant(tx, ctx, now, grant_id, "revoke", lock=True)
            if row.status != model.LinkStatus.REVOKED:
                tx.update_grant(row.id, status=model.LinkStatus.REVOKED, revoked_at=now, updated_at=now)
                audit.record(
                    tx, ctx, now, "grant.revoke", company=row.company_siret, firm=row.firm_siret,
                    subject=row.collaborator_email, target=row.id,
                )
            return grant_record(tx.grant_row(row.id), now)

    # ---- audit --------------------------------------------------------------------------

    def audit_log(
        self,
        ctx: Context,
        *,
        may_read_all: bool,
        company: str | None = None,
        user: str | None = None,
        since: datetime | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[model.AuditRecord]:
        """Read the log: everything with ``may_read_all`` (admin key), else one company's."""
        now = self.clock()
        with self.db.transaction(write=False) as tx:
            if not may_read_all:
                if not company:
                    raise InvalidInput("give the company whose log you want", {"company": ["required"]})
                self._require(self.policy(), self._acting(tx, ctx, now), "read_audit", model.CompanySpace(company))
            return tx.audit(company, user, since, after_id, limit)


def _company(tx: Tx, siret: str) -> model.CompanyRecord:
    record = tx.company(siret)
    if record is None:
        raise NotFound("no such company", code="company_not_found")
    return record


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
