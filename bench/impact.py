"""``python -m bench.impact``: impact reports over a benchmark dataset, with their figures.

    python -m bench.impact [--size national] [--db sqlite|postgres|<database URL>] [--workers 1]

Uses a dataset ``python -m bench`` already generated and cached (``var/bench/``, or the
PostgreSQL database ``authz_bench_<size>``); it never loads one, and only reads. Runs,
against the shipped policy, with a census folder of its own (``authz.census``):

1. the policy guide's draft (a new delegable right, ``formation``) reading the whole
   store, as with ``AUTHZ_CACHE_DIR=off``: the baseline;
2. the same draft again, building the census (a first report);
3. the same draft from the census, refreshed: a report once the census exists;
4. another draft (``compte`` no longer delegable) from the census;
5. what a refresh pays per changed company: reading 1,000 companies again;
6. revoking, then narrowing to ``compte``, the delegation of the largest firm to the
   client with the most people linked to it.

Prints, for each report, the seconds, the pairs checked, the shapes and policy
questions, the counts gained and lost, and how the pairs were grouped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from authz import census, pairs
from authz.engine import LoadedPolicy, read_policy
from authz.impact import Impact
from authz.policy import PolicyAdmin
from authz.store import Database
from authz.tables import company_admins, delegations, grants
from bench import datasets, report

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


LINES: list[str] = []  # what the run printed, for its section of BENCHMARKS.md


def say(line: str) -> None:
    LINES.append(line)
    print(line, flush=True)


def show(title: str, found: Impact) -> None:
    say(f"{title}: {found.seconds:.1f}s, {found.pairs_checked:,} pairs, {found.shapes:,} shapes, "
        f"{found.questions:,} policy questions, {len(found.gained):,} gained, {len(found.lost):,} lost")
    say(f"  {found.method}")


def narrower_draft() -> dict[str, str]:
    sources = read_policy(ROOT)
    sources["policies.polar"] = sources["policies.polar"].replace('delegable("compte");\n', "")
    return sources


def reread(db: Database, place: Path, count: int) -> tuple[float, int]:
    """Seconds to read ``count`` companies again into the census, as a refresh does, and their pairs."""
    now = time.time()
    taken = census.current(db, now, place)
    assert taken is not None
    kept = taken[0]
    chosen = kept.sirets[::max(1, len(kept.sirets) // count)][:count]
    started = time.perf_counter()
    with db.transaction(write=False) as tx:
        population = pairs.load_some(tx, chosen, now)
    kept.take(population)
    return time.perf_counter() - started, population.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="national", choices=["small", "medium", "large", "national"])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgres, or a database URL")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the whole-store read")
    args = parser.parse_args()

    db = Database(url_for(args.db, args.size))
    began, load = datetime.now(UTC), os.getloadavg()
    say(f"impact over the {args.size} dataset ({db.engine.url.render_as_string(hide_password=True)})")
    with tempfile.TemporaryDirectory(prefix="authz-bench-census-") as folder:
        place = Path(folder)
        whole = PolicyAdmin(db, LoadedPolicy(ROOT), workers=args.workers, census_folder=None)
        kept = PolicyAdmin(db, LoadedPolicy(ROOT), census_folder=place)
        baseline = whole.impact_of_draft(guide_draft())
        show(f"the guide's draft (new delegable right formation), whole store read, {args.workers} worker(s)",
             baseline)
        show("the same draft, building the census", kept.impact_of_draft(guide_draft()))
        warm = kept.impact_of_draft(guide_draft())
        show("the same draft, census refreshed", warm)
        show("another draft (compte no longer delegable), census refreshed", kept.impact_of_draft(narrower_draft()))
        say(f"census refreshed against the whole store read: {warm.seconds / baseline.seconds:.2f} "
            f"of its time ({baseline.seconds / warm.seconds:.1f}x faster)")
        seconds, size = reread(db, place, 1000)
        say(f"a refresh reads each changed company again: 1,000 companies ({size:,} pairs) in {seconds:.2f}s")
    delegation, firm, company = largest_firms_busiest_delegation(db)
    say(f"the largest firm {firm}: its delegation {delegation} to {company}")
    show("  revoked", whole.impact_of_delegation_change(delegation, None))
    show("  narrowed to compte", whole.impact_of_delegation_change(delegation, ["compte"]))
    db.dispose()
    if args.size == "national" and args.db in ("sqlite", "postgres"):
        write_section(args, began, load)


def write_section(args: argparse.Namespace, began: datetime, load: tuple[float, float, float]) -> None:
    """This run's lines as the section of BENCHMARKS.md for its database."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    body = "\n".join([
        f"## Impact reports over the national dataset, {args.db}",
        "",
        f"`python -m bench.impact --db {args.db}` (issue #3: a draft's impact in seconds), "
        f"{began:%Y-%m-%d %H:%M} UTC, commit {commit}, load average before the run "
        f"{' '.join(f'{x:.2f}' for x in load)}. The baseline is the same report reading the whole store "
        "(`AUTHZ_CACHE_DIR=off`), measured in the same run.",
        "",
        "```text",
        *LINES,
        "```",
    ])
    report.put_section(ROOT / "BENCHMARKS.md", f"impact-{args.db}", body)
    print(f"wrote the impact-{args.db} section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
