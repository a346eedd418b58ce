"""Operations endpoints: health, readiness, the OpenAPI document and its page, the policy."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from service import schemas
from service.http import api_doc, services
from service.openapi import build_spec, docs_page

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@api_doc("The process is alive", response=schemas.HealthSchema)
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@api_doc("The database answers and a policy is loaded", response=schemas.ReadySchema, errors=(503,))
def readyz():
    database_ok = services().db.ping()
    version = services().policy().version
    body = {"status": "ready" if database_ok else "unavailable",
            "database": "ok" if database_ok else "unreachable", "policy_version": version}
    refused = services().policy.refused_on_disk
    if refused:
        # Serving the last accepted policy: say so, with what is wrong in the files.
        body["policy_files"] = "refused: " + "; ".join(problem.message for problem in refused[:3])
    return jsonify(body), 200 if database_ok else 503


def _spec() -> dict:
    cached = current_app.extensions.get("authz_openapi")
    if cached is None:
        cached = current_app.extensions["authz_openapi"] = build_spec(current_app)
    return cached


@bp.get("/openapi.json")
def openapi():
    return jsonify(_spec())


@bp.get("/docs")
def docs():
    return docs_page(_spec()), 200, {"Content-Type": "text/html; charset=utf-8"}
