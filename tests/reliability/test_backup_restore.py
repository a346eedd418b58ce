"""Backups restore to the same service: after a restore, `authz db upgrade` changes nothing,
and every decision, every delegation and the whole audit log read the same as on the
original, through `authz serve`, with the original's API keys.

PostgreSQL: `pg_dump -Fc` then `pg_restore` into a new database (private server, see
tests/reliability/private_postgres.py). SQLite: the online backup API
(sqlite3.Connection.backup) of the file while `authz serve` runs on it. The commands are
those of docs/operations.md. Run with -s to see the figures RELIABILITY.md quotes.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from authz import migrate
from authz.demo import ADMIN, COMPANY, FIRM, MANAGER, SECOND_COMPANY
from tests.e2e.harness import Api, Cli, Server, environment
from tests.reliability.private_postgres import binary
from tests.support import siret

THIRD = siret(4_0000_0000_0003)
THIRD_ADMIN = "zoe@third.example"
NEWCOMER = "fanny@legrand.example"
RIGHTS = ["declarations", "cotisations", "compte", "salaries", "conges", "intemperies", "attestations",
          "entreprise", "no_such_right"]
USERS = [ADMIN, "armand@martin.example", MANAGER, "chloe@legrand.example", "damien@legrand.example", NEWCOMER,
         THIRD_ADMIN, "gaston@other.example", "eve@nowhere.example"]
COMPANIES = [COMPANY, SECOND_COMPANY, THIRD]


@contextmanager
def serving(env: dict[str, str], workdir: Path, name: str) -> Iterator[Server]:
    server = Server(env, workdir, workdir / f"{name}.log", workers=1)
    try:
        yield server.start()
    finally:
        server.stop()


def ok(reply, status: int = 200) -> dict:
    assert reply.status == status, f"{reply.status} {reply.body}"
    return reply.body


def make_changes(portal: Api) -> None:
    """On top of the demo: a new company and admin, a designation activated into the existing
    firm, a collaborator granted, a grant made then revoked, a narrowing, a pending designation."""
    ok(portal.post("/v1/companies", {"siret": THIRD, "name": "Plâtrerie Tierce", "admin_email": THIRD_ADMIN}), 201)
    ok(portal.post(f"/v1/companies/{THIRD}/admins", {"email": "yann@third.example"}, user=THIRD_ADMIN), 201)
    designation = ok(portal.post(f"/v1/companies/{THIRD}/delegations",
                                 {"manager_email": MANAGER, "scope": ["compte", "attestations"]}, user=THIRD_ADMIN), 201)
    ok(portal.post("/v1/activations", {"token": designation["activation"]["token"], "firm_siret": FIRM,
                                       "firm_name": "Cabinet Legrand"}, user=MANAGER))
    ok(portal.post(f"/v1/firms/{FIRM}/collaborators", {"email": NEWCOMER}, user=MANAGER), 201)
    ok(portal.post(f"/v1/firms/{FIRM}/grants", {"collaborator": NEWCOMER, "company": THIRD, "scope": ["compte"]},
                   user=MANAGER), 201)
    passing = ok(portal.post(f"/v1/firms/{FIRM}/grants", {"collaborator": NEWCOMER, "company": COMPANY,
                                                          "scope": ["declarations"]}, user=MANAGER), 201)
    ok(portal.delete(f"/v1/grants/{passing['id']}", user=MANAGER))
    demo = next(d for d in ok(portal.get(f"/v1/companies/{COMPANY}/delegations", user=ADMIN))["delegations"]
                if d["status"] == "active")
    ok(portal.patch(f"/v1/delegations/{demo['id']}", {"scope": ["declarations", "cotisations", "compte", "salaries"]},
                    user=ADMIN))
    ok(portal.post(f"/v1/companies/{COMPANY}/delegations",
                   {"manager_email": "gaston@other.example", "scope": ["compte"]}, user=ADMIN), 201)


def audit_log(admin: Api) -> list[dict]:
    records, after = [], None
    while True:
        page = ok(admin.get("/v1/audit?limit=1000" + (f"&after={after}" if after else "")))
        records += page["records"]
        after = page["next_after"]
        if after is None:
            return records


def snapshot(base_url: str, keys: dict[str, str]) -> dict:
    """What the service says: every (user, right, company) decision with its reason, the
    delegations of each company, the audit log."""
    pep, portal, admin = (Api(base_url, keys[role]) for role in ("pep", "portal", "admin"))
    items = [{"subject": {"type": "user", "id": user}, "action": {"name": right},
              "resource": {"type": "company", "id": company}}
             for user in USERS for right in RIGHTS for company in COMPANIES]
    decisions = ok(pep.post("/access/v1/evaluations", {"evaluations": items}))["evaluations"]
    admins = {COMPANY: ADMIN, SECOND_COMPANY: "armand@martin.example", THIRD: THIRD_ADMIN}
    delegations = {company: ok(portal.get(f"/v1/companies/{company}/delegations", user=user))["delegations"]
                   for company, user in admins.items()}
    return {"decisions": decisions, "delegations": delegations, "audit": audit_log(admin)}


def set_up(cli: Cli) -> dict[str, str]:
    """Schema, keys and demo by the console script, the changes through `authz serve`."""
    cli.ok("db", "upgrade")
    keys = {role: cli.create_key(role, f"backup-{role}") for role in ("pep", "portal", "admin")}
    cli.ok("demo")
    return keys


def allowed(shot: dict) -> int:
    return sum(answer["decision"] for answer in shot["decisions"])


def test_pg_dump_then_pg_restore_gives_the_same_service(private_postgres, tmp_path):
    pg, workdir = private_postgres, tmp_path
    source = pg.create_database("authz_src")
    cli = Cli(environment(pg.url(source)), workdir)
    keys = set_up(cli)
    with serving(cli.env, workdir, "source") as server:
        make_changes(Api(server.base_url, keys["portal"]))
        before = snapshot(server.base_url, keys)
        dump = workdir / "authz.dump"
        subprocess.run([binary("pg_dump"), "-Fc", "-f", str(dump), "-d", pg.libpq(source)], check=True,
                       capture_output=True, timeout=60)

    restored = pg.create_database("authz_restored")
    subprocess.run([binary("pg_restore"), "--no-owner", "--exit-on-error", "-d", pg.libpq(restored), str(dump)],
                   check=True, capture_output=True, timeout=60)

    def plain(database: str) -> str:
        """The database as SQL text, without the random \\restrict key recent pg_dump adds."""
        text = subprocess.run([binary("pg_dump"), "-d", pg.libpq(database)], check=True, capture_output=True,
                              text=True, timeout=60).stdout
        return "\n".join(line for line in text.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))

    restored_env = environment(pg.url(restored))
    state_before_upgrade = plain(restored)
    upgrade = Cli(restored_env, workdir).ok("db", "upgrade")
    state_after_upgrade = plain(restored)
    with serving(restored_env, workdir, "restored") as server:
        after = snapshot(server.base_url, keys)

    print(f"\n[backup/restore: PostgreSQL] pg_dump -Fc ({dump.stat().st_size} bytes) -> pg_restore into a new "
          f"database: `authz db upgrade` on it: {upgrade.stdout.strip()!r}, dump before and after identical: "
          f"{state_before_upgrade == state_after_upgrade}; data identical to the source's: "
          f"{plain(source) == state_before_upgrade}; {len(before['decisions'])} decisions "
          f"({allowed(before)} allows) identical: {after['decisions'] == before['decisions']}; "
          f"{sum(map(len, before['delegations'].values()))} delegations identical: "
          f"{after['delegations'] == before['delegations']}; {len(before['audit'])} audit records identical: "
          f"{after['audit'] == before['audit']}; original API keys accepted")
    assert migrate.current(pg.url(restored)) == migrate.head()
    assert state_after_upgrade == state_before_upgrade, "authz db upgrade changed a restored database"
    assert plain(source) == state_before_upgrade
    assert after == before
    assert allowed(before) > 0 and len(before["audit"]) > 10


def sqlite_dump(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def backup(source: Path, target: Path) -> None:
    """The online backup API: a consistent copy, the WAL included, while others write."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def test_sqlite_online_backup_of_a_live_file_gives_the_same_service(tmp_path):
    workdir, live = tmp_path, tmp_path / "authz.sqlite3"
    cli = Cli(environment(f"sqlite:///{live}"), workdir)
    keys = set_up(cli)
    copy, under_load = workdir / "backup.sqlite3", workdir / "backup-under-load.sqlite3"
    with serving(cli.env, workdir, "source") as server:
        portal = Api(server.base_url, keys["portal"])
        make_changes(portal)
        before = snapshot(server.base_url, keys)
        backup(live, copy)  # the server is running, with its connections open on the file
        wal_bytes = (live.parent / f"{live.name}-wal").stat().st_size

        # A second backup while a portal keeps adding collaborators: a consistent snapshot.
        stop, added = threading.Event(), []

        def add_collaborators() -> None:
            while not stop.is_set():
                email = f"load{len(added)}@legrand.example"
                ok(portal.post(f"/v1/firms/{FIRM}/collaborators", {"email": email}, user=MANAGER), 201)
                added.append(email)

        writer = threading.Thread(target=add_collaborators, daemon=True)
        writer.start()
        while len(added) < 10:
            threading.Event().wait(0.02)
        backup(live, under_load)
        stop.set()
        writer.join(timeout=30)
        final_audit = audit_log(Api(server.base_url, keys["admin"]))

    copy_env = environment(f"sqlite:///{copy}")
    state_before_upgrade = sqlite_dump(copy)
    upgrade = Cli(copy_env, workdir).ok("db", "upgrade")
    state_after_upgrade = sqlite_dump(copy)
    with serving(copy_env, workdir, "restored") as server:
        after = snapshot(server.base_url, keys)

    conn = sqlite3.connect(under_load)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        audit_ids = [row[0] for row in conn.execute("SELECT id FROM audit_log ORDER BY id")]
        audited = {row[0] for row in conn.execute(
            "SELECT subject_email FROM audit_log WHERE action = 'firm.collaborator_add' AND subject_email LIKE 'load%'")}
        stored = {row[0] for row in conn.execute("SELECT user_email FROM collaborators WHERE user_email LIKE 'load%'")}
    finally:
        conn.close()
    prefix = [record["id"] for record in final_audit][: len(audit_ids)]

    print(f"\n[backup/restore: SQLite] sqlite3 backup API of the live file (server running, WAL {wal_bytes} bytes): "
          f"`authz db upgrade` on the copy: {upgrade.stdout.strip()!r}, dump before and after identical: "
          f"{state_before_upgrade == state_after_upgrade}; {len(before['decisions'])} decisions "
          f"({allowed(before)} allows) identical: {after['decisions'] == before['decisions']}; "
          f"{sum(map(len, before['delegations'].values()))} delegations identical: "
          f"{after['delegations'] == before['delegations']}; {len(before['audit'])} audit records identical: "
          f"{after['audit'] == before['audit']}")
    print(f"  backup under write load ({len(added)} collaborators added meanwhile): integrity_check {integrity!r}, "
          f"{len(stored)} of them in the copy, each with its audit record: {stored == audited}; the copy's audit "
          f"log is a prefix of the live one: {audit_ids == prefix}")
    assert migrate.current(f"sqlite:///{copy}") == migrate.head()
    assert state_after_upgrade == state_before_upgrade, "authz db upgrade changed a restored database"
    assert after == before
    assert allowed(before) > 0 and len(before["audit"]) > 10
    assert integrity == "ok" and stored == audited and audit_ids == prefix
