"""The policy guide's worked example, run as written, then deployed to a running service.

docs/policy-guide.md adds a right by editing a draft; this test applies the guide's
own code blocks, runs the guide's commands, and deploys the draft to a live server
with two workers under load: no request may fail, and every worker must converge.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from authz.store import Database
from tests.e2e.harness import Api, Cli, Server, environment
from tests.support import ROOT

GUIDE = ROOT / "docs" / "policy-guide.md"
BLOCK = re.compile(r"```(\w+)([^\n]*)\n(.*?)```", re.DOTALL)
ALICE, CHLOE = "alice@dupont.example", "chloe@legrand.example"
DUPONT = "73282932000074"


def guide_blocks() -> list[tuple[str, str, str]]:
    return [(lang, info.strip(), body) for lang, info, body in BLOCK.findall(GUIDE.read_text())]


def copy_policy(target: Path) -> Path:
    target.mkdir(parents=True)
    shutil.copy(ROOT / "policies.polar", target / "policies.polar")
    shutil.copytree(ROOT / "policies", target / "policies")
    return target


def apply_guide_edits(draft: Path) -> list[str]:
    """Apply every block of the guide that names a file; return the commands it shows."""
    commands = []
    for lang, info, body in guide_blocks():
        if "file=" in info:
            name = re.search(r"file=(\S+)", info).group(1)
            path = draft / name
            if lang == "diff":
                removed = [line[1:] for line in body.splitlines() if line.startswith("-")]
                added = [line[1:] for line in body.splitlines() if line.startswith("+")]
                text = path.read_text()
                assert "\n".join(removed) in text, f"the guide's diff does not apply to {name}"
                path.write_text(text.replace("\n".join(removed), "\n".join(added)))
            elif "append" in info.split():
                path.write_text(path.read_text() + "\n" + body)
            else:
                path.write_text(body)
        elif lang == "sh":
            commands += [line.strip() for line in body.splitlines() if line.strip().startswith("authz policy")]
    return commands


@pytest.fixture
def workdir(tmp_path) -> Path:
    live = copy_policy(tmp_path / "live")
    draft = tmp_path / "draft"
    shutil.copytree(live, draft)
    return tmp_path


def test_guide_example_checks_tests_and_shows_impact(workdir):
    cli = Cli(environment(f"sqlite:///{workdir / 'authz.sqlite3'}", AUTHZ_POLICY_DIR=str(workdir / "live")), workdir)
    cli.ok("db", "upgrade")
    cli.ok("demo")

    commands = apply_guide_edits(workdir / "draft")

    assert commands == ["authz policy check draft", "authz policy test draft", "authz policy impact draft"]
    check, test, impact = (cli.ok(*command.split()[1:]).stdout for command in commands)
    assert "policy in draft is valid" in check
    assert re.search(r"==== \d+ passed, 0 failed in \d+ tables ====", test)
    assert "formation.yaml" in test or "training requests" in test
    assert f"+ {ALICE} formation {DUPONT}" in impact
    assert ", 0 lost" in impact


def test_guide_example_refused_when_its_table_fails(workdir):
    cli = Cli(environment(f"sqlite:///{workdir / 'authz.sqlite3'}", AUTHZ_POLICY_DIR=str(workdir / "live")), workdir)
    apply_guide_edits(workdir / "draft")
    polar = workdir / "draft" / "policies.polar"
    polar.write_text(polar.read_text().replace('delegable("formation");', ""))
    cli.ok("policy", "check", "draft")  # it compiles: only the decision tables can catch it

    done = cli("policy", "test", "draft")

    assert done.returncode == 1
    assert "formation" in done.stdout and "FAILED" in done.stdout


def test_deploying_the_guide_example_to_a_running_service_fails_no_request(workdir):
    live = workdir / "live"
    env = environment(f"sqlite:///{workdir / 'authz.sqlite3'}", AUTHZ_POLICY_DIR=str(live),
                      AUTHZ_POLICY_WATCH_SECONDS="1")
    cli = Cli(env, workdir)
    cli.ok("db", "upgrade")
    cli.ok("demo")
    admin = cli.create_key("admin", "policy-admin")
    server = Server(env, workdir, workdir / "server.log", workers=2).start()
    api = Api(server.base_url, admin)
    failures, versions, stop = [], [], threading.Event()

    def load():
        # A question the change must not affect, asked without pause during every reload.
        while not stop.is_set():
            reply = api.post("/access/v1/evaluation", {
                "subject": {"type": "user", "id": CHLOE}, "action": {"name": "declarations"},
                "resource": {"type": "company", "id": DUPONT}})
            if reply.status != 200 or reply.body.get("decision") is not True:
                failures.append((reply.status, reply.body))
            versions.append(reply.headers.get("x-authz-policy-version"))

    threads = [threading.Thread(target=load) for _ in range(3)]
    try:
        old = api.get("/v1/policy").body["version"]
        assert api.decide(ALICE, "formation", DUPONT) is False
        for thread in threads:
            thread.start()

        apply_guide_edits(workdir / "draft")
        # The impact over HTTP, as the guide shows it: 202, then the report at its address.
        started = api.post("/v1/policy/impact", {"files": draft_files(workdir / "draft")},
                           headers={"Prefer": "respond-async"})
        assert started.status == 202, started.body
        report = poll_report(api, started.headers["location"])
        assert report["status"] == "done", report
        assert {"user": ALICE, "right": "formation", "company": DUPONT} in report["gained"]
        assert report["counts"]["lost"] == 0

        shutil.copytree(workdir / "draft", live, dirs_exist_ok=True)  # the guide's `cp -r draft/. live/`
        new = wait_for_every_worker(api, lambda version: version != old)
        assert api.decide(ALICE, "formation", DUPONT) is True

        # A broken edit is refused by every worker; the new version keeps serving.
        (live / "policies" / "broken.polar").write_text("holds_right(user: Usr, r, c, \"x\") if r = c;\n")
        time.sleep(3)
        refused = api.post("/v1/policy/reload", {})
        assert refused.status == 422
        assert refused.error["details"]["errors"][0]["file"].endswith("broken.polar")
        assert wait_for_every_worker(api, lambda version: version == new) == new
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=15)
        server.stop()

    assert failures == []
    assert len(versions) > 50, "the load must have run during the reloads"
    records = reload_records(env["AUTHZ_DATABASE_URL"])
    accepted = [r for r in records if r.action == "policy.reload"]
    assert [(r.details["old_version"], r.details["new_version"]) for r in accepted] == [(old, new)]
    refused = {r.actor for r in records if r.action == "policy.reload_refused"}
    assert {"key:policy-admin", "key:file-watch"} <= refused


def draft_files(draft: Path) -> dict[str, str]:
    files = {"policies.polar": (draft / "policies.polar").read_text()}
    files |= {f"policies/{path.name}": path.read_text() for path in sorted((draft / "policies").glob("*.polar"))}
    return files


def poll_report(api: Api, href: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        reply = api.get(href)
        assert reply.status in (200, 202), reply.body
        if reply.body["status"] != "running" or time.monotonic() > deadline:
            return reply.body
        time.sleep(0.2)


def reload_records(url: str):
    database = Database(url)
    try:
        with database.transaction(write=False) as tx:
            return [r for r in tx.audit(None, None, None, None, 1000) if r.action.startswith("policy.")]
    finally:
        database.dispose()


def wait_for_every_worker(api: Api, wanted, seconds: float = 90) -> str:
    """Ask until 20 answers in a row (new connections, so spread over workers) carry a wanted version."""
    deadline = time.monotonic() + seconds
    streak, version = 0, None
    while time.monotonic() < deadline:
        version = api.get("/readyz").body["policy_version"]
        streak = streak + 1 if wanted(version) else 0
        if streak >= 20:
            return version
        time.sleep(0.05)
    raise AssertionError(f"the workers did not converge (last version seen: {version})")
