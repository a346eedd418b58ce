"""/metrics under `authz serve --workers 2`: whichever worker answers a scrape, the counts
are those of every worker (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import REQUEST_SECONDS, Api, Cli, Server, environment
from tests.support import siret

ROUND = 20  # evaluations sent at once, half allowed
MAX_ROUNDS = 10
SCRAPES = 6
COMPANY = siret(5_0000_0000_0001)
ADMIN = "alice@metrics.example"
STRANGER = "eve@metrics.example"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def running(tmp_path, sqlite_url):
    """A fresh SQLite file, keys from the console script, and two workers; TMPDIR is the
    test's own, so the metrics folder the server makes there can be looked at."""
    workdir, tmp = tmp_path / "cwd", tmp_path / "tmp"
    workdir.mkdir()
    tmp.mkdir()
    cli = Cli(environment(sqlite_url, TMPDIR=str(tmp)), workdir)
    cli.ok("db", "upgrade")
    keys = {role: cli.create_key(role, f"metrics-{role}") for role in ("pep", "portal", "admin")}
    server = Server(cli.env, workdir, tmp_path / "server.log", workers=2)
    try:
        server.start()
        yield server, keys, tmp
    finally:
        server.stop()


def scrape(server: Server, key: str) -> str:
    request = urllib.request.Request(server.base_url + "/metrics", headers={
        "Authorization": f"Bearer {key}", "Connection": "close",
    })
    with _OPENER.open(request, timeout=REQUEST_SECONDS) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def totals(text: str) -> dict[str, dict[tuple, float]]:
    """name -> {sorted labels: value}."""
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def metrics_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("authz-metrics-*"))


def wait_for_worker_files(folder: Path, workers: int) -> list[Path]:
    """Each worker writes its own counter file once it has built the app."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        files = sorted(folder.glob("counter_*.db"))
        if len(files) >= workers:
            return files
        time.sleep(0.1)
    raise AssertionError(f"fewer than {workers} workers wrote metrics in {folder}: {list(folder.iterdir())}")


def decided_per_worker(folder: Path) -> list[float]:
    """The decisions each worker counted, read from its own file."""
    counts = []
    for path in sorted(folder.glob("counter_*.db")):
        metrics = MultiProcessCollector.merge([str(path)], accumulate=True)
        counts.append(sum(sample.value for metric in metrics if metric.name == "authz_decisions"
                          for sample in metric.samples if sample.name == "authz_decisions_total"))
    return counts


def test_decisions_are_counted_across_workers(running):
    server, keys, tmp = running
    (folder,) = metrics_dirs(tmp)
    assert len(wait_for_worker_files(folder, 2)) == 2

    portal, pep = Api(server.base_url, keys["portal"]), Api(server.base_url, keys["pep"])
    reply = portal.post("/v1/companies", {"siret": COMPANY, "name": "Métriques SA", "admin_email": ADMIN})
    assert reply.status == 201, reply.body
    asked = [ADMIN if n % 2 == 0 else STRANGER for n in range(ROUND)]
    evaluations = 0
    with ThreadPoolExecutor(max_workers=8) as pool:  # keep both workers busy
        # Until both workers have decided some: a scrape must then add up two processes.
        while True:
            answers = list(pool.map(lambda user: pep.decide(user, "compte", COMPANY), asked))
            assert answers == [user == ADMIN for user in asked]
            evaluations += ROUND
            if all(decided_per_worker(folder)) or evaluations >= ROUND * MAX_ROUNDS:
                break
    per_worker = decided_per_worker(folder)
    assert len(per_worker) == 2 and all(per_worker), f"one worker answered all {evaluations}: {per_worker}"
    assert sum(per_worker) == evaluations

    for _ in range(SCRAPES):  # each scrape is a new connection, answered by either worker
        found = totals(scrape(server, keys["admin"]))
        decided = found["authz_decisions_total"]
        assert sum(decided.values()) == evaluations, decided
        assert decided[(("endpoint", "authzen.evaluation"), ("result", "allow"))] == evaluations / 2
        assert decided[(("endpoint", "authzen.evaluation"), ("result", "deny"))] == evaluations / 2
        latency = found["authz_request_duration_seconds_count"]
        assert latency[(("endpoint", "authzen.evaluation"), ("status", "200"))] == evaluations
        versions = [dict(labels)["version"] for labels in found["authz_policy_info"]]
        assert len(versions) == 1 and versions[0], versions

    records = [json.loads(line) for line in Path(server.log_path).read_text(errors="replace").splitlines()
               if line.startswith("{")]
    asked = [n for n, record in enumerate(records) if record.get("endpoint") == "authzen.evaluation"]
    logged = [records[n] for n in asked if records[n]["logger"] == "authz.access"]
    assert len(logged) == evaluations
    assert {record["key"] for record in logged} == {"metrics-pep"}
    # Each decision line comes right before its request's access line, with its instant:
    # under gunicorn our handler is the only one, so the two are written in one go.
    for n in asked:
        if records[n]["logger"] == "authz.decision":
            after = records[n + 1]
            assert (after["logger"], after["request_id"]) == ("authz.access", records[n]["request_id"])
            assert after["time"] == records[n]["time"]
            assert records[n]["decision"] == ("allow" if records[n]["subject_id"] == ADMIN else "deny")
    assert sum(records[n]["logger"] == "authz.decision" for n in asked) == evaluations
    assert keys["pep"] not in Path(server.log_path).read_text(errors="replace")

    server.stop()
    assert metrics_dirs(tmp) == [], "the server removes its metrics folder when it stops"


def test_metrics_need_an_admin_key_on_the_server(running):
    server, keys, _ = running
    assert Api(server.base_url).get("/metrics").status == 401
    assert Api(server.base_url, keys["pep"]).get("/metrics").status == 403
    assert "authz_decisions_total" in scrape(server, keys["admin"])


def answer_lookups(text: str) -> dict[str, float]:
    lookups = totals(text)["authz_answer_cache_lookups_total"]
    return {dict(labels)["result"]: value for labels, value in lookups.items()}


def test_a_pair_is_read_from_the_database_once_whichever_worker_meets_it(running):
    """The second worker to meet a (user, company) takes the facts the first one read
    (``authz.shared_facts``), and the server removes the file they share when it stops."""
    server, keys, tmp = running
    (folder,) = metrics_dirs(tmp)
    assert len(wait_for_worker_files(folder, 2)) == 2
    (facts_folder,) = tmp.glob("authz-facts-*")
    portal, pep = Api(server.base_url, keys["portal"]), Api(server.base_url, keys["pep"])
    assert portal.post("/v1/companies", {"siret": COMPANY, "name": "Faits SA", "admin_email": ADMIN}).status == 201
    assert pep.decide(ADMIN, "compte", COMPANY)  # one worker reads the pair's facts
    evaluations = 1
    with ThreadPoolExecutor(max_workers=8) as pool:  # until the other worker has answered too
        while not all(decided_per_worker(folder)) and evaluations < ROUND * MAX_ROUNDS:
            assert all(pool.map(lambda _: pep.decide(ADMIN, "compte", COMPANY), range(ROUND)))
            evaluations += ROUND
    assert all(decided_per_worker(folder)), f"one worker answered all {evaluations}"

    lookups = answer_lookups(scrape(server, keys["admin"]))
    assert lookups == {"miss": 1, "shared": 1, "hit": evaluations - 2}, lookups

    server.stop()
    assert not facts_folder.exists(), "the server removes the facts file its workers shared when it stops"
