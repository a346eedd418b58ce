"""The demo story: one company, its admin, a firm designated for part of the rights and
activated, and two collaborators with different grants. Loaded through the use cases,
so it is audited like any other change."""

from __future__ import annotations

from dataclasses import dataclass

from authz.audit import Context
from authz.errors import Conflict
from authz.usecases import Management

COMPANY = "73282932000074"        # Maçonnerie Dupont
SECOND_COMPANY = "55208131766522"  # Charpente Martin
FIRM = "44306184100047"           # Cabinet Legrand
ADMIN = "alice@dupont.example"
SECOND_ADMIN = "armand@martin.example"
MANAGER = "bruno@legrand.example"
COLLABORATORS = {
    "chloe@legrand.example": ["declarations", "compte"],
    "damien@legrand.example": ["salaries", "conges"],
}
FIRM_SCOPE = ["declarations", "cotisations", "compte", "salaries", "conges"]


@dataclass(frozen=True)
class DemoSummary:
    loaded: bool
    lines: tuple[str, ...]


def load_demo(management: Management) -> DemoSummary:
    """Load the story once; a second call changes nothing and says so."""
    system = Context(key="demo", request_id="demo")
    try:
        management.register_company(system, COMPANY, "Maçonnerie Dupont", ADMIN)
    except Conflict:
        return DemoSummary(False, _describe())
    management.register_company(system, SECOND_COMPANY, "Charpente Martin", SECOND_ADMIN)
    admin, second_admin, manager = (Context(user=e, key="demo", request_id="demo")
                                    for e in (ADMIN, SECOND_ADMIN, MANAGER))
    first = management.designate(admin, COMPANY, MANAGER, FIRM_SCOPE)
    management.activate(manager, first.activation.token, FIRM, "Cabinet Legrand")
    second = management.designate(second_admin, SECOND_COMPANY, MANAGER, ["attestations", "compte"])
    management.activate(manager, second.activation.token, FIRM, "Cabinet Legrand")
    for email, scope in COLLABORATORS.items():
        management.add_collaborator(manager, FIRM, email)
        management.grant(manager, FIRM, email, COMPANY, scope)
    return DemoSummary(True, _describe())


def _describe() -> tuple[str, ...]:
    return (
        f"company  {COMPANY} Maçonnerie Dupont, admin {ADMIN}",
        f"company  {SECOND_COMPANY} Charpente Martin, admin {SECOND_ADMIN}",
        f"firm     {FIRM} Cabinet Legrand, manager {MANAGER}",
        f"         holds on {COMPANY}: {', '.join(FIRM_SCOPE)}",
        f"         holds on {SECOND_COMPANY}: attestations, compte",
        *(f"collab   {email} on {COMPANY}: {', '.join(scope)}" for email, scope in COLLABORATORS.items()),
    )
