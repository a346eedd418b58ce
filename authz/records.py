"""Rows to records, with the status a reader sees at a given instant.

The stored status is pending, active or revoked; a link also reads ``expired`` once
its activation link or its end date has passed. This is presentation of state, not a
decision: decisions ask the policy, which checks ``in_force`` itself.
"""

from __future__ import annotations

from datetime import datetime

from authz.model import DelegationRecord, GrantRecord, LinkStatus
from authz.store import split_scope


def delegation_status(row, now: datetime) -> LinkStatus:
    if row.status == LinkStatus.PENDING and row.token_expires_at is not None and row.token_expires_at <= now:
        return LinkStatus.EXPIRED
    return _lapsed(LinkStatus(row.status), row.ends_at, now)


def _lapsed(status: LinkStatus, ends_at: datetime | None, now: datetime) -> LinkStatus:
    if status == LinkStatus.ACTIVE and ends_at is not None and ends_at <= now:
        return LinkStatus.EXPIRED
    return status


def is_live(status: LinkStatus) -> bool:
    """Whether a link can still be changed (it is neither revoked nor expired)."""
    return status in (LinkStatus.PENDING, LinkStatus.ACTIVE)


def delegation_record(row, now: datetime) -> DelegationRecord:
    status = delegation_status(row, now)
    return DelegationRecord(
        id=row.id,
        company=row.company_siret,
        manager_email=row.manager_email,
        firm=row.firm_siret,
        status=status,
        scope=split_scope(row.scope),
        created_at=row.created_at,
        ends_at=row.ends_at,
        activated_at=row.activated_at,
        revoked_at=row.revoked_at,
        activation_expires_at=row.token_expires_at if row.status == LinkStatus.PENDING else None,
    )


def grant_record(row, now: datetime) -> GrantRecord:
    return GrantRecord(
        id=row.id,
        firm=row.firm_siret,
        collaborator=row.collaborator_email,
        company=row.company_siret,
        status=_lapsed(LinkStatus(row.status), row.ends_at, now),
        scope=split_scope(row.scope),
        created_at=row.created_at,
        ends_at=row.ends_at,
        revoked_at=row.revoked_at,
    )
