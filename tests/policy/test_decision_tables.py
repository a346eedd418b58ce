"""Decision tables for the shipped policy, asked of the engine alone.

Each table reads as a grid: who asks, which right or action, on what, and the answer.
The facts are built by hand from ``authz.model``, as the store would hand them over.
"""

from __future__ import annotations

import shutil

import pytest

from authz.engine import Engine, PolicyRejected
from authz.model import ApiKey, Company, CompanySpace, Delegation, Firm, Grant, User
from tests.support import (
    ADMIN,
    CABINET,
    COLLAB,
    COLLAB2,
    DUPONT,
    MANAGER,
    MARTIN,
    OTHER_ADMIN,
    RIVAL,
    RIVAL_MANAGER,
    ROOT,
    STRANGER,
    Clock,
)

NOW = Clock().now.timestamp()
DAY = 86_400.0

DELEGABLE = ("declarations", "cotisations", "compte", "salaries", "conges", "intemperies", "attestations")
RIGHTS = (*DELEGABLE, "entreprise")


# ---- the cast ----------------------------------------------------------------------------

PEOPLE = {
    ADMIN: User(ADMIN, NOW, admin_of=frozenset({DUPONT})),
    OTHER_ADMIN: User(OTHER_ADMIN, NOW, admin_of=frozenset({MARTIN})),
    MANAGER: User(MANAGER, NOW, manages=frozenset({CABINET})),
    RIVAL_MANAGER: User(RIVAL_MANAGER, NOW, manages=frozenset({RIVAL})),
    COLLAB: User(COLLAB, NOW, collaborates=frozenset({CABINET})),
    COLLAB2: User(COLLAB2, NOW, collaborates=frozenset({CABINET})),
    STRANGER: User(STRANGER, NOW),
}
# The collaborator after the manager removed them from the firm.
REMOVED_COLLAB = User(COLLAB, NOW)


def delegation(scope=("declarations", "cotisations"), status="active", ends_at=None, firm=CABINET, manager=MANAGER):
    return Delegation("d-dupont-cabinet", DUPONT, manager, firm, status, frozenset(scope), ends_at)


def grant(scope=("declarations",), status="active", ends_at=None, firm=CABINET, collaborator=COLLAB):
    return Grant("g-chloe-dupont", firm, collaborator, DUPONT, status, frozenset(scope), ends_at)


def dupont(*links) -> Company:
    """Maçonnerie Dupont with the given delegations and grants."""
    return Company(
        DUPONT,
        delegations=tuple(link for link in links if isinstance(link, Delegation)),
        grants=tuple(link for link in links if isinstance(link, Grant)),
    )


ACTIVE = delegation()
PENDING = delegation(status="pending", firm=None)
REVOKED = delegation(status="revoked")
LAPSED = delegation(ends_at=NOW - 1)
ENDS_NOW = delegation(ends_at=NOW)
ENDS_TOMORROW = delegation(ends_at=NOW + DAY)
WITH_ENTREPRISE = delegation(scope=("declarations", "entreprise"))
TO_RIVAL = delegation(firm=RIVAL, manager=RIVAL_MANAGER)
NARROWED = delegation(scope=("cotisations",))
LINK_NAMES = {
    ACTIVE: "active", PENDING: "pending", REVOKED: "revoked", LAPSED: "lapsed", ENDS_NOW: "ends_now",
    ENDS_TOMORROW: "ends_tomorrow", WITH_ENTREPRISE: "with_entreprise", TO_RIVAL: "to_rival", NARROWED: "narrowed",
}


def copy_policy(folder):
    """Copy the shipped policy files into ``folder``, for a test to edit."""
    shutil.copy(ROOT / "policies.polar", folder / "policies.polar")
    shutil.copytree(ROOT / "policies", folder / "policies", ignore=shutil.ignore_patterns("tests"))


# ---- the rights list ------------------------------------------------------------------------


def test_rights_list_comes_from_the_policy(engine):
    assert engine.rights == tuple(sorted(RIGHTS))
    assert engine.info.delegable == frozenset(DELEGABLE)


def test_entreprise_is_a_right_but_not_delegable(engine):
    assert "entreprise" in engine.rights
    assert "entreprise" not in engine.info.delegable


def test_adding_a_right_line_to_the_policy_adds_the_right(tmp_path, engine):
    copy_policy(tmp_path)
    with open(tmp_path / "policies.polar", "a") as policy:
        policy.write('\nright("formation");\n')

    edited = Engine(tmp_path)

    assert "formation" in edited.rights and "formation" not in engine.rights
    assert edited.allows(PEOPLE[ADMIN], "formation", dupont())
    assert not edited.may_delegate("formation")


def test_policy_loads_without_unknown_specializer_warning(capfd):
    Engine(ROOT)
    out, err = capfd.readouterr()
    assert "Unknown specializer" not in out + err
    assert "[warning]" not in out + err


def test_policy_with_unknown_specializer_is_refused_with_its_place(tmp_path):
    # oso only prints this trap on stdout and the rule never matches; the engine refuses it.
    copy_policy(tmp_path)
    firm_policy = tmp_path / "policies" / "firm.polar"
    text = firm_policy.read_text()
    assert 'holds_right(user: User, right: String, company: Company, "collaborator_grant")' in text
    firm_policy.write_text(text.replace("holds_right(user: User, right", "holds_right(user: Usr, right"))

    with pytest.raises(PolicyRejected) as refusal:
        Engine(tmp_path)

    [problem] = refusal.value.problems
    assert problem.message == "Unknown specializer Usr"
    assert problem.file.endswith("policies/firm.polar") and problem.line and problem.column


# ---- company admins -----------------------------------------------------------------------


@pytest.mark.parametrize("right", RIGHTS)
def test_company_admin_holds_every_right_on_own_company(engine, right):
    assert engine.allows(PEOPLE[ADMIN], right, dupont())


@pytest.mark.parametrize("right", RIGHTS)
def test_company_admin_keeps_every_right_after_delegating(engine, right):
    everything = delegation(scope=DELEGABLE)
    assert engine.allows(PEOPLE[ADMIN], right, dupont(everything, grant(scope=DELEGABLE)))


@pytest.mark.parametrize(
    "who,          right,          expected",
    [
        (ADMIN,         "declarations", True),
        (ADMIN,         "entreprise",   True),
        (ADMIN,         "paie",         False),   # unknown right
        (OTHER_ADMIN,   "declarations", False),
        (OTHER_ADMIN,   "entreprise",   False),
        (STRANGER,      "compte",       False),
    ],
)
def test_company_admin_holds_rights_on_own_company_only(engine, who, right, expected):
    assert engine.allows(PEOPLE[who], right, dupont()) is expected


def test_management_action_is_not_a_right(engine):
    assert "read" not in engine.rights
    assert engine.rules_granting(PEOPLE[ADMIN], "read", dupont()) == []


def test_rule_names_the_company_admin_link(engine):
    assert engine.rules_granting(PEOPLE[ADMIN], "entreprise", dupont()) == ["company_admin"]


# ---- firm managers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "link,            right,          expected",
    [
        (ACTIVE,          "declarations", True),
        (ACTIVE,          "cotisations",  True),
        (ACTIVE,          "conges",       False),   # out of scope
        (ACTIVE,          "entreprise",   False),
        (ACTIVE,          "paie",         False),   # unknown right
        (PENDING,         "declarations", False),
        (REVOKED,         "declarations", False),
        (LAPSED,          "declarations", False),
        (ENDS_NOW,        "declarations", False),   # ends_at is exclusive
        (ENDS_TOMORROW,   "declarations", True),
        (WITH_ENTREPRISE, "declarations", True),
        (WITH_ENTREPRISE, "entreprise",   False),   # stored in scope, never delegable
        (TO_RIVAL,        "declarations", False),   # another firm's delegation
    ],
    ids=lambda value: LINK_NAMES.get(value) if isinstance(value, Delegation) else None,
)
def test_firm_manager_holds_only_rights_of_delegation_in_force(engine, link, right, expected):
    assert engine.allows(PEOPLE[MANAGER], right, dupont(link)) is expected


def test_firm_manager_holds_exactly_the_delegated_scope(engine):
    scope = {"declarations", "conges", "attestations"}
    held = {right for right in engine.rights if engine.allows(PEOPLE[MANAGER], right, dupont(delegation(scope)))}
    assert held == scope


def test_firm_manager_gains_nothing_from_a_delegation_of_another_company(engine):
    martin = Company(MARTIN, delegations=(Delegation("d-martin", MARTIN, MANAGER, CABINET, "active", frozenset({"compte"}), None),))
    assert engine.allows(PEOPLE[MANAGER], "compte", martin)
    assert not engine.allows(PEOPLE[MANAGER], "compte", dupont())


def test_manager_of_another_firm_holds_nothing_through_cabinet_delegation(engine):
    assert not engine.allows(PEOPLE[RIVAL_MANAGER], "declarations", dupont(ACTIVE))


def test_rule_names_the_firm_manager_link(engine):
    assert engine.rules_granting(PEOPLE[MANAGER], "declarations", dupont(ACTIVE)) == ["firm_manager"]


# ---- collaborators -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "situation,                 company,                                              right,          expected",
    [
        ("grant and firm hold it",  dupont(ACTIVE, grant()),                               "declarations", True),
        ("grant lacks it",          dupont(ACTIVE, grant()),                               "cotisations",  False),
        ("company narrowed firm",   dupont(NARROWED, grant()),                             "declarations", False),
        ("delegation revoked",      dupont(REVOKED, grant()),                              "declarations", False),
        ("delegation lapsed",       dupont(LAPSED, grant()),                               "declarations", False),
        ("delegation pending",      dupont(PENDING, grant()),                              "declarations", False),
        ("grant revoked",           dupont(ACTIVE, grant(status="revoked")),               "declarations", False),
        ("grant ends now",          dupont(ACTIVE, grant(ends_at=NOW)),                    "declarations", False),
        ("grant lapsed",            dupont(ACTIVE, grant(ends_at=NOW - DAY)),              "declarations", False),
        ("grant ends tomorrow",     dupont(ACTIVE, grant(ends_at=NOW + DAY)),              "declarations", True),
        ("someone else's grant",    dupont(ACTIVE, grant(collaborator=COLLAB2)),           "declarations", False),
        ("grant of another firm",   dupont(TO_RIVAL, grant(firm=RIVAL)),                   "declarations", False),
        ("entreprise stored",       dupont(WITH_ENTREPRISE, grant(scope=("entreprise",))), "entreprise",   False),
        ("unknown right stored",    dupont(delegation(scope=("paie",)), grant(scope=("paie",))), "paie",  False),
        ("no grant at all",         dupont(ACTIVE),                                        "declarations", False),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else None,
)
def test_collaborator_holds_right_only_if_grant_and_firm_both_hold_it(engine, situation, company, right, expected):
    assert engine.allows(PEOPLE[COLLAB], right, company) is expected


def test_collaborator_loses_right_when_company_narrows_firm_scope(engine):
    granted = grant(scope=("declarations", "cotisations"))
    assert engine.allows(PEOPLE[COLLAB], "declarations", dupont(ACTIVE, granted))
    assert not engine.allows(PEOPLE[COLLAB], "declarations", dupont(NARROWED, granted))
    assert engine.allows(PEOPLE[COLLAB], "cotisations", dupont(NARROWED, granted))


def test_collaborator_loses_rights_when_removed_from_the_firm(engine):
    assert not engine.allows(REMOVED_COLLAB, "declarations", dupont(ACTIVE, grant()))


def test_collaborator_never_holds_more_than_the_firm(engine):
    wide_grant = grant(scope=RIGHTS)
    company = dupont(ACTIVE, wide_grant)
    held = {right for right in engine.rights if engine.allows(PEOPLE[COLLAB], right, company)}
    assert held == {"declarations", "cotisations"}


def test_rule_names_the_collaborator_grant_link(engine):
    assert engine.rules_granting(PEOPLE[COLLAB], "declarations", dupont(ACTIVE, grant())) == ["collaborator_grant"]


# ---- management actions ------------------------------------------------------------------------

ACTIONS_ON_COMPANY = ("read", "manage_admins", "designate", "list_delegations", "read_audit")


@pytest.mark.parametrize(
    "who,           action,             expected",
    [(ADMIN, action, True) for action in ACTIONS_ON_COMPANY]
    + [(who, action, False) for who in (OTHER_ADMIN, MANAGER, COLLAB, STRANGER) for action in ACTIONS_ON_COMPANY]
    + [(ADMIN, "delete", False)],
)
def test_only_company_admin_manages_the_company(engine, who, action, expected):
    assert engine.allows(PEOPLE[who], action, CompanySpace(DUPONT)) is expected


@pytest.mark.parametrize("action", ACTIONS_ON_COMPANY)
def test_management_action_asked_as_a_right_on_the_company_is_denied(engine, action):
    assert not engine.allows(PEOPLE[ADMIN], action, dupont(ACTIVE, grant()))


@pytest.mark.parametrize(
    "who,           action,     link,     expected",
    [
        (ADMIN,         "read",     ACTIVE,   True),
        (ADMIN,         "change",   ACTIVE,   True),
        (ADMIN,         "revoke",   ACTIVE,   True),
        (ADMIN,         "activate", PENDING,  False),
        (MANAGER,       "read",     ACTIVE,   True),
        (MANAGER,       "revoke",   ACTIVE,   True),   # the firm renounces
        (MANAGER,       "change",   ACTIVE,   False),  # only the company narrows or widens
        (MANAGER,       "read",     PENDING,  False),  # not yet the firm's
        (MANAGER,       "revoke",   PENDING,  False),
        (MANAGER,       "activate", PENDING,  True),   # the person named by e-mail
        (RIVAL_MANAGER, "read",     ACTIVE,   False),
        (RIVAL_MANAGER, "activate", PENDING,  False),
        (OTHER_ADMIN,   "revoke",   ACTIVE,   False),
        (COLLAB,        "read",     ACTIVE,   False),
        (COLLAB,        "revoke",   ACTIVE,   False),
        (STRANGER,      "read",     ACTIVE,   False),
        (STRANGER,      "activate", PENDING,  False),
    ],
)
def test_delegation_is_managed_by_company_admin_and_renounced_by_firm_manager(engine, who, action, link, expected):
    assert engine.allows(PEOPLE[who], action, link) is expected


CABINET_FIRM = Firm(CABINET, MANAGER)
ACTIONS_ON_FIRM = ("read_clients", "manage_collaborators", "grant", "activate_into")


@pytest.mark.parametrize(
    "who,           action,         firm,              expected",
    [(MANAGER, action, CABINET_FIRM, True) for action in ACTIONS_ON_FIRM]
    + [(who, action, CABINET_FIRM, False) for who in (COLLAB, RIVAL_MANAGER, ADMIN, STRANGER) for action in ACTIONS_ON_FIRM]
    + [
        (MANAGER, "delete", CABINET_FIRM, False),
        (MANAGER, "grant", Firm(RIVAL, RIVAL_MANAGER), False),
        (STRANGER, "read_clients", Firm(RIVAL, None), False),   # unknown firm
    ],
)
def test_only_firm_manager_runs_the_firm_account(engine, who, action, firm, expected):
    assert engine.allows(PEOPLE[who], action, firm) is expected


@pytest.mark.parametrize(
    "who,           action,   expected",
    [(MANAGER, action, True) for action in ("read", "change", "revoke")]
    + [(who, action, False) for who in (COLLAB, COLLAB2, RIVAL_MANAGER, ADMIN, STRANGER) for action in ("read", "change", "revoke")]
    + [(MANAGER, "activate", False)],
)
def test_only_firm_manager_manages_the_firm_grants(engine, who, action, expected):
    assert engine.allows(PEOPLE[who], action, grant()) is expected


# ---- write-time checks: may_grant, may_delegate, firm_holds -------------------------------------


@pytest.mark.parametrize(
    "who,      right,          firm,                       company,                 expected",
    [
        (MANAGER,  "declarations", CABINET_FIRM,               dupont(ACTIVE),          True),
        (MANAGER,  "conges",       CABINET_FIRM,               dupont(ACTIVE),          False),  # firm lacks it
        (MANAGER,  "entreprise",   CABINET_FIRM,               dupont(WITH_ENTREPRISE), False),
        (MANAGER,  "declarations", CABINET_FIRM,               dupont(REVOKED),         False),
        (MANAGER,  "declarations", CABINET_FIRM,               dupont(ENDS_NOW),        False),
        (MANAGER,  "declarations", CABINET_FIRM,               dupont(NARROWED),        False),
        (MANAGER,  "declarations", Firm(RIVAL, RIVAL_MANAGER), dupont(TO_RIVAL),        False),  # not their firm
        (COLLAB,   "declarations", CABINET_FIRM,               dupont(ACTIVE, grant()), False),  # no re-delegation
        (ADMIN,    "declarations", CABINET_FIRM,               dupont(ACTIVE),          False),
    ],
)
def test_manager_may_grant_only_what_the_firm_holds_now(engine, who, right, firm, company, expected):
    assert engine.may_grant(PEOPLE[who], right, firm, company) is expected


@pytest.mark.parametrize(
    "right,         expected",
    [(right, True) for right in DELEGABLE] + [("entreprise", False), ("paie", False)],
)
def test_company_may_delegate_only_delegable_rights(engine, right, expected):
    assert engine.may_delegate(right) is expected


@pytest.mark.parametrize(
    "firm,     right,          link,            now,           expected",
    [
        (CABINET,  "declarations", ACTIVE,          NOW,           True),
        (CABINET,  "conges",       ACTIVE,          NOW,           False),
        (RIVAL,    "declarations", ACTIVE,          NOW,           False),
        (CABINET,  "declarations", PENDING,         NOW,           False),
        (CABINET,  "declarations", REVOKED,         NOW,           False),
        (CABINET,  "entreprise",   WITH_ENTREPRISE, NOW,           False),
        (CABINET,  "declarations", ENDS_TOMORROW,   NOW + DAY - 1, True),
        (CABINET,  "declarations", ENDS_TOMORROW,   NOW + DAY,     False),
    ],
)
def test_firm_holds_delegable_rights_of_its_delegation_in_force(engine, firm, right, link, now, expected):
    assert engine.firm_holds(firm, right, dupont(link), now) is expected


# ---- API keys -----------------------------------------------------------------------------------

AREAS = ("decide", "manage", "explain", "audit_all", "policy", "metrics")
KEY_GRID = {
    "pep":    {"decide"},
    "portal": {"decide", "manage", "explain"},
    "admin":  set(AREAS),
}


@pytest.mark.parametrize(
    "role,      area,        expected",
    [(role, area, area in KEY_GRID[role]) for role in KEY_GRID for area in AREAS]
    + [("admin", "billing", False), ("root", "decide", False)],
)
def test_api_key_role_opens_its_areas_only(engine, role, area, expected):
    assert engine.allows(ApiKey(f"{role}-key", role), "call", area) is expected


def test_api_key_holds_no_right_on_companies(engine):
    admin_key = ApiKey("admin-key", "admin")
    assert not engine.allows(admin_key, "declarations", dupont(ACTIVE))
    assert not engine.allows(admin_key, "read", dupont(ACTIVE))
    assert not engine.allows(admin_key, "manage", "decide")
