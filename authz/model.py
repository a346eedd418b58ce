"""Domain types.

Two families live here:

* the *facts* handed to the policy (``User``, ``Company``, ``Firm``, ``Delegation``,
  ``Grant``, ``ApiKey``, ``GrantRequest``): frozen snapshots of the rows a decision
  needs, taken at one instant (``User.now``). Polar reads their attributes; Python
  never decides anything from them.
* the *records* returned by use cases (``DelegationRecord``, ``GrantRecord`` ...):
  what callers display.

Times are timezone-aware ``datetime`` in records and POSIX seconds (``float``) in
facts, because Polar compares numbers, not datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class LinkStatus(StrEnum):
    """Stored state of a delegation or grant; ``expired`` is derived from the clock."""

    PENDING = "pending"
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


class KeyRole(StrEnum):
    PEP = "pep"
    PORTAL = "portal"
    ADMIN = "admin"


def epoch(moment: datetime | None) -> float | None:
    """Return POSIX seconds for ``moment`` (None stays None), as Polar facts want."""
    return None if moment is None else moment.timestamp()


# ---- facts for the policy -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delegation:
    """A company's delegation to a firm, as the policy sees it."""

    id: str
    company: str
    manager_email: str
    firm: str | None
    status: str
    scope: frozenset[str]
    ends_at: float | None


@dataclass(frozen=True, slots=True)
class Grant:
    """A firm's sub-delegation to one collaborator on one client company."""

    id: str
    firm: str
    collaborator: str
    company: str
    status: str
    scope: frozenset[str]
    ends_at: float | None


@dataclass(frozen=True, slots=True)
class User:
    """A person and the memberships that matter to one question, at instant ``now``."""

    email: str
    now: float
    admin_of: frozenset[str] = frozenset()
    manages: frozenset[str] = frozenset()
    collaborates: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Company:
    """A member company with the links the question may follow."""

    siret: str
    delegations: tuple[Delegation, ...] = ()
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True, slots=True)
class CompanySpace:
    """A company's secure space, the resource of management actions (never of rights)."""

    siret: str


@dataclass(frozen=True, slots=True)
class Firm:
    siret: str
    manager_email: str | None


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    role: str


# ---- records returned to callers --------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompanyRecord:
    siret: str
    name: str
    admins: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DelegationRecord:
    id: str
    company: str
    manager_email: str
    firm: str | None
    status: LinkStatus
    scope: tuple[str, ...]
    created_at: datetime
    ends_at: datetime | None
    activated_at: datetime | None
    revoked_at: datetime | None
    activation_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Activation:
    """The one-time link handed back at designation; the token is never stored."""

    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Designation:
    delegation: DelegationRecord
    activation: Activation


@dataclass(frozen=True, slots=True)
class GrantRecord:
    id: str
    firm: str
    collaborator: str
    company: str
    status: LinkStatus
    scope: tuple[str, ...]
    created_at: datetime
    ends_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A client company of a firm with the rights the firm holds on it now."""

    siret: str
    name: str
    delegation_id: str
    scope: tuple[str, ...]
    ends_at: datetime | None


@dataclass(frozen=True, slots=True)
class CollaboratorRecord:
    firm: str
    email: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    company: str | None
    firm: str | None
    subject: str | None
    target: str | None
    details: dict
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """A yes/no answer and the short reason code behind it."""

    allowed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Link:
    """One link of an explained chain: what it is, its state, and whether it holds."""

    kind: str
    id: str | None
    holds: bool
    status: str | None = None
    scope: tuple[str, ...] | None = None
    ends_at: datetime | None = None
    created_at: datetime | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    rule: str | None
    chain: tuple[Link, ...] = field(default_factory=tuple)
    broken: Link | None = None
