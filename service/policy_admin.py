"""Policy administration (admin key): read, validate a draft, reload, measure impact."""

from __future__ import annotations

import re
from dataclasses import asdict

from flask import Blueprint, jsonify, request, url_for

from authz import impact
from authz.engine import PolicyRejected
from authz.impact import Impact
from authz.impact_jobs import ImpactJob
from authz.policy import check_draft
from service import schemas
from service.http import api_doc, context, link_id, load, requires, services

bp = Blueprint("policy_admin", __name__, url_prefix="/v1")

# How long POST /v1/policy/impact waits for a report before answering 202: under
# gunicorn's 30 s worker timeout (service/server.py).
WAIT_SECONDS = 20
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])", re.IGNORECASE)
_PREFER_ASYNC = re.compile(r"(?:^|[,;\s])respond-async(?:$|[,;\s=])", re.IGNORECASE)

# The lists of a report stop here; the counts are always complete.
MAX_LISTED = impact.LISTED_AT_MOST


@bp.get("/policy")
@requires("policy")
@api_doc("The loaded policy: version, files, load time, rights", response=schemas.PolicySchema, errors=(401, 403))
def policy():
    info = services().policy().info
    return jsonify(schemas.PolicySchema().dump({
        "version": info.version, "files": list(info.files), "loaded_at": info.loaded_at,
        "rights": list(info.rights), "delegable": sorted(info.delegable),
    }))


@bp.post("/policy/validate")
@requires("policy")
@api_doc("Compile a draft without applying it; errors with file, line and column",
         body=schemas.PolicyDraftSchema, response=schemas.ValidationReportSchema, errors=(400, 401, 403))
def validate():
    body = load(schemas.PolicyDraftSchema)
    problems = check_draft(body["files"])
    return jsonify(schemas.ValidationReportSchema().dump(
        {"valid": not problems, "errors": [asdict(p) for p in problems]}
    ))


@bp.post("/policy/reload")
@requires("policy")
@api_doc("Re-read the policy files; swap only if they compile and pass policies/tests (else 422)",
         response=schemas.ReloadSchema, errors=(401, 403, 422))
def reload():
    outcome = services().policy_admin.reload(context(user_required=False))
    if not outcome.accepted:
        raise PolicyRejected(list(outcome.problems))
    return jsonify({"accepted": True, "old_version": outcome.old_version, "version": outcome.new_version})


@bp.post("/policy/impact")
@requires("policy")
@api_doc("Compare effective rights under the running policy and a draft, over the current data. "
         f"Answers the report if it is ready within {WAIT_SECONDS} s, else 202 and the report's address",
         body=schemas.PolicyDraftSchema, response=schemas.ImpactReportSchema, errors=(400, 401, 403, 422, 429),
         headers={"Prefer": "respond-async: answer 202 at once; wait=N: wait at most N seconds (RFC 7240)"},
         also={202: ("Still being computed: poll the Location", schemas.ImpactReportSchema)})
def draft_impact():
    body = load(schemas.PolicyDraftSchema)
    asked = context(user_required=False)
    admin = services().policy_admin
    job = admin.start_impact_of_draft(body["files"], asked.user or asked.key, MAX_LISTED)
    waited = _wait_preferred(request.headers.get("Prefer", ""))
    if waited:
        job = admin.jobs.wait(job.id, waited)
    return _report(job)


@bp.get("/policy/impact/<report_id>")
@requires("policy")
@api_doc("An impact report of a draft: running, done (with the report) or failed (with the error)",
         response=schemas.ImpactReportSchema, errors=(401, 403, 404))
def impact_report(report_id):
    return _report(services().policy_admin.jobs.get(report_id))


@bp.post("/delegations/<delegation_id>/impact")
@requires("policy")
@api_doc("What narrowing (scope) or revoking (scope: null) a delegation would take away, and from whom",
         body=schemas.DelegationImpactRequestSchema, response=schemas.ImpactSchema, errors=(400, 401, 403, 404))
def delegation_impact(delegation_id):
    body = load(schemas.DelegationImpactRequestSchema)
    return _impact(services().policy_admin.impact_of_delegation_change(link_id(delegation_id), body["scope"]))


def _wait_preferred(prefer: str) -> float:
    """Seconds to wait for a report, from the Prefer header (RFC 7240), at most WAIT_SECONDS."""
    if _PREFER_ASYNC.search(prefer):
        return 0
    found = _PREFER_WAIT.search(prefer)
    return min(int(found.group(1)), WAIT_SECONDS) if found else WAIT_SECONDS


def _report(job: ImpactJob):
    href = url_for("policy_admin.impact_report", report_id=job.id)
    document = {**(job.report or {}), "id": job.id, "status": job.status, "href": href,
                "requested_by": job.requested_by, "as_of": job.as_of, "started_at": job.started_at,
                "finished_at": job.finished_at, "policy_version": job.policy_version,
                "draft_version": job.draft_version, "error": job.error}
    response = jsonify(schemas.ImpactReportSchema().dump(document))
    if job.status == "running":
        response.status_code = 202
        response.headers["Location"] = href
        response.headers["Retry-After"] = "2"
    return response


def _impact(found: Impact):
    return jsonify(schemas.ImpactSchema().dump(impact.document(found, MAX_LISTED)))
