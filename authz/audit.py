"""The change log: one record per change, written in the change's own transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from authz.store import Tx


@dataclass(frozen=True)
class Context:
    """Who is asking, through which key, under which request id."""

    user: str | None = None
    key: str | None = None
    request_id: str | None = None

    @property
    def actor(self) -> str:
        if self.user:
            return self.user
        return f"key:{self.key}" if self.key else "system"


def record(
    tx: Tx,
    ctx: Context,
    at: datetime,
    action: str,
    *,
    company: str | None = None,
    firm: str | None = None,
    subject: str | None = None,
    target: str | None = None,
    **details,
) -> None:
    """Append one audit record; ``details`` says what changed (JSON-serialisable)."""
    tx.append_audit(
        at=at,
        actor=ctx.actor,
        action=action,
        company_siret=company,
        firm_siret=firm,
        subject_email=subject,
        target_id=target,
        details=details,
        request_id=ctx.request_id,
    )
