"""Policy administration (admin key): read, validate a draft, reload, measure impact."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, jsonify

from authz.engine import PolicyRejected
from authz.policy import check_draft
from service import schemas
from service.http import api_doc, context, link_id, load, requires, services

bp = Blueprint("policy_admin", __name__, url_prefix="/v1")


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
@api_doc("Compare effective rights under the running policy and a draft, over the current data",
         body=schemas.PolicyDraftSchema, response=schemas.ImpactSchema, errors=(400, 401, 403, 422))
def impact():
    body = load(schemas.PolicyDraftSchema)
    return _impact(services().policy_admin.impact_of_draft(body["files"]))


@bp.post("/delegations/<delegation_id>/impact")
@requires("policy")
@api_doc("What narrowing (scope) or revoking (scope: null) a delegation would take away, and from whom",
         body=schemas.DelegationImpactRequestSchema, response=schemas.ImpactSchema, errors=(400, 401, 403, 404))
def delegation_impact(delegation_id):
    body = load(schemas.DelegationImpactRequestSchema)
    return _impact(services().policy_admin.impact_of_delegation_change(link_id(delegation_id), body["scope"]))


# A report over a national store can list hundreds of thousands of changes: the lists
# stop here (in order: company, then person, then right); the counts are always complete.
MAX_LISTED = 10_000


def _impact(found):
    return jsonify(schemas.ImpactSchema().dump({
        "counts": {"gained": len(found.gained), "lost": len(found.lost), "pairs_checked": found.pairs_checked},
        "gained": [asdict(c) for c in found.gained[:MAX_LISTED]],
        "lost": [asdict(c) for c in found.lost[:MAX_LISTED]],
    }))
