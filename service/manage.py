"""The management REST API under /v1: companies, delegations, firms, grants, audit.

Each route parses, calls one use case, and dumps the result; whether the acting
person may do the change is the policy's answer inside the use case.
"""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, jsonify, request
from marshmallow import ValidationError

from authz.errors import NotFound
from authz.identifiers import is_email, is_siret, normalize_email
from service import schemas
from service.errors import ApiError
from service.http import api_doc, context, link_id, load, may, requires, services

bp = Blueprint("manage", __name__, url_prefix="/v1")

ERRORS = (400, 401, 403, 404, 409)


def _reply(schema: type[schemas.Schema], record, status: int = 200):
    payload = record if isinstance(record, dict) else asdict(record)
    response = jsonify(schema().dump(payload))
    response.status_code = status
    return response


def _siret(value: str) -> str:
    """Check a SIRET in the path; a malformed one cannot name anything, so 404."""
    if not is_siret(value):
        raise NotFound("no such company or firm (malformed SIRET)", code="not_found")
    return value


def _email(value: str) -> str:
    if not is_email(value):
        raise NotFound("no such person (malformed e-mail)", code="not_found")
    return normalize_email(value)


def _patch_args(body: dict) -> dict:
    return {
        "scope": body.get("scope"),
        "ends_at": body.get("ends_at"),
        "clear_ends_at": "ends_at" in body and body["ends_at"] is None,
    }


# ---- companies --------------------------------------------------------------------------


@bp.post("/companies")
@requires("manage")
@api_doc("Register a member company and its first admin", body=schemas.CompanyCreateSchema,
         response=schemas.CompanySchema, status=201, errors=(400, 401, 403, 409))
def register_company():
    body = load(schemas.CompanyCreateSchema)
    record = services().management.register_company(context(user_required=False), **body)
    return _reply(schemas.CompanySchema, record, 201)


@bp.get("/companies/<siret>")
@requires("manage")
@api_doc("Read a company and its admins", response=schemas.CompanySchema, errors=ERRORS, acting_user=True)
def get_company(siret):
    return _reply(schemas.CompanySchema, services().management.get_company(context(), _siret(siret)))


@bp.post("/companies/<siret>/admins")
@requires("manage")
@api_doc("Add an admin to a company", body=schemas.EmailBodySchema, response=schemas.CompanySchema,
         status=201, errors=ERRORS, acting_user=True)
def add_admin(siret):
    body = load(schemas.EmailBodySchema)
    record = services().management.add_admin(context(), _siret(siret), body["email"])
    return _reply(schemas.CompanySchema, record, 201)


@bp.delete("/companies/<siret>/admins/<email>")
@requires("manage")
@api_doc("Remove an admin (never the last one)", response=schemas.CompanySchema, errors=ERRORS, acting_user=True)
def remove_admin(siret, email):
    record = services().management.remove_admin(context(), _siret(siret), _email(email))
    return _reply(schemas.CompanySchema, record)


@bp.post("/companies/<siret>/delegations")
@requires("manage")
@api_doc("Designate a firm by its manager's e-mail; returns the one-time activation link",
         body=schemas.DelegationCreateSchema, response=schemas.DesignationSchema, status=201,
         errors=ERRORS, acting_user=True)
def designate(siret):
    body = load(schemas.DelegationCreateSchema)
    designation = services().management.designate(context(), _siret(siret), **body)
    payload = asdict(designation.delegation) | {"activation": asdict(designation.activation)}
    return _reply(schemas.DesignationSchema, payload, 201)


@bp.get("/companies/<siret>/delegations")
@requires("manage")
@api_doc("List a company's delegations, every status", response=schemas.DelegationListSchema,
         errors=ERRORS, acting_user=True)
def list_delegations(siret):
    found = services().management.list_delegations(context(), _siret(siret))
    return _reply(schemas.DelegationListSchema, {"delegations": [asdict(d) for d in found]})


# ---- activation and delegations -----------------------------------------------------------


@bp.post("/activations")
@requires("manage")
@api_doc("Activate a designation with its one-time token (the designated manager only)",
         body=schemas.ActivationRequestSchema, response=schemas.DelegationSchema,
         errors=(400, 401, 403, 404, 409, 410), acting_user=True)
def activate():
    body = load(schemas.ActivationRequestSchema)
    record = services().management.activate(context(), body["token"], body["firm_siret"], body["firm_name"])
    return _reply(schemas.DelegationSchema, record)


@bp.get("/delegations/<delegation_id>")
@requires("manage")
@api_doc("Read a delegation", response=schemas.DelegationSchema, errors=ERRORS, acting_user=True)
def get_delegation(delegation_id):
    return _reply(schemas.DelegationSchema, services().management.get_delegation(context(), link_id(delegation_id)))


@bp.patch("/delegations/<delegation_id>")
@requires("manage")
@api_doc("Narrow or widen a delegation, or change its end date (null removes it)",
         body=schemas.LinkPatchSchema, response=schemas.DelegationSchema, errors=ERRORS, acting_user=True)
def change_delegation(delegation_id):
    body = load(schemas.LinkPatchSchema)
    record = services().management.change_delegation(context(), link_id(delegation_id), **_patch_args(body))
    return _reply(schemas.DelegationSchema, record)


@bp.delete("/delegations/<delegation_id>")
@requires("manage")
@api_doc("Revoke a delegation (the company) or renounce it (the firm's manager)",
         response=schemas.DelegationSchema, errors=ERRORS, acting_user=True)
def revoke_delegation(delegation_id):
    return _reply(schemas.DelegationSchema, services().management.revoke_delegation(context(), link_id(delegation_id)))


# ---- firms ---------------------------------------------------------------------------------


@bp.get("/firms/<siret>/clients")
@requires("manage")
@api_doc("The firm's client companies with the rights the firm holds on each now",
         response=schemas.ClientListSchema, errors=ERRORS, acting_user=True)
def clients(siret):
    found = services().management.clients(context(), _siret(siret))
    return _reply(schemas.ClientListSchema, {"clients": [asdict(c) for c in found]})


@bp.get("/firms/<siret>/collaborators")
@requires("manage")
@api_doc("The firm's collaborators", response=schemas.CollaboratorListSchema, errors=ERRORS, acting_user=True)
def list_collaborators(siret):
    found = services().management.collaborators(context(), _siret(siret))
    return _reply(schemas.CollaboratorListSchema, {"collaborators": [asdict(c) for c in found]})


@bp.post("/firms/<siret>/collaborators")
@requires("manage")
@api_doc("Add a collaborator to the firm", body=schemas.EmailBodySchema, response=schemas.CollaboratorSchema,
         status=201, errors=ERRORS, acting_user=True)
def add_collaborator(siret):
    body = load(schemas.EmailBodySchema)
    record = services().management.add_collaborator(context(), _siret(siret), body["email"])
    return _reply(schemas.CollaboratorSchema, record, 201)


@bp.delete("/firms/<siret>/collaborators/<email>")
@requires("manage")
@api_doc("Remove a collaborator; all their grants in the firm end", response=schemas.CollaboratorRemovedSchema,
         errors=ERRORS, acting_user=True)
def remove_collaborator(siret, email):
    email = _email(email)
    ended = services().management.remove_collaborator(context(), _siret(siret), email)
    return _reply(schemas.CollaboratorRemovedSchema, {"firm": siret, "email": email, "grants_revoked": ended})


@bp.post("/firms/<siret>/grants")
@requires("manage")
@api_doc("Sub-delegate rights on a client company to a collaborator (never beyond the firm's)",
         body=schemas.GrantCreateSchema, response=schemas.GrantSchema, status=201, errors=ERRORS,
         acting_user=True)
def grant(siret):
    body = load(schemas.GrantCreateSchema)
    record = services().management.grant(context(), _siret(siret), **body)
    return _reply(schemas.GrantSchema, record, 201)


@bp.get("/grants/<grant_id>")
@requires("manage")
@api_doc("Read a grant", response=schemas.GrantSchema, errors=ERRORS, acting_user=True)
def get_grant(grant_id):
    return _reply(schemas.GrantSchema, services().management.get_grant(context(), link_id(grant_id)))


@bp.patch("/grants/<grant_id>")
@requires("manage")
@api_doc("Change a grant's scope or end date (null removes it)", body=schemas.LinkPatchSchema,
         response=schemas.GrantSchema, errors=ERRORS, acting_user=True)
def change_grant(grant_id):
    body = load(schemas.LinkPatchSchema)
    record = services().management.change_grant(context(), link_id(grant_id), **_patch_args(body))
    return _reply(schemas.GrantSchema, record)


@bp.delete("/grants/<grant_id>")
@requires("manage")
@api_doc("Revoke a grant", response=schemas.GrantSchema, errors=ERRORS, acting_user=True)
def revoke_grant(grant_id):
    return _reply(schemas.GrantSchema, services().management.revoke_grant(context(), link_id(grant_id)))


# ---- audit -----------------------------------------------------------------------------------


@bp.get("/audit")
@requires("manage")
@api_doc("The append-only change log (admin key: all; a company admin: their company)",
         query=schemas.AuditQuerySchema, response=schemas.AuditPageSchema, errors=(400, 401, 403))
def audit():
    try:
        query = schemas.AuditQuerySchema().load(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(400, "invalid_query", "the query string does not match the expected parameters",
                       exc.messages if isinstance(exc.messages, dict) else {"_query": exc.messages}) from exc
    read_all = may("audit_all")
    records = services().management.audit_log(
        context(user_required=not read_all),
        may_read_all=read_all,
        company=query.get("company"),
        user=query.get("user"),
        since=query.get("since"),
        after_id=query.get("after"),
        limit=query["limit"],
    )
    next_after = records[-1].id if len(records) == query["limit"] else None
    return _reply(schemas.AuditPageSchema, {"records": [asdict(r) for r in records], "next_after": next_after})


