"""Impact reports of policy drafts, computed in a process of their own, kept in the store.

A report over a national store takes about a minute and more than a gigabyte of
memory: longer than a request may last (gunicorn stops a worker after 30 s), and too
much to leave behind in a serving worker. ``ImpactJobs.start`` records the request and
starts ``python -m authz.impact_jobs ID``, a fresh process that computes the report,
writes it back and exits; any process of the service can then answer a poll. The
computing process stamps a heartbeat; a report whose heartbeat stops (the process was
killed, the machine restarted) is answered as failed, never left running forever.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from authz import census, impact
from authz.engine import Engine
from authz.errors import AuthzError, Busy, NotFound
from authz.store import Database
from authz.tables import utcnow

log = logging.getLogger("authz.impact")

HEARTBEAT_SECONDS = 5.0
ABANDONED_AFTER = timedelta(seconds=60)  # twelve missed heartbeats
KEPT_FOR = timedelta(days=7)
RUNNING_AT_MOST = 2  # each holds a core and a gigabyte on a national store
URL_VARIABLE = "AUTHZ_IMPACT_DATABASE_URL"  # how the computing process finds the store
# The computing process runs niced, so that the service's workers on the same machine
# keep their share of the cores while a report takes one for a minute.
NICENESS = 10


@dataclass(frozen=True)
class ImpactJob:
    id: str
    status: str  # running, done, failed
    requested_by: str | None
    as_of: datetime
    started_at: datetime
    finished_at: datetime | None
    policy_version: str
    draft_version: str
    report: dict | None
    error: str | None


Launch = Callable[[str], None]


class ImpactJobs:
    """Start impact reports of drafts in the background, and read them back."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = utcnow, launch: Launch | None = None,
                 census_folder: Path | None = None):
        """``clock`` gives the instant the facts are read at; ``launch`` starts the computation of a report;
        ``census_folder``: where reports keep the store's census (``authz.census``; None: none)."""
        self.db = db
        self.clock = clock
        self.launch = launch or self._subprocess
        self.census_folder = census_folder

    def start(self, running: Engine, draft: Engine, requested_by: str | None,
              listed_at_most: int = impact.LISTED_AT_MOST) -> ImpactJob:
        """Record a report of ``draft`` against ``running`` and start computing it."""
        job_id = uuid.uuid4().hex
        now = utcnow()
        with self.db.transaction() as tx:
            tx.purge_impact_reports(now - KEPT_FOR)
            if tx.impact_reports_running(now - ABANDONED_AFTER) >= RUNNING_AT_MOST:
                raise Busy(f"{RUNNING_AT_MOST} impact reports are being computed; ask again when one is done",
                           {"running": RUNNING_AT_MOST})
            tx.insert_impact_report({
                "id": job_id, "status": "running", "requested_by": requested_by, "as_of": self.clock(),
                "started_at": now, "heartbeat_at": now, "policy_version": running.version,
                "draft_version": draft.version, "sources": {"running": running.sources, "draft": draft.sources},
                "listed_at_most": listed_at_most,
            })
        try:
            self.launch(job_id)
        except OSError as exc:
            _finish(self.db, job_id, None, f"the report could not be started: {exc}")
        return self.get(job_id)

    def get(self, job_id: str) -> ImpactJob:
        with self.db.transaction(write=False) as tx:
            row = tx.impact_report(job_id)
        if row is None:
            raise NotFound("no such impact report", {"id": job_id})
        status, error = row["status"], row["error"]
        if status == "running" and row["heartbeat_at"] < utcnow() - ABANDONED_AFTER:
            status = "failed"
            error = f"the process computing the report stopped (last heartbeat {row['heartbeat_at'].isoformat()})"
        return ImpactJob(
            row["id"], status, row["requested_by"], row["as_of"], row["started_at"], row["finished_at"],
            row["policy_version"], row["draft_version"], row["report"], error,
        )

    def wait(self, job_id: str, seconds: float) -> ImpactJob:
        """The report once it is no longer running, or as it is after ``seconds``."""
        deadline = time.monotonic() + seconds
        pause = 0.05
        while True:
            job = self.get(job_id)
            left = deadline - time.monotonic()
            if job.status != "running" or left <= 0:
                return job
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.5)

    def _subprocess(self, job_id: str) -> None:
        url = self.db.engine.url.render_as_string(hide_password=False)
        process = subprocess.Popen(  # our own interpreter and module, no shell
            [sys.executable, "-m", "authz.impact_jobs", job_id],
            env={**os.environ, URL_VARIABLE: url,
                 census.FOLDER_VARIABLE: "off" if self.census_folder is None else str(self.census_folder)},
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a worker recycled meanwhile does not take the report with it
        )
        # Reaped when it ends, so that no zombie stays behind in a long-lived worker.
        threading.Thread(target=process.wait, name=f"impact-{job_id[:8]}", daemon=True).start()


def compute(db: Database, job_id: str) -> None:
    """Compute the report ``job_id`` and store it (the body of the background process)."""
    with db.transaction(write=False) as tx:
        row = tx.impact_report(job_id)
    if row is None or row["status"] != "running":
        return
    stop = threading.Event()
    beating = threading.Thread(target=_beat, args=(db, job_id, stop), daemon=True)
    beating.start()
    report, error = None, None
    try:
        sources = row["sources"]
        found = impact.measure(db, Engine(sources["running"]), Engine(sources["draft"]), row["as_of"].timestamp(),
                               census_folder=census.folder())
        report = impact.document(found, row["listed_at_most"])
        log.info("impact report %s: %d pairs, %d questions in %.1fs", job_id, found.pairs_checked,
                 found.questions, found.seconds)
    except AuthzError as exc:
        error = exc.message
    except Exception as exc:  # stored for whoever polls, then the process ends
        log.exception("impact report %s failed", job_id)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        stop.set()
        beating.join()
    _finish(db, job_id, report, error)


def _beat(db: Database, job_id: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            with db.transaction() as tx:
                tx.update_impact_report(job_id, heartbeat_at=utcnow())
        except AuthzError:
            log.warning("impact report %s: heartbeat not stored", job_id)


def _finish(db: Database, job_id: str, report: dict | None, error: str | None) -> None:
    with db.transaction() as tx:
        tx.update_impact_report(job_id, status="done" if error is None else "failed", report=report, error=error,
                                finished_at=utcnow(), heartbeat_at=utcnow())


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if len(argv) != 1 or not os.environ.get(URL_VARIABLE):
        print(f"usage: {URL_VARIABLE}=<database url> python -m authz.impact_jobs REPORT_ID", file=sys.stderr)
        return 2
    os.nice(NICENESS)
    db = Database(os.environ[URL_VARIABLE])
    try:
        compute(db, argv[0])
    finally:
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
