"""``python -m bench.impact``: impact reports over a benchmark dataset, with their figures.

    python -m bench.impact [--size national] [--db sqlite|postgres|<database URL>] [--workers 1]

Uses a dataset ``python -m bench`` already generated and cached (``var/bench/``, or the
PostgreSQL database ``authz_bench_<size>``); it never loads one, and only reads. Runs,
against the shipped policy:

1. the policy guide's draft (a new delegable right, ``formation``), over every pair;
2. revoking, then narrowing to ``compte``, the delegation of the largest firm to the
   client with the most people linked to it.

Prints, for each, the seconds, the pairs checked, the shapes and policy questions, the
counts gained and lost, and how the pairs were grouped.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import func, select

from authz.engine import LoadedPolicy, read_policy
from authz.impact import Impact
from authz.policy import PolicyAdmin
from authz.store import Database
from authz.tables import company_admins, delegations, grants
from bench import datasets

ROOT = Path(__file__).resolve().parent.parent
NEW_RIGHT = '\n# Training requests (the policy guide\'s example).\nright("formation");\ndelegable("formation");\n'


def url_for(db: str, size: str) -> str:
    if db == "sqlite":
        return datasets.sqlite_url(size)
    if db == "postgres":
        return datasets.postgres_url(size)
    return db


def guide_draft() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as folder:
        draft = Path(folder)
        shutil.copy(ROOT / "policies.polar", draft / "policies.polar")
        shutil.copytree(ROOT / "policies", draft / "policies")
        with (draft / "policies.polar").open("a", encoding="utf-8") as policy:
            policy.write(NEW_RIGHT)
        return read_policy(draft)


def largest_firms_busiest_delegation(db: Database) -> tuple[str, str, str]:
    """(delegation id, firm, company): the largest firm's active delegation to its busiest client."""
    with db.transaction(write=False) as tx:
        firm = tx.conn.execute(
            select(delegations.c.firm_siret).where(delegations.c.firm_siret.is_not(None))
            .group_by(delegations.c.firm_siret).order_by(func.count().desc()).limit(1)
        ).scalar_one()
        clients = select(delegations.c.id, delegations.c.company_siret).where(
            delegations.c.firm_siret == firm, delegations.c.status == "active").subquery()
        people = (
            select(func.count()).where(grants.c.company_siret == clients.c.company_siret).scalar_subquery()
            + select(func.count()).where(company_admins.c.company_siret == clients.c.company_siret)
            .scalar_subquery()
        )
        row = tx.conn.execute(
            select(clients.c.id, clients.c.company_siret).order_by(people.desc(), clients.c.id).limit(1)
        ).one()
    return row.id, firm, row.company_siret


def show(title: str, found: Impact) -> None:
    print(f"{title}: {found.seconds:.1f}s, {found.pairs_checked:,} pairs, {found.shapes:,} shapes, "
          f"{found.questions:,} policy questions, {len(found.gained):,} gained, {len(found.lost):,} lost")
    print(f"  {found.method}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="national", choices=["small", "medium", "large", "national"])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgres, or a database URL")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    db = Database(url_for(args.db, args.size))
    admin = PolicyAdmin(db, LoadedPolicy(ROOT), workers=args.workers)
    print(f"impact over the {args.size} dataset ({db.engine.url.render_as_string(hide_password=True)}), "
          f"{args.workers} worker(s)", flush=True)
    show("the guide's draft (new delegable right formation)", admin.impact_of_draft(guide_draft()))
    delegation, firm, company = largest_firms_busiest_delegation(db)
    print(f"the largest firm {firm}: its delegation {delegation} to {company}")
    show("  revoked", admin.impact_of_delegation_change(delegation, None))
    show("  narrowed to compte", admin.impact_of_delegation_change(delegation, ["compte"]))
    db.dispose()


if __name__ == "__main__":
    main()
