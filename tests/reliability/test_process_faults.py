"""What `authz serve` does when a policy file or a worker process goes wrong.

- an invalid policy at start: the server refuses to start, naming the file;
- an invalid policy written over a running one: the reload is refused, the running
  policy stays in service;
- a worker killed (SIGKILL): gunicorn starts another, the service keeps answering;
- both at once: a worker dies while an invalid (refused) policy sits on disk.

SQLite file, demo story, a private copy of the project's policy folder
(AUTHZ_POLICY_DIR). Run with -s to see the figures RELIABILITY.md quotes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz.demo import ADMIN, COMPANY
from tests.e2e.harness import Api, Cli, Server, authz_script, environment, free_port
from tests.support import ROOT

BROKEN = "\n# an edit gone wrong\nthis is not polar (\n"
REPLACE_BOUND = 20.0  # seconds for gunicorn to have its workers back


@dataclass
class Running:
    server: Server
    policy_dir: Path
    pep: Api
    admin: Api
    tmp: Path  # the server's TMPDIR

    def right(self, times: int = 20) -> bool:
        """``times`` fresh decisions (allow and deny) all answered right."""
        return all(self.pep.decide(ADMIN, "declarations", COMPANY) and not self.pep.decide(ADMIN, "nope", COMPANY)
                   for _ in range(times // 2))

    def version(self) -> str:
        reply = self.admin.get("/v1/policy")
        assert reply.status == 200, reply.body
        return reply.body["version"]

    def break_policy(self) -> None:
        with (self.policy_dir / "policies" / "firm.polar").open("a", encoding="utf-8") as polar:
            polar.write(BROKEN)


def copy_policy(target: Path) -> Path:
    target.mkdir()
    shutil.copy(ROOT / "policies.polar", target / "policies.polar")
    shutil.copytree(ROOT / "policies", target / "policies")
    return target


@pytest.fixture
def running(tmp_path) -> Iterator[Running]:
    policy_dir, tmp = copy_policy(tmp_path / "policy"), tmp_path / "tmp"
    tmp.mkdir()
    cli = Cli(environment(f"sqlite:///{tmp_path / 'authz.sqlite3'}", AUTHZ_POLICY_DIR=str(policy_dir),
                          AUTHZ_POLICY_WATCH_SECONDS="1", TMPDIR=str(tmp)), tmp_path)
    cli.ok("db", "upgrade")
    keys = {role: cli.create_key(role, f"faults-{role}") for role in ("pep", "admin")}
    cli.ok("demo")
    server = Server(cli.env, tmp_path, tmp_path / "server.log", workers=2)
    try:
        server.start()
        # Server.start returns once one worker answers; wait until every worker has built the
        # app, so that no worker is still reading the policy files when a test edits them.
        deadline = time.monotonic() + REPLACE_BOUND
        while not all(booted(tmp, pid) for pid in server.worker_pids() or []) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield Running(server, policy_dir, Api(server.base_url, keys["pep"]), Api(server.base_url, keys["admin"]), tmp)
    finally:
        server.stop()


def booted(tmp: Path, pid: int) -> bool:
    """A worker has built the app once its metrics file exists (prometheus_client's
    multiprocess folder, which `authz serve` makes in TMPDIR)."""
    return any(tmp.glob(f"authz-metrics-*/counter_{pid}.db"))


def wait_for_new_workers(server: Server, old: set[int], tmp: Path) -> tuple[list[int], float]:
    """Wait until gunicorn has all its workers again, the new ones booted (the app built);
    return them and the seconds it took. Stop waiting if the server itself exits."""
    began = time.monotonic()
    while time.monotonic() - began < REPLACE_BOUND:
        if server.process.poll() is not None:
            break
        pids = server.worker_pids() or []
        new = set(pids) - old
        if len(pids) >= server.workers and new and all(booted(tmp, pid) for pid in new):
            break
        time.sleep(0.05)
    return server.worker_pids() or [], time.monotonic() - began


def kill_a_worker(running: Running) -> tuple[int, list[int], float]:
    before = running.server.worker_pids()
    assert before, "no worker to kill (no /proc?)"
    os.kill(before[0], signal.SIGKILL)
    after, seconds = wait_for_new_workers(running.server, set(before), running.tmp)
    return before[0], after, seconds


def test_an_invalid_policy_at_start_refuses_to_start_and_names_the_file(tmp_path):
    policy_dir = copy_policy(tmp_path / "policy")
    with (policy_dir / "policies" / "firm.polar").open("a", encoding="utf-8") as polar:
        polar.write(BROKEN)
    env = environment(f"sqlite:///{tmp_path / 'authz.sqlite3'}", AUTHZ_POLICY_DIR=str(policy_dir))
    Cli(env, tmp_path).ok("db", "upgrade")
    began = time.monotonic()
    done = subprocess.run([authz_script(), "serve", "--port", str(free_port()), "--workers", "2"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    print(f"\n[process faults: invalid policy at start] `authz serve` exited {done.returncode} after "
          f"{time.monotonic() - began:.1f} s; its output names policies/firm.polar: {'policies/firm.polar' in output}; "
          f"last line: {output.strip().splitlines()[-1]!r}")
    assert done.returncode != 0
    assert "policies/firm.polar" in output


def test_an_invalid_policy_written_over_the_running_one_is_refused_and_the_running_one_stays(running):
    version = running.version()
    running.break_policy()
    time.sleep(3)  # the watcher looks every second, in each worker
    refused = running.admin.post("/v1/policy/reload", {})
    audit = running.admin.get("/v1/audit?limit=1000").body["records"]
    refusals = [r for r in audit if r["action"] == "policy.reload_refused"]
    print(f"\n[process faults: invalid policy on reload] POST /v1/policy/reload answered {refused.status}; "
          f"policy version in service unchanged: {running.version() == version}; decisions right: {running.right()}; "
          f"policy.reload_refused audit records: {len(refusals)}")
    assert refused.status == 422
    assert running.version() == version
    assert running.right()
    assert refusals


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(running):
    master = running.server.process.pid
    killed, after, seconds = kill_a_worker(running)
    print(f"\n[process faults: worker killed] SIGKILL to worker {killed}: gunicorn had 2 workers again, the new "
          f"one booted, after {seconds:.2f} s ({after}); master unchanged: {running.server.process.pid == master and running.server.process.poll() is None}")
    assert running.server.process.poll() is None
    assert killed not in after and len(after) == 2
    assert running.right()


def test_a_killed_worker_is_replaced_while_a_refused_policy_is_on_disk(running):
    """The refused policy stays refused, the running one stays in service: a worker dying
    then (a crash, a kill, gunicorn's own timeout) must not take the service down."""
    version = running.version()
    running.break_policy()
    time.sleep(3)  # every worker has looked at the files, and refused them
    assert running.server.process.poll() is None, f"authz serve exited before any kill:\n{running.server.log()}"
    assert running.right() and running.version() == version
    killed, after, seconds = kill_a_worker(running)
    exited = running.server.process.poll()
    print(f"\n[process faults: worker killed while a refused policy is on disk] SIGKILL to worker {killed}: "
          f"after {seconds:.2f} s, authz serve " + (f"has EXITED with code {exited}; last lines of its log:\n"
          + "\n".join(running.server.log().strip().splitlines()[-3:]) if exited is not None
          else f"is up with workers {after}"))
    assert exited is None, (
        f"authz serve exited ({exited}): the replacement worker could not build the app from the invalid "
        f"policy on disk, and gunicorn stopped the whole server")
    assert killed not in after and len(after) == 2
    assert running.right() and running.version() == version
