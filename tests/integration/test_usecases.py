"""The use cases against a real database (SQLite, and PostgreSQL when configured).

Every change is checked for its one audit record; every refusal is checked for its
error code and for leaving the whole store, audit log included, exactly as it was.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from authz import audit
from authz.audit import Context
from authz.decisions import Decisions
from authz.errors import Conflict, Forbidden, Gone, InvalidInput, NotFound
from authz.model import LinkStatus
from authz.store import Database
from authz.tables import data_changes, data_version, metadata, utcnow
from authz.usecases import Management
from tests.support import (
    ADMIN,
    CABINET,
    COLLAB,
    COLLAB2,
    DUPONT,
    MANAGER,
    MARTIN,
    OTHER_ADMIN,
    RIVAL_MANAGER,
    STRANGER,
    as_user,
    siret,
)

DELEGATED = ("conges", "cotisations", "declarations")
GRANTED = ("cotisations", "declarations")
UNREGISTERED = siret(3_0000_0000_0001)


# ---- helpers ------------------------------------------------------------------------------


def audit_entries(db):
    with db.transaction(write=False) as tx:
        return tx.audit(None, None, None, None, 100_000)


def snapshot(db) -> dict[str, list]:
    """Every row of every table, in a stable order."""
    with db.transaction(write=False) as tx:
        return {
            table.name: sorted((tuple(row) for row in tx.conn.execute(select(table))), key=repr)
            for table in metadata.sorted_tables
        }


@contextmanager
def one_audit_record(db, action: str, ctx):
    """Expect the block to write exactly one audit record, by ``ctx``, for ``action``."""
    before = len(audit_entries(db))
    yield
    after = audit_entries(db)
    assert len(after) == before + 1
    entry = after[-1]
    assert (entry.actor, entry.action, entry.request_id) == (ctx.actor, action, ctx.request_id)


@contextmanager
def refused(db, error: type, code: str):
    """Expect the block to raise ``error`` with ``code`` and to change nothing at all."""
    before = snapshot(db)
    with pytest.raises(error) as caught:
        yield caught
    assert caught.value.code == code
    assert snapshot(db) == before


def register(management, portal, siret=DUPONT, admin=ADMIN):
    return management.register_company(portal, siret, f"Entreprise {siret}", admin)


def designate(management, scope=DELEGATED, siret=DUPONT, admin=ADMIN, manager=MANAGER, **options):
    return management.designate(as_user(admin), siret, manager, scope, **options)


def activate(management, designation, manager=MANAGER, firm=CABINET):
    return management.activate(as_user(manager), designation.activation.token, firm, f"Cabinet {firm}")


def delegate(management, portal, scope=DELEGATED, siret=DUPONT, admin=ADMIN, **options):
    """A registered company whose delegation to CABINET is active."""
    register(management, portal, siret, admin)
    return activate(management, designate(management, scope, siret, admin, **options))


def collaborate(management, portal, scope=GRANTED, **options):
    """DUPONT delegates to CABINET, whose manager grants COLLAB ``scope`` on DUPONT."""
    delegation = delegate(management, portal)
    management.add_collaborator(as_user(MANAGER), CABINET, COLLAB)
    return delegation, management.grant(as_user(MANAGER), CABINET, COLLAB, DUPONT, scope, **options)


# ---- companies and admins -------------------------------------------------------------------


def test_registering_a_company_makes_its_first_admin(management, db, portal):
    with one_audit_record(db, "company.register", portal):
        company = register(management, portal)
    assert (company.siret, company.admins) == (DUPONT, (ADMIN,))
    assert audit_entries(db)[-1].actor == "key:test-portal"


def test_registering_a_registered_company_conflicts(management, db, portal):
    register(management, portal)
    with refused(db, Conflict, "company_exists"):
        register(management, portal, admin=STRANGER)


def test_company_admin_reads_the_company(management, portal):
    register(management, portal)
    assert management.get_company(as_user(ADMIN), DUPONT).admins == (ADMIN,)


@pytest.mark.parametrize("who", [STRANGER, OTHER_ADMIN])
def test_only_company_admin_reads_the_company(management, db, portal, who):
    register(management, portal)
    register(management, portal, MARTIN, OTHER_ADMIN)
    with refused(db, Forbidden, "forbidden"):
        management.get_company(as_user(who), DUPONT)


def test_management_call_without_acting_user_is_invalid(management, db, portal):
    register(management, portal)
    with refused(db, InvalidInput, "invalid_input"):
        management.designate(portal, DUPONT, MANAGER, DELEGATED)


def test_company_admin_adds_an_admin_who_then_holds_every_right(management, decisions, db, engine, portal):
    register(management, portal)
    ctx = as_user(ADMIN, "req-add-admin")
    with one_audit_record(db, "company.admin_add", ctx):
        company = management.add_admin(ctx, DUPONT, OTHER_ADMIN)
    assert company.admins == (ADMIN, OTHER_ADMIN)
    assert decisions.actions(OTHER_ADMIN, DUPONT) == list(engine.rights)


def test_adding_an_existing_admin_conflicts(management, db, portal):
    register(management, portal)
    with refused(db, Conflict, "already_admin"):
        management.add_admin(as_user(ADMIN), DUPONT, ADMIN)


def test_stranger_cannot_add_an_admin(management, db, portal):
    register(management, portal)
    with refused(db, Forbidden, "forbidden"):
        management.add_admin(as_user(STRANGER), DUPONT, STRANGER)


def test_removed_admin_loses_every_right(management, decisions, db, portal):
    register(management, portal)
    management.add_admin(as_user(ADMIN), DUPONT, OTHER_ADMIN)
    ctx = as_user(OTHER_ADMIN, "req-remove-admin")
    with one_audit_record(db, "company.admin_remove", ctx):
        company = management.remove_admin(ctx, DUPONT, ADMIN)
    assert company.admins == (OTHER_ADMIN,)
    assert decisions.actions(ADMIN, DUPONT) == []


def test_removing_someone_who_is_not_admin_is_not_found(management, db, portal):
    register(management, portal)
    with refused(db, NotFound, "admin_not_found"):
        management.remove_admin(as_user(ADMIN), DUPONT, STRANGER)


def test_last_admin_cannot_be_removed(management, db, portal):
    register(management, portal)
    with refused(db, Conflict, "last_admin"):
        management.remove_admin(as_user(ADMIN), DUPONT, ADMIN)


# ---- designation -----------------------------------------------------------------------------


def test_designation_is_pending_with_a_link_valid_seven_days(management, decisions, db, clock, portal):
    register(management, portal)
    ctx = as_user(ADMIN, "req-designate")
    with one_audit_record(db, "delegation.designate", ctx):
        designation = management.designate(ctx, DUPONT, MANAGER, ["declarations", "conges"])
    record = designation.delegation
    assert (record.status, record.firm, record.scope) == (LinkStatus.PENDING, None, ("conges", "declarations"))
    assert designation.activation.token
    assert designation.activation.expires_at == record.activation_expires_at == clock.now + timedelta(days=7)
    assert decisions.decide(MANAGER, "declarations", DUPONT).allowed is False


def test_activation_link_validity_is_configurable(db, engine, clock, portal):
    management = Management(db, lambda: engine, clock=clock, activation_ttl=timedelta(days=2))
    register(management, portal)
    assert designate(management).activation.expires_at == clock.now + timedelta(days=2)


@pytest.mark.parametrize("scope", [["declarations", "paie"], []])
def test_designation_with_unknown_right_or_empty_scope_is_invalid(management, db, portal, scope):
    register(management, portal)
    with refused(db, InvalidInput, "invalid_input") as caught:
        designate(management, scope)
    assert "scope" in caught.value.details


def test_entreprise_cannot_be_delegated(management, db, portal):
    register(management, portal)
    with refused(db, Forbidden, "not_delegable") as caught:
        designate(management, ["declarations", "entreprise"])
    assert caught.value.details["not_delegable"] == ["entreprise"]


@pytest.mark.parametrize("offset", [timedelta(seconds=-1), timedelta(0)])
def test_designation_ending_now_or_in_the_past_is_invalid(management, db, clock, portal, offset):
    register(management, portal)
    with refused(db, InvalidInput, "invalid_input") as caught:
        designate(management, ends_at=clock.now + offset)
    assert "ends_at" in caught.value.details


@pytest.mark.parametrize("who", [STRANGER, OTHER_ADMIN, MANAGER])
def test_only_company_admin_designates(management, db, portal, who):
    register(management, portal)
    register(management, portal, MARTIN, OTHER_ADMIN)
    with refused(db, Forbidden, "forbidden"):
        designate(management, admin=who)


def test_new_designation_to_same_manager_withdraws_the_pending_one(management, db, portal):
    register(management, portal)
    first = designate(management, ["declarations"])
    second = designate(management, ["cotisations"])

    statuses = {d.id: d.status for d in management.list_delegations(as_user(ADMIN), DUPONT)}
    assert statuses == {first.delegation.id: LinkStatus.REVOKED, second.delegation.id: LinkStatus.PENDING}
    with refused(db, Gone, "token_used"):
        activate(management, first)
    assert activate(management, second).scope == ("cotisations",)


def test_designating_a_firm_that_already_holds_an_active_delegation_conflicts(management, db, portal):
    delegate(management, portal)
    with refused(db, Conflict, "delegation_exists") as caught:
        designate(management, ["compte"])
    assert caught.value.details["firm"] == CABINET


def test_company_can_designate_again_a_firm_whose_delegation_lapsed(management, decisions, clock, portal):
    delegate(management, portal, ends_at=clock.now + timedelta(days=30))
    clock.advance(days=31)
    assert decisions.decide(MANAGER, "declarations", DUPONT).allowed is False

    renewal = designate(management, ["declarations"])

    assert activate(management, renewal).status == LinkStatus.ACTIVE
    assert decisions.decide(MANAGER, "declarations", DUPONT).allowed is True


# ---- activation ------------------------------------------------------------------------------


def test_unknown_activation_link_is_not_found(management, db, portal):
    register(management, portal)
    with refused(db, NotFound, "unknown_token"):
        management.activate(as_user(MANAGER), "not-a-token", CABINET, "Cabinet Legrand")


@pytest.mark.parametrize("who", [RIVAL_MANAGER, ADMIN])
def test_only_the_named_manager_activates(management, db, portal, who):
    register(management, portal)
    designation = designate(management)
    with refused(db, Forbidden, "forbidden"):
        activate(management, designation, manager=who)


def test_used_activation_link_is_gone(management, db, portal):
    register(management, portal)
    designation = designate(management)
    activate(management, designation)
    with refused(db, Gone, "token_used"):
        activate(management, designation)


def test_withdrawn_designation_link_is_gone(management, db, portal):
    register(management, portal)
    designation = designate(management)
    ctx = as_user(ADMIN, "req-withdraw")
    with one_audit_record(db, "delegation.revoke", ctx):
        management.revoke_delegation(ctx, designation.delegation.id)
    with refused(db, Gone, "token_used"):
        activate(management, designation)


def test_activation_link_expires_after_seven_days(management, decisions, db, clock, portal):
    register(management, portal)
    designation = designate(management)
    clock.advance(days=7, seconds=1)
    with refused(db, Gone, "token_expired"):
        activate(management, designation)
    assert management.list_delegations(as_user(ADMIN), DUPONT)[0].status == LinkStatus.EXPIRED
    assert decisions.actions(MANAGER, DUPONT) == []


def test_activation_link_still_works_just_before_it_expires(management, clock, portal):
    register(management, portal)
    designation = designate(management)
    clock.advance(days=7, seconds=-1)
    assert activate(management, designation).status == LinkStatus.ACTIVE


def test_activation_creates_the_firm_and_manager_holds_the_scope(management, decisions, db, portal):
    register(management, portal)
    designation = designate(management)
    ctx = as_user(MANAGER, "req-activate")
    with one_audit_record(db, "delegation.activate", ctx):
        record = management.activate(ctx, designation.activation.token, CABINET, "Cabinet Legrand")
    assert (record.status, record.firm, record.activation_expires_at) == (LinkStatus.ACTIVE, CABINET, None)
    assert audit_entries(db)[-1].details["firm_created"] is True
    assert decisions.actions(MANAGER, DUPONT) == ["conges", "cotisations", "declarations"]
    assert [c.siret for c in management.clients(as_user(MANAGER), CABINET)] == [DUPONT]


def test_second_company_joins_the_existing_firm(management, db, portal):
    delegate(management, portal)
    register(management, portal, MARTIN, OTHER_ADMIN)
    designation = designate(management, ["compte"], MARTIN, OTHER_ADMIN)
    activate(management, designation)
    assert audit_entries(db)[-1].details["firm_created"] is False
    assert [c.siret for c in management.clients(as_user(MANAGER), CABINET)] == sorted([DUPONT, MARTIN])


def test_another_person_cannot_activate_into_a_firm_they_do_not_manage(management, db, portal):
    delegate(management, portal)
    register(management, portal, MARTIN, OTHER_ADMIN)
    designation = designate(management, ["compte"], MARTIN, OTHER_ADMIN, manager=RIVAL_MANAGER)
    with refused(db, Forbidden, "forbidden"):
        activate(management, designation, manager=RIVAL_MANAGER, firm=CABINET)


# ---- changing and revoking a delegation --------------------------------------------------------


def test_collaborator_loses_right_when_company_narrows_firm_scope(management, decisions, db, portal):
    delegation, grant = collaborate(management, portal)
    ctx = as_user(ADMIN, "req-narrow")
    with one_audit_record(db, "delegation.change", ctx):
        changed = management.change_delegation(ctx, delegation.id, scope=["cotisations"])
    assert changed.scope == ("cotisations",)
    assert decisions.actions(COLLAB, DUPONT) == ["cotisations"]
    assert management.get_grant(as_user(MANAGER), grant.id).scope == GRANTED


def test_collaborator_regains_right_when_company_widens_firm_scope_again(management, decisions, portal):
    delegation, _ = collaborate(management, portal)
    management.change_delegation(as_user(ADMIN), delegation.id, scope=["cotisations"])
    management.change_delegation(as_user(ADMIN), delegation.id, scope=["cotisations", "declarations", "salaries"])
    assert decisions.actions(COLLAB, DUPONT) == ["cotisations", "declarations"]
    assert decisions.actions(MANAGER, DUPONT) == ["cotisations", "declarations", "salaries"]


def test_delegation_cannot_be_widened_to_entreprise(management, db, portal):
    delegation = delegate(management, portal)
    with refused(db, Forbidden, "not_delegable"):
        management.change_delegation(as_user(ADMIN), delegation.id, scope=["entreprise"])


def test_revoked_delegation_cannot_change(management, db, portal):
    delegation = delegate(management, portal)
    management.revoke_delegation(as_user(ADMIN), delegation.id)
    with refused(db, Conflict, "delegation_closed"):
        management.change_delegation(as_user(ADMIN), delegation.id, scope=["compte"])


def test_firm_manager_cannot_change_the_delegation(management, db, portal):
    delegation = delegate(management, portal)
    with refused(db, Forbidden, "forbidden"):
        management.change_delegation(as_user(MANAGER), delegation.id, scope=(*DELEGATED, "salaries"))


def test_company_admin_revokes_the_delegation_and_the_chain_loses_every_right(management, decisions, db, portal):
    delegation, _ = collaborate(management, portal)
    ctx = as_user(ADMIN, "req-revoke")
    with one_audit_record(db, "delegation.revoke", ctx):
        record = management.revoke_delegation(ctx, delegation.id)
    assert record.status == LinkStatus.REVOKED
    assert decisions.actions(MANAGER, DUPONT) == []
    assert decisions.actions(COLLAB, DUPONT) == []
    assert management.clients(as_user(MANAGER), CABINET) == []


def test_firm_manager_renounces_the_delegation(management, decisions, db, portal):
    delegation = delegate(management, portal)
    ctx = as_user(MANAGER, "req-renounce")
    with one_audit_record(db, "delegation.revoke", ctx):
        assert management.revoke_delegation(ctx, delegation.id).status == LinkStatus.REVOKED
    assert decisions.actions(MANAGER, DUPONT) == []
    assert decisions.actions(ADMIN, DUPONT) != []


@pytest.mark.parametrize("who", [STRANGER, COLLAB, RIVAL_MANAGER])
def test_only_company_admin_or_firm_manager_revokes_the_delegation(management, db, portal, who):
    delegation, _ = collaborate(management, portal)
    with refused(db, Forbidden, "forbidden"):
        management.revoke_delegation(as_user(who), delegation.id)


def test_revoking_a_revoked_delegation_writes_nothing(management, db, portal):
    delegation = delegate(management, portal)
    management.revoke_delegation(as_user(ADMIN), delegation.id)
    before = snapshot(db)
    assert management.revoke_delegation(as_user(ADMIN), delegation.id).status == LinkStatus.REVOKED
    assert snapshot(db) == before


# ---- firm: clients and collaborators --------------------------------------------------------------


def test_client_list_shows_each_company_with_the_scope_the_firm_holds(management, portal):
    dupont = delegate(management, portal)
    register(management, portal, MARTIN, OTHER_ADMIN)
    activate(management, designate(management, ["compte", "salaries"], MARTIN, OTHER_ADMIN))

    clients = management.clients(as_user(MANAGER), CABINET)

    assert [(c.siret, c.scope) for c in clients] == sorted(
        [(DUPONT, ("conges", "cotisations", "declarations")), (MARTIN, ("compte", "salaries"))]
    )
    assert next(c for c in clients if c.siret == DUPONT).delegation_id == dupont.id


@pytest.mark.parametrize("who", [COLLAB, ADMIN, RIVAL_MANAGER])
def test_only_firm_manager_reads_the_client_list(management, db, portal, who):
    collaborate(management, portal)
    with refused(db, Forbidden, "forbidden"):
        management.clients(as_user(who), CABINET)


def test_manager_adds_a_collaborator(management, db, portal):
    delegate(management, portal)
    ctx = as_user(MANAGER, "req-add-collab")
    with one_audit_record(db, "firm.collaborator_add", ctx):
        management.add_collaborator(ctx, CABINET, COLLAB)
    assert [c.email for c in management.collaborators(as_user(MANAGER), CABINET)] == [COLLAB]


def test_adding_a_collaborator_twice_conflicts(management, db, portal):
    collaborate(management, portal)
    with refused(db, Conflict, "already_collaborator"):
        management.add_collaborator(as_user(MANAGER), CABINET, COLLAB)


@pytest.mark.parametrize("who", [COLLAB, ADMIN, STRANGER])
def test_only_firm_manager_manages_collaborators(management, db, portal, who):
    collaborate(management, portal)
    with refused(db, Forbidden, "forbidden"):
        management.add_collaborator(as_user(who), CABINET, COLLAB2)


def test_removing_a_collaborator_revokes_their_grants(management, decisions, db, portal):
    _, grant = collaborate(management, portal)
    ctx = as_user(MANAGER, "req-remove-collab")
    with one_audit_record(db, "firm.collaborator_remove", ctx):
        ended = management.remove_collaborator(ctx, CABINET, COLLAB)
    assert ended == [grant.id]
    assert management.get_grant(as_user(MANAGER), grant.id).status == LinkStatus.REVOKED
    assert decisions.actions(COLLAB, DUPONT) == []
    assert management.collaborators(as_user(MANAGER), CABINET) == []


def test_removing_someone_who_is_not_a_collaborator_is_not_found(management, db, portal):
    delegate(management, portal)
    with refused(db, NotFound, "collaborator_not_found"):
        management.remove_collaborator(as_user(MANAGER), CABINET, COLLAB)


# ---- grants ------------------------------------------------------------------------------------


def test_manager_grants_a_collaborator_part_of_the_firm_scope(management, decisions, db, portal):
    delegate(management, portal)
    management.add_collaborator(as_user(MANAGER), CABINET, COLLAB)
    ctx = as_user(MANAGER, "req-grant")
    with one_audit_record(db, "grant.create", ctx):
        grant = management.grant(ctx, CABINET, COLLAB, DUPONT, ["declarations"])
    assert (grant.status, grant.collaborator, grant.company, grant.scope) == (
        LinkStatus.ACTIVE, COLLAB, DUPONT, ("declarations",)
    )
    assert decisions.actions(COLLAB, DUPONT) == ["declarations"]


def test_grant_beyond_the_firm_scope_names_exactly_the_exceeding_rights(management, db, portal):
    delegate(management, portal)
    management.add_collaborator(as_user(MANAGER), CABINET, COLLAB)
    with refused(db, Forbidden, "scope_exceeds_firm") as caught:
        management.grant(as_user(MANAGER), CABINET, COLLAB, DUPONT, ["declarations", "salaries", "entreprise"])
    assert sorted(caught.value.details["exceeding"]) == ["entreprise", "salaries"]


def test_grant_on_a_company_that_is_not_a_client_exceeds_the_firm_scope(management, db, portal):
    delegate(management, portal)
    register(management, portal, MARTIN, OTHER_ADMIN)
    management.add_collaborator(as_user(MANAGER), CABINET, COLLAB)
    with refused(db, Forbidden, "scope_exceeds_firm") as caught:
        management.grant(as_user(MANAGER), CABINET, COLLAB, MARTIN, ["compte"])
    assert caught.value.details["exceeding"] == ["compte"]


def test_grant_to_someone_who_is_not_a_collaborator_conflicts(management, db, portal):
    delegate(management, portal)
    with refused(db, Conflict, "not_a_collaborator"):
        management.grant(as_user(MANAGER), CABINET, COLLAB2, DUPONT, ["declarations"])


def test_second_grant_on_the_same_company_conflicts(management, db, portal):
    collaborate(management, portal)
    with refused(db, Conflict, "grant_exists"):
        management.grant(as_user(MANAGER), CABINET, COLLAB, DUPONT, ["conges"])


def test_collaborator_cannot_grant(management, db, portal):
    collaborate(management, portal)
    management.add_collaborator(as_user(MANAGER), CABINET, COLLAB2)
    with refused(db, Forbidden, "forbidden"):
        management.grant(as_user(COLLAB), CABINET, COLLAB2, DUPONT, ["declarations"])


def test_manager_narrows_and_widens_a_grant_within_the_firm_scope(management, decisions, db, portal):
    _, grant = collaborate(management, portal)
    ctx = as_user(MANAGER, "req-change-grant")
    with one_audit_record(db, "grant.change", ctx):
        management.change_grant(ctx, grant.id, scope=["declarations"])
    assert decisions.actions(COLLAB, DUPONT) == ["declarations"]
    management.change_grant(as_user(MANAGER), grant.id, scope=DELEGATED)
    assert decisions.actions(COLLAB, DUPONT) == list(DELEGATED)


def test_grant_cannot_be_widened_beyond_the_firm_scope(management, db, portal):
    _, grant = collaborate(management, portal)
    with refused(db, Forbidden, "scope_exceeds_firm") as caught:
        management.change_grant(as_user(MANAGER), grant.id, scope=["declarations", "compte"])
    assert caught.value.details["exceeding"] == ["compte"]


@pytest.mark.parametrize("who", [COLLAB, ADMIN, RIVAL_MANAGER])
def test_only_firm_manager_changes_or_revokes_a_grant(management, db, portal, who):
    _, grant = collaborate(management, portal)
    with refused(db, Forbidden, "forbidden"):
        management.change_grant(as_user(who), grant.id, scope=DELEGATED)
    with refused(db, Forbidden, "forbidden"):
        management.revoke_grant(as_user(who), grant.id)


def test_manager_revokes_a_grant_and_collaborator_loses_its_rights(management, decisions, db, portal):
    _, grant = collaborate(management, portal)
    ctx = as_user(MANAGER, "req-revoke-grant")
    with one_audit_record(db, "grant.revoke", ctx):
        assert management.revoke_grant(ctx, grant.id).status == LinkStatus.REVOKED
    assert decisions.actions(COLLAB, DUPONT) == []
    assert decisions.actions(MANAGER, DUPONT) == list(DELEGATED)


def test_revoked_grant_cannot_change(management, db, portal):
    _, grant = collaborate(management, portal)
    management.revoke_grant(as_user(MANAGER), grant.id)
    with refused(db, Conflict, "grant_closed"):
        management.change_grant(as_user(MANAGER), grant.id, scope=["declarations"])


def test_manager_can_grant_again_after_a_grant_lapsed(management, decisions, clock, portal):
    collaborate(management, portal, ends_at=clock.now + timedelta(days=30))
    clock.advance(days=31)
    assert decisions.actions(COLLAB, DUPONT) == []

    management.grant(as_user(MANAGER), CABINET, COLLAB, DUPONT, ["declarations"])

    assert decisions.actions(COLLAB, DUPONT) == ["declarations"]


# ---- end dates ----------------------------------------------------------------------------------


def test_delegation_lapses_by_itself_at_its_end_date(management, decisions, clock, portal):
    delegation = delegate(management, portal, ends_at=clock.now + timedelta(days=30))
    management.add_collaborator(as_user(MANAGER), CABINET, COLLAB)
    management.grant(as_user(MANAGER), CABINET, COLLAB, DUPONT, GRANTED)
    clock.advance(days=30, seconds=-1)
    assert decisions.decide(COLLAB, "declarations", DUPONT).allowed is True

    clock.advance(seconds=1)

    assert decisions.decide(MANAGER, "declarations", DUPONT).reason == "delegation_expired"
    assert decisions.decide(COLLAB, "declarations", DUPONT).allowed is False
    assert management.get_delegation(as_user(ADMIN), delegation.id).status == LinkStatus.EXPIRED
    assert management.clients(as_user(MANAGER), CABINET) == []


def test_cleared_end_date_keeps_the_delegation_in_force(management, decisions, clock, portal):
    delegation = delegate(management, portal, ends_at=clock.now + timedelta(days=30))
    management.change_delegation(as_user(ADMIN), delegation.id, clear_ends_at=True)
    clock.advance(days=60)
    assert decisions.decide(MANAGER, "declarations", DUPONT).allowed is True


def test_grant_lapses_by_itself_at_its_end_date(management, decisions, clock, portal):
    _, grant = collaborate(management, portal, ends_at=clock.now + timedelta(days=10))
    assert decisions.decide(COLLAB, "declarations", DUPONT).allowed is True

    clock.advance(days=10)

    assert decisions.decide(COLLAB, "declarations", DUPONT).reason == "grant_expired"
    assert management.get_grant(as_user(MANAGER), grant.id).status == LinkStatus.EXPIRED
    assert decisions.decide(MANAGER, "declarations", DUPONT).allowed is True


# ---- decisions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "who,      right,          reason",
    [
        (ADMIN,    "entreprise",   "company_admin"),
        (MANAGER,  "conges",       "firm_manager"),
        (COLLAB,   "declarations", "collaborator_grant"),
    ],
)
def test_decide_names_the_rule_that_allowed(management, decisions, portal, who, right, reason):
    collaborate(management, portal)
    decision = decisions.decide(who, right, DUPONT)
    assert (decision.allowed, decision.reason) == (True, reason)


@pytest.mark.parametrize(
    "who,       right,          company,  reason",
    [
        (ADMIN,     "paie",         DUPONT,   "unknown_right"),
        (ADMIN,     "declarations", UNREGISTERED, "unknown_company"),
        (STRANGER,  "declarations", DUPONT,   "no_link"),
        (COLLAB,    "conges",       DUPONT,   "grant_out_of_scope"),
        (MANAGER,   "salaries",     DUPONT,   "delegation_out_of_scope"),
        (MANAGER,   "entreprise",   DUPONT,   "not_delegable"),
    ],
)
def test_decide_names_the_broken_link_when_denied(management, decisions, portal, who, right, company, reason):
    collaborate(management, portal)
    decision = decisions.decide(who, right, company)
    assert (decision.allowed, decision.reason) == (False, reason)


@pytest.mark.parametrize("action", ["read", "designate", "manage_admins"])
def test_decide_denies_a_management_action_asked_as_a_right(management, decisions, portal, action):
    register(management, portal)
    decision = decisions.decide(ADMIN, action, DUPONT)
    assert (decision.allowed, decision.reason) == (False, "unknown_right")


def _facts_read(monkeypatch) -> list:
    """The pairs whose facts each ``Database.decision_facts`` call (a decision's read) reads, from now on."""
    reads: list = []
    real = Database.decision_facts
    monkeypatch.setattr(Database, "decision_facts",
                        lambda db, pairs, *rest: reads.append(sorted(pairs)) or real(db, pairs, *rest))
    return reads


def test_an_unknown_right_is_answered_from_the_cached_facts_and_never_remembered(
        management, decisions, portal, monkeypatch):
    register(management, portal)
    reads = _facts_read(monkeypatch)

    asked = [decisions.decide(ADMIN, right, DUPONT) for right in ("compte", "paie", "paie2", "paie")]

    assert [(d.allowed, d.reason) for d in asked] == [
        (True, "company_admin"), (False, "unknown_right"), (False, "unknown_right"), (False, "unknown_right")]
    assert reads == [[(ADMIN, DUPONT)]]  # the first question read the pair's facts; no other did
    assert set(decisions.cache.get((ADMIN, DUPONT), 0.0).rules) == {"compte"}  # the caller's strings are not kept


def test_decide_many_stops_at_the_first_requested_answer(management, decisions, portal):
    collaborate(management, portal)
    questions = [(COLLAB, "declarations", DUPONT), (COLLAB, "conges", DUPONT), (ADMIN, "compte", DUPONT)]
    assert [d.allowed for d in decisions.decide_many(questions)] == [True, False, True]
    assert [d.allowed for d in decisions.decide_many(questions, stop_on=False)] == [True, False]


def test_actions_lists_each_persons_rights_in_policy_order(management, decisions, engine, portal):
    collaborate(management, portal)
    assert decisions.actions(ADMIN, DUPONT) == list(engine.rights)
    assert decisions.actions(MANAGER, DUPONT) == list(DELEGATED)
    assert decisions.actions(COLLAB, DUPONT) == list(GRANTED)
    assert decisions.actions(STRANGER, DUPONT) == []


def test_resources_lists_the_companies_where_a_person_holds_a_right(management, decisions, portal):
    collaborate(management, portal)
    register(management, portal, MARTIN, OTHER_ADMIN)
    activate(management, designate(management, ["compte"], MARTIN, OTHER_ADMIN))
    assert decisions.resources(MANAGER, "declarations") == [DUPONT]
    assert decisions.resources(MANAGER, "compte") == [MARTIN]
    assert decisions.resources(COLLAB, "declarations") == [DUPONT]
    assert decisions.resources(COLLAB, "compte") == []
    assert decisions.resources(ADMIN, "entreprise") == [DUPONT]


def test_subjects_lists_the_people_who_hold_a_right_on_a_company(management, decisions, portal):
    collaborate(management, portal)
    assert decisions.subjects(DUPONT, "declarations") == sorted([ADMIN, MANAGER, COLLAB])
    assert decisions.subjects(DUPONT, "conges") == sorted([ADMIN, MANAGER])
    assert decisions.subjects(DUPONT, "entreprise") == [ADMIN]


def test_explain_shows_the_chain_that_allowed(management, decisions, portal):
    delegation, grant = collaborate(management, portal)
    explanation = decisions.explain(COLLAB, "declarations", DUPONT)
    assert (explanation.decision.allowed, explanation.rule) == (True, "collaborator_grant")
    assert [(link.kind, link.id, link.holds) for link in explanation.chain] == [
        ("company", DUPONT, True), ("delegation", delegation.id, True), ("grant", grant.id, True)
    ]
    assert explanation.broken is None


def test_explain_names_the_delegation_that_broke_the_chain(management, decisions, portal):
    delegation, _ = collaborate(management, portal)
    management.change_delegation(as_user(ADMIN), delegation.id, scope=["cotisations"])
    explanation = decisions.explain(COLLAB, "declarations", DUPONT)
    assert explanation.decision.allowed is False
    broken = explanation.broken
    assert (broken.kind, broken.id, broken.holds, broken.detail) == (
        "delegation", delegation.id, False, "delegation_out_of_scope"
    )


# ---- audit ----------------------------------------------------------------------------------------


def test_the_whole_story_is_in_the_audit_log_one_record_per_change(management, db, portal):
    _delegation, grant = collaborate(management, portal)
    management.revoke_grant(as_user(MANAGER, "req-last"), grant.id)
    story = [(e.actor, e.action, e.company, e.subject) for e in audit_entries(db)]
    assert story == [
        ("key:test-portal", "company.register", DUPONT, ADMIN),
        (ADMIN, "delegation.designate", DUPONT, MANAGER),
        (MANAGER, "delegation.activate", DUPONT, MANAGER),
        (MANAGER, "firm.collaborator_add", None, COLLAB),
        (MANAGER, "grant.create", DUPONT, COLLAB),
        (MANAGER, "grant.revoke", DUPONT, COLLAB),
    ]
    assert audit_entries(db)[-1].request_id == "req-last"


def test_delegation_change_records_what_changed(management, db, portal):
    delegation = delegate(management, portal)
    management.change_delegation(as_user(ADMIN), delegation.id, scope=["compte"])
    details = audit_entries(db)[-1].details
    assert details["before"]["scope"] == list(DELEGATED)
    assert details["after"]["scope"] == ["compte"]


def test_company_admin_reads_the_company_audit_log(management, db, portal):
    delegate(management, portal)
    register(management, portal, MARTIN, OTHER_ADMIN)
    log = management.audit_log(as_user(ADMIN), may_read_all=False, company=DUPONT)
    assert [e.action for e in log] == ["company.register", "delegation.designate", "delegation.activate"]


@pytest.mark.parametrize("who", [STRANGER, MANAGER, OTHER_ADMIN])
def test_only_company_admin_reads_the_company_audit_log(management, db, portal, who):
    delegate(management, portal)
    register(management, portal, MARTIN, OTHER_ADMIN)
    with refused(db, Forbidden, "forbidden"):
        management.audit_log(as_user(who), may_read_all=False, company=DUPONT)


def test_a_change_forgets_only_the_cached_answers_of_the_company_and_people_it_touched(
        management, decisions, portal, monkeypatch):
    collaborate(management, portal)
    register(management, portal, MARTIN, OTHER_ADMIN)
    asked = [(ADMIN, DUPONT), (COLLAB, DUPONT), (MANAGER, DUPONT), (OTHER_ADMIN, MARTIN), (COLLAB, MARTIN)]
    before = {pair: decisions.decide(pair[0], "declarations", pair[1]).allowed for pair in asked}
    reads = _facts_read(monkeypatch)

    management.add_admin(as_user(OTHER_ADMIN), MARTIN, STRANGER)  # touches MARTIN and STRANGER only
    after = {pair: decisions.decide(pair[0], "declarations", pair[1]).allowed for pair in asked}

    assert after == before
    assert reads == [[(OTHER_ADMIN, MARTIN)], [(COLLAB, MARTIN)]]  # DUPONT's answers were kept
    reads.clear()

    management.remove_collaborator(as_user(MANAGER), CABINET, COLLAB)  # COLLAB, and each company of a grant ended
    assert not decisions.decide(COLLAB, "declarations", DUPONT).allowed
    assert decisions.decide(ADMIN, "declarations", DUPONT).allowed
    assert decisions.decide(OTHER_ADMIN, "declarations", MARTIN).allowed
    assert reads == [[(COLLAB, DUPONT)], [(ADMIN, DUPONT)]]  # MARTIN's admin answer was kept


# Changes that each alter some answer of the test below, by their use cases.
CHANGES = {
    "revoke the grant": lambda m, story: m.revoke_grant(as_user(MANAGER), story["grant"].id),
    "narrow the grant": lambda m, story: m.change_grant(as_user(MANAGER), story["grant"].id, scope=["cotisations"]),
    "grant again": lambda m, story: m.grant(as_user(MANAGER), CABINET, COLLAB2, DUPONT, ["declarations"]),
    "narrow the delegation": lambda m, story: m.change_delegation(as_user(ADMIN), story["delegation"].id,
                                                                  scope=["conges"]),
    "revoke the delegation": lambda m, story: m.revoke_delegation(as_user(ADMIN), story["delegation"].id),
    "designate a firm": lambda m, story: m.designate(as_user(ADMIN), DUPONT, RIVAL_MANAGER, ["compte"]),
    "activate a designation": lambda m, story: activate(m, story["pending"]),
    "remove an admin": lambda m, story: m.remove_admin(as_user(OTHER_ADMIN), MARTIN, STRANGER),
    "add an admin": lambda m, story: m.add_admin(as_user(ADMIN), DUPONT, COLLAB),
    "remove a collaborator": lambda m, story: m.remove_collaborator(as_user(MANAGER), CABINET, COLLAB),
    "register a company": lambda m, story: m.register_company(Context(key="test-portal"), siret(1_0000_0000_0003),
                                                              "Plâtrerie", STRANGER),
}


@pytest.mark.parametrize("change", CHANGES)
def test_after_a_change_every_cached_answer_is_the_answer_of_an_empty_cache(
        db, engine, clock, management, decisions, portal, change):
    delegation, grant = collaborate(management, portal)
    management.add_collaborator(as_user(MANAGER), CABINET, COLLAB2)
    register(management, portal, MARTIN, OTHER_ADMIN)
    management.add_admin(as_user(OTHER_ADMIN), MARTIN, STRANGER)
    pending = management.designate(as_user(OTHER_ADMIN), MARTIN, MANAGER, ["compte"])
    everyone = (ADMIN, OTHER_ADMIN, MANAGER, COLLAB, COLLAB2, STRANGER, RIVAL_MANAGER)
    asked = [(user, right, company) for user in everyone for right in ("compte", "conges", "cotisations",
                                                                       "declarations", "paie")
             for company in (DUPONT, MARTIN, siret(1_0000_0000_0003))]
    decisions.decide_many(asked)  # every answer cached

    CHANGES[change](management, {"delegation": delegation, "grant": grant, "pending": pending})

    fresh = Decisions(db, lambda: engine, clock=clock)
    assert decisions.decide_many(asked) == fresh.decide_many(asked)


def _last_change(db) -> set[str]:
    with db.transaction(write=False) as tx:
        last = tx.conn.execute(select(func.max(data_changes.c.version))).scalar()
        assert last == tx.data_version()
        return set(tx.conn.execute(select(data_changes.c.scope).where(data_changes.c.version == last)).scalars())


def test_each_change_names_the_companies_and_people_whose_facts_it_changed(db, management, portal):
    # What the test above cannot see with the shipped policy, whose answers about a person
    # change only with a link of a company: a person's memberships are facts too.
    register(management, portal)
    assert _last_change(db) == {f"company:{DUPONT}", f"user:{ADMIN}"}
    activate(management, designate(management))
    assert _last_change(db) == {f"company:{DUPONT}", f"user:{MANAGER}"}  # the firm is created: its manager
    management.add_collaborator(as_user(MANAGER), CABINET, COLLAB)
    assert _last_change(db) == {f"user:{COLLAB}"}
    management.grant(as_user(MANAGER), CABINET, COLLAB, DUPONT, GRANTED)
    assert _last_change(db) == {f"company:{DUPONT}"}
    management.remove_collaborator(as_user(MANAGER), CABINET, COLLAB)
    assert _last_change(db) == {f"user:{COLLAB}", f"company:{DUPONT}"}  # and the company of its ended grant
    with db.transaction() as tx:
        tx.insert_api_key("another", "pep", "0" * 64, utcnow())
    assert _last_change(db) == {"keys"}
    with db.transaction() as tx:
        audit.record(tx, Context(), utcnow(), "dataset.load")  # no write method named anything
    assert _last_change(db) == {"*"}


def test_a_change_the_cache_cannot_read_makes_it_forget_everything(db, management, decisions, portal, monkeypatch):
    collaborate(management, portal)
    assert decisions.decide(COLLAB, "declarations", DUPONT).allowed
    reads = _facts_read(monkeypatch)

    management.register_company(portal, MARTIN, "Martin", STRANGER)  # touches MARTIN and STRANGER only
    with db.engine.begin() as conn:
        conn.execute(data_changes.delete())  # as if purged: what that version changed is unknown

    assert decisions.decide(COLLAB, "declarations", DUPONT).allowed
    assert reads == [[(COLLAB, DUPONT)]]  # read again


def test_a_missing_data_version_row_never_leaves_a_stale_answer(db, management, decisions, portal):
    # The row is the only way other processes notice a change: without it, nothing is cached.
    management.register_company(portal, DUPONT, "Maçonnerie Dupont", ADMIN)
    with db.engine.begin() as conn:
        conn.execute(data_version.delete())
    assert decisions.decide(ADMIN, "compte", DUPONT).allowed
    management.add_admin(as_user(ADMIN), DUPONT, OTHER_ADMIN)
    management.remove_admin(as_user(OTHER_ADMIN), DUPONT, ADMIN)

    assert not decisions.decide(ADMIN, "compte", DUPONT).allowed
    with db.transaction(write=False) as tx:
        assert tx.data_version() is not None  # the next change put the row back


def test_a_data_version_row_put_back_never_repeats_a_version_a_worker_saw(db, management, decisions, portal):
    management.register_company(portal, DUPONT, "Maçonnerie Dupont", ADMIN)
    management.add_admin(as_user(ADMIN), DUPONT, OTHER_ADMIN)
    with db.engine.begin() as conn:
        conn.execute(data_version.update().values(version=1))  # the version a row put back would start from
    db.forget_data_version()  # that change came from outside: no lease covers it
    assert decisions.decide(ADMIN, "compte", DUPONT).allowed  # cached under version 1
    with db.engine.begin() as conn:
        conn.execute(data_version.delete())

    management.remove_admin(as_user(OTHER_ADMIN), DUPONT, ADMIN)  # puts the row back

    assert not decisions.decide(ADMIN, "compte", DUPONT).allowed
