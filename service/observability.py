"""Observability: Prometheus metrics at ``/metrics`` and JSON log lines.

Everything is recorded by ``record``, from two request hooks that read the finished
request, its response, and what the request left in ``g`` (its parsed body, the payload
answered), so the views carry no metric or logging code; ``service.fastpath`` calls
``record`` with the same facts for the evaluations it answers:

* one log line per request (request id, caller key name, endpoint, method, status,
  latency) on the ``authz.access`` logger, and one per decision (subject id, action,
  resource id, decision, reason) on ``authz.decision`` at ``AUTHZ_DECISION_LOG_LEVEL``
  (the decisions of one request are one record, written one line each: see
  ``service.logs.LINES``), all through ``service.logs.log_all``;
* the metrics: decisions (each item of a batch), request latency by endpoint name and
  status, search result sizes, the answer cache's hits and misses, database errors (503
  ``store_unavailable``), and the policy version in service, read at scrape time so that
  it follows reloads.

Under gunicorn, ``service/server.py`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
folder before the workers fork; each worker then writes its samples there and a scrape,
whichever worker answers it, adds up every worker's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import InfoMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from authz.answers import AnswerCache
from authz.engine import LoadedPolicy
from authz.errors import StoreUnavailable
from service.http import api_doc, requires
from service.logs import LINES, Entry, configure_logging, log_all

bp = Blueprint("observability", __name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXTENSION = "authz_metrics"
UNMATCHED = "unmatched"  # the endpoint label of requests no route matched (never the raw path)
DECISION_ENDPOINTS = ("authzen.evaluation", "authzen.evaluations")
SEARCH_KINDS = {
    "authzen.search_subject": "subject",
    "authzen.search_resource": "resource",
    "authzen.search_action": "action",
}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)

access_log = logging.getLogger("authz.access")
decision_log = logging.getLogger("authz.decision")
log = logging.getLogger("authz.observability")

M = TypeVar("M", bound=MetricWrapperBase)


# ---- metrics ------------------------------------------------------------------------------


class PolicyInfo(Collector):
    """``authz_policy_info{version="..."} 1``: the version in service when scraped."""

    def __init__(self, policy: LoadedPolicy):
        self._policy = policy

    def collect(self) -> Iterator[InfoMetricFamily]:
        yield InfoMetricFamily("authz_policy", "The policy in service in the answering process",
                               value={"version": self._policy().version})


class Metrics:
    """One app's metrics; ``exposition`` renders them (every worker's, in multiprocess mode)."""

    def __init__(self, policy: LoadedPolicy, answers: AnswerCache, multiprocess: bool):
        self.multiprocess = multiprocess
        self.answers = answers
        self.policy_info = PolicyInfo(policy)
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "authz_decisions", "Access decisions, one per evaluation item", ["endpoint", "result"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "authz_request_duration_seconds", "Time to answer a request, by Flask endpoint and status",
            ["endpoint", "status"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.search_results = Histogram(
            "authz_search_results", "Results found by a search (all pages), by kind", ["kind"],
            buckets=SIZE_BUCKETS, registry=self.registry,
        )
        self.answer_lookups = Counter(
            "authz_answer_cache_lookups", "Lookups of a (user, company) in a worker's answer cache, by result: one "
            "per question of a decision, one per candidate of a search; hit (the worker's cache), shared (facts "
            "another worker read), miss (read from the database)", ["result"], registry=self.registry,
        )
        self.database_errors = Counter(
            "authz_database_errors", "Requests refused with 503 because the database was unavailable",
            registry=self.registry,
        )
        self.registry.register(self.policy_info)
        # Series that exist from the start, so rates and alerts work before the first event.
        for endpoint in DECISION_ENDPOINTS:
            for result in ("allow", "deny"):
                self.decisions.labels(endpoint, result)
        for kind in SEARCH_KINDS.values():
            self.search_results.labels(kind)
        self._hits, self._misses = self.answer_lookups.labels("hit"), self.answer_lookups.labels("miss")
        self._shared = self.answer_lookups.labels("shared")
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}

    def child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, remembered: ``labels`` checks its arguments and takes
        a lock at every call. The label values are endpoint names, statuses and outcomes,
        a few dozen combinations."""
        found = self._children.get((metric, labels))
        if found is None:
            found = self._children[(metric, labels)] = metric.labels(*labels)
        return found

    def count_answer_lookups(self) -> None:
        """Add the lookups the cache counted since the last call: a plain count in the cache
        costs less than a metric's increment at every lookup."""
        hits, misses, shared = self.answers.take_counts()
        if hits:
            self._hits.inc(hits)
        if misses:
            self._misses.inc(misses)
        if shared:
            self._shared.inc(shared)

    def exposition(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(self.policy_info)
        return generate_latest(registry)


@bp.get("/metrics")
@requires("metrics")
@api_doc("Prometheus metrics (text exposition format), added up over every server worker", errors=(401, 403))
def metrics():
    return Response(current_app.extensions[EXTENSION].exposition(), content_type=CONTENT_TYPE_LATEST)


# ---- the request hooks --------------------------------------------------------------------


def _started() -> None:
    g.observability_started = time.perf_counter()


def _finished(response: Response) -> Response:
    started = g.pop("observability_started", None)
    elapsed = time.perf_counter() - started if started is not None else 0.0
    try:
        # The request and its ``g`` once, rather than through their proxies at every use.
        asked, state = request._get_current_object(), g._get_current_object()  # type: ignore[attr-defined]
        status = response.status_code
        key = state.get("api_key")
        record(current_app, asked.endpoint or UNMATCHED, asked.method, status, elapsed,
               key.name if key is not None else None, state.get("request_id"),
               state.get("answered"), state.get("json_body"),
               store_unavailable=status == 503 and _error_code(response) == StoreUnavailable.code)
    except Exception:
        log.exception("could not record the request's metrics or log")
    return response


def record(app: Flask, endpoint: str, method: str, status: int, elapsed: float, key: str | None,
           request_id: str | None, answered: dict | None, body: object, store_unavailable: bool = False) -> None:
    """Count a finished request in the metrics and write its log lines. ``answered``: the
    payload a view answered with (service/authzen.py keeps it), not the response body
    parsed again; ``body``: the request's parsed JSON body, whose questions the decision
    lines name. Needs no request context (``service.fastpath`` calls it too)."""
    metrics: Metrics = app.extensions[EXTENSION]
    metrics.child(metrics.latency, endpoint, str(status)).observe(elapsed)
    metrics.count_answer_lookups()
    if store_unavailable:
        metrics.database_errors.inc()
    caller = {"request_id": request_id, "key": key, "endpoint": endpoint}
    answered = answered or {}
    entries: list[Entry] = []
    if status == 200 and endpoint in DECISION_ENDPOINTS:
        entries += _decisions(metrics, caller, answered, body, app.config["AUTHZ_DECISION_LOG_LEVEL"])
    elif status == 200 and endpoint in SEARCH_KINDS:
        page = answered.get("page") or {}
        if isinstance(page.get("total"), int):
            metrics.search_results.labels(SEARCH_KINDS[endpoint]).observe(page["total"])
    entries.append((access_log, logging.INFO, f"{method} {endpoint} {status}", caller | {
        "method": method, "status": status, "latency_ms": round(elapsed * 1000, 3)}))
    log_all(entries)


def _error_code(response: Response) -> str | None:
    body = response.get_json(silent=True)
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def _decisions(metrics: Metrics, caller: dict, payload: dict, body, level: int) -> list[Entry]:
    """Count every decision of an evaluation answer (one, or one per item); return the
    record that logs them, if their level is enabled."""
    endpoint = caller["endpoint"]
    answers = payload.get("evaluations", [payload])
    allowed = sum(answer.get("decision") is True for answer in answers)
    for outcome, count in (("allow", allowed), ("deny", len(answers) - allowed)):
        if count:
            metrics.child(metrics.decisions, endpoint, outcome).inc(count)
    if not decision_log.isEnabledFor(level):
        return []
    # Answers follow the questions in order; a batch may stop early (evaluations_semantic).
    lines = [{
        "subject_id": _entity(question, "subject", "id"),
        "action": _entity(question, "action", "name"),
        "resource_id": _entity(question, "resource", "id"),
        "decision": "allow" if answer.get("decision") is True else "deny",
        "reason": (answer.get("context") or {}).get("reason"),
    } for question, answer in zip(_questions(body), answers, strict=False)]
    return [(decision_log, level, "decision", caller | {LINES: lines})] if lines else []


def _questions(body) -> list[dict]:
    """The questions of an evaluation(s) body: items take the top-level values as defaults."""
    if not isinstance(body, dict):
        return []
    items = body.get("evaluations") or [body]
    return [
        {name: item.get(name, body.get(name)) for name in ("subject", "action", "resource")}
        for item in items if isinstance(item, dict)
    ]


def _entity(question: dict, name: str, field: str):
    entity = question.get(name)
    return entity.get(field) if isinstance(entity, dict) else None


# ---- installation -------------------------------------------------------------------------


def install(app: Flask) -> None:
    """Configure logging for this process, and add the metrics, the hooks and ``/metrics``."""
    configure_logging(app.config["AUTHZ_LOG_LEVEL"])
    multiprocess = MULTIPROC_ENV in os.environ  # as prometheus_client decides
    services = app.extensions["authz"]
    app.extensions[EXTENSION] = Metrics(services.policy, services.decisions.cache, multiprocess)
    app.before_request(_started)
    app.after_request(_finished)
    app.register_blueprint(bp)
