"""OpenID AuthZEN Authorization API 1.0: evaluation, evaluations, searches, metadata."""

from __future__ import annotations

import base64
import binascii
import bisect
from functools import lru_cache
from typing import TYPE_CHECKING

from flask import Blueprint, current_app, g, jsonify, request
from marshmallow import ValidationError

from authz.decisions import Decisions
from authz.identifiers import normalize_email
from service import schemas
from service.errors import ApiError
from service.http import api_doc, json_body, load, requires, seen_version, services

if TYPE_CHECKING:
    from service.app import Services

bp = Blueprint("authzen", __name__)

SUBJECT_TYPE = "user"
RESOURCE_TYPE = "company"
STOP_ON = {"execute_all": None, "deny_on_first_deny": False, "permit_on_first_permit": True}
# One instance for every item of a batch: building a schema costs more than loading with it.
EVALUATION = schemas.EvaluationRequestSchema()
_PARTS = {"subject": schemas.SubjectSchema(), "action": schemas.ActionSchema(), "resource": schemas.ResourceSchema()}
_FLAT_AT_MOST = 3  # a flat entity has at most its three string fields (type, id; or name)


# Entities remembered by ``_loaded_part``. The benchmark's stream names 7,415 users and
# 11,233 companies: with 4,096 entries, one entity in five was loaded again on the stream's
# second pass. An entry takes about 540 bytes besides its key's strings (tracemalloc): 18 MB
# or more per worker when full.
LOADED_PARTS = 32_768


@lru_cache(maxsize=LOADED_PARTS)
def _loaded_part(part: str, flat: tuple[tuple[str, str], ...]) -> dict:
    """The schema's load of a flat entity, remembered: portals send the same users,
    rights and companies again and again, and loading is most of a batch's cost.
    A refusal raises, so it is never remembered. Callers must not change the result."""
    return _PARTS[part].load(dict(flat))


def _flat(entity: object) -> tuple[tuple[str, str], ...] | None:
    """The entity as a tuple of its (name, value) pairs if it is a small dict of strings."""
    if type(entity) is not dict or len(entity) > _FLAT_AT_MOST:
        return None
    flat = tuple(entity.items())
    for name, value in flat:
        if type(name) is not str or type(value) is not str:
            return None
    return flat


def _load_item(merged: dict) -> dict:
    """``EVALUATION.load(merged)``; entities that are flat dicts of strings load from memory."""
    if len(merged) == len(_PARTS):
        subject, action, resource = (_flat(merged.get("subject")), _flat(merged.get("action")),
                                     _flat(merged.get("resource")))
        if subject is not None and action is not None and resource is not None:
            try:
                return {"subject": _loaded_part("subject", subject), "action": _loaded_part("action", action),
                        "resource": _loaded_part("resource", resource)}
            except ValidationError:
                pass  # the schema itself says why, with the item's own paths
    return EVALUATION.load(merged)


def _question(subject: dict, action: dict, resource: dict) -> tuple[str, str, str] | str:
    """Turn AuthZEN entities into (email, right, siret), or a deny reason for foreign types."""
    if subject["type"] != SUBJECT_TYPE:
        return "unsupported_subject_type"
    if resource["type"] != RESOURCE_TYPE:
        return "unsupported_resource_type"
    return normalize_email(subject["id"]), action["name"], resource["id"]


def _pinned(found: Services | None = None) -> Decisions:
    """This request's decisions, every one answered by the policy in service now: the
    ``X-Authz-Policy-Version`` header names the policy that answered, whatever reload
    comes in between. ``found``: the app's services (``services()`` by default)."""
    found = found or services()
    return found.decisions.under(found.policy())


def evaluate(found: Services, body: dict, seen: object) -> tuple[dict, Decisions]:
    """The answer to one evaluation body, and the decisions (``_pinned``) that gave it;
    raises ``ValidationError`` for a body the schema refuses. Needs no request context
    (``service.fastpath`` calls it too)."""
    item = _load_item(body)
    pinned = _pinned(found)
    question = _question(item["subject"], item["action"], item["resource"])
    return _answers(pinned, [question], seen)[0], pinned


def _answers(pinned: Decisions, questions: list, seen: object, stop_on: bool | None = None) -> list[dict]:
    """Answer in order (foreign types are denied without asking), all in one batch;
    ``seen``: the data version the request read (``seen_version``)."""
    asked = [question for question in questions if not isinstance(question, str)]
    decisions = iter(pinned.decide_many(asked, seen=seen) if asked else [])
    answers = []
    for question in questions:
        if isinstance(question, str):
            answer = {"decision": False, "context": {"reason": question}}
        else:
            decision = next(decisions)
            answer = {"decision": decision.allowed, "context": {"reason": decision.reason}}
        answers.append(answer)
        if stop_on is not None and answer["decision"] is stop_on:
            break
    return answers


def _versioned(payload: dict, pinned: Decisions):
    """The response, with the version of the policy that answered (``_pinned``)."""
    g.answered = payload  # what service/observability.py counts and logs
    response = jsonify(payload)
    response.headers["X-Authz-Policy-Version"] = pinned.policy().version
    return response


@bp.post("/access/v1/evaluation")
@requires("decide")
@api_doc("Decide one access question", body=schemas.EvaluationRequestSchema,
         response=schemas.DecisionSchema, errors=(400, 401, 403))
def evaluation():
    return _versioned(*evaluate(services(), json_body(), seen_version()))


@bp.post("/access/v1/evaluations")
@requires("decide")
@api_doc("Decide many questions; top-level subject/action/resource/context are defaults",
         body=schemas.EvaluationsRequestSchema, response=schemas.EvaluationsResponseSchema, errors=(400, 401, 403))
def evaluations():
    body = load(schemas.EvaluationsRequestSchema)
    pinned = _pinned()
    items = body.get("evaluations") or []
    if not items:
        # The standard: without items, the call is a single evaluation of the defaults.
        defaults = {key: body[key] for key in ("subject", "action", "resource", "context") if key in body}
        single = EVALUATION.load(defaults)
        question = _question(single["subject"], single["action"], single["resource"])
        return _versioned(_answers(pinned, [question], seen_version())[0], pinned)
    limit = current_app.config["AUTHZ_MAX_EVALUATIONS"]
    if len(items) > limit:
        raise ApiError(400, "too_many_evaluations", f"at most {limit} evaluations per call",
                       {"evaluations": [f"{len(items)} given, at most {limit}"]})
    questions = []
    errors = {}
    for index, item in enumerate(items):
        merged = {key: item.get(key, body.get(key)) for key in ("subject", "action", "resource")}
        try:
            entity = _load_item({k: v for k, v in merged.items() if v is not None})
        except ValidationError as exc:
            errors[str(index)] = exc.messages
            continue
        questions.append(_question(entity["subject"], entity["action"], entity["resource"]))
    if errors:
        raise ApiError(400, "invalid_request", "some evaluations are incomplete or malformed", {"evaluations": errors})
    stop_on = STOP_ON[body["options"]["evaluations_semantic"]]
    return _versioned({"evaluations": _answers(pinned, questions, seen_version(), stop_on)}, pinned)


# ---- searches --------------------------------------------------------------------------


def _page(found: list[str], page: dict | None) -> tuple[list[str], dict]:
    """Cut a sorted result list after the token's key, ``limit`` items at a time."""
    page = page or {}
    limit = page.get("limit", current_app.config["AUTHZ_DEFAULT_PAGE_SIZE"])
    if limit > current_app.config["AUTHZ_MAX_PAGE_SIZE"]:
        maximum = current_app.config["AUTHZ_MAX_PAGE_SIZE"]
        raise ApiError(400, "page_limit_too_large", f"page.limit is at most {maximum}",
                       {"page": {"limit": [f"at most {maximum}"]}})
    start = 0
    if page.get("token"):
        start = bisect.bisect_right(found, _decode_token(page["token"]))
    chunk = found[start : start + limit]
    more = start + limit < len(found)
    next_token = _encode_token(chunk[-1]) if more and chunk else ""
    return chunk, {"next_token": next_token, "count": len(chunk), "total": len(found)}


def _encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(f"after:{key}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith("after:"):
        raise ApiError(400, "invalid_page_token", "page.token is not a token this service issued",
                       {"page": {"token": ["unknown token"]}})
    return raw[len("after:"):]


def _search(pinned: Decisions, found: list[str], page: dict | None, as_result) -> object:
    chunk, page_out = _page(found, page)
    return _versioned({"results": [as_result(item) for item in chunk], "page": page_out}, pinned)


@bp.post("/access/v1/search/subject")
@requires("decide")
@api_doc("The users who may do an action for a company", body=schemas.SubjectSearchRequestSchema,
         response=schemas.SubjectSearchResponseSchema, errors=(400, 401, 403))
def search_subject():
    body = load(schemas.SubjectSearchRequestSchema)
    pinned = _pinned()
    found = []
    if body["subject"]["type"] == SUBJECT_TYPE and body["resource"]["type"] == RESOURCE_TYPE:
        found = pinned.subjects(body["resource"]["id"], body["action"]["name"], seen=seen_version())
    return _search(pinned, found, body.get("page"), lambda email: {"type": SUBJECT_TYPE, "id": email})


@bp.post("/access/v1/search/resource")
@requires("decide")
@api_doc("The companies a user may do an action for (a firm's client list)",
         body=schemas.ResourceSearchRequestSchema, response=schemas.ResourceSearchResponseSchema,
         errors=(400, 401, 403))
def search_resource():
    body = load(schemas.ResourceSearchRequestSchema)
    pinned = _pinned()
    found = []
    if body["subject"]["type"] == SUBJECT_TYPE and body["resource"]["type"] == RESOURCE_TYPE:
        found = pinned.resources(normalize_email(body["subject"]["id"]), body["action"]["name"], seen=seen_version())
    return _search(pinned, found, body.get("page"), lambda siret: {"type": RESOURCE_TYPE, "id": siret})


@bp.post("/access/v1/search/action")
@requires("decide")
@api_doc("The rights a user holds on a company", body=schemas.ActionSearchRequestSchema,
         response=schemas.ActionSearchResponseSchema, errors=(400, 401, 403))
def search_action():
    body = load(schemas.ActionSearchRequestSchema)
    pinned = _pinned()
    found = []
    if body["subject"]["type"] == SUBJECT_TYPE and body["resource"]["type"] == RESOURCE_TYPE:
        found = pinned.actions(normalize_email(body["subject"]["id"]), body["resource"]["id"], seen=seen_version())
    return _search(pinned, sorted(found), body.get("page"), lambda right: {"name": right})


@bp.get("/.well-known/authzen-configuration")
@api_doc("The PDP metadata document (AuthZEN discovery)", response=schemas.MetadataSchema)
def metadata():
    base = (current_app.config.get("AUTHZ_PUBLIC_URL") or request.host_url).rstrip("/")
    return jsonify({
        "policy_decision_point": base,
        "access_evaluation_endpoint": f"{base}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{base}/access/v1/evaluations",
        "search_subject_endpoint": f"{base}/access/v1/search/subject",
        "search_resource_endpoint": f"{base}/access/v1/search/resource",
        "search_action_endpoint": f"{base}/access/v1/search/action",
    })


@bp.post("/v1/explain")
@requires("explain")
@api_doc("Explain a decision: the chain of links that allowed, or the first broken one",
         body=schemas.EvaluationRequestSchema, response=schemas.ExplanationSchema, errors=(400, 401, 403))
def explain():
    body = load(schemas.EvaluationRequestSchema)
    question = _question(body["subject"], body["action"], body["resource"])
    pinned = _pinned()
    if isinstance(question, str):
        payload = {"decision": False, "reason": question, "rule": None, "chain": [], "broken": None}
    else:
        found = pinned.explain(*question)
        payload = {
            "decision": found.decision.allowed,
            "reason": found.decision.reason,
            "rule": found.rule,
            "chain": [_link(link) for link in found.chain],
            "broken": _link(found.broken) if found.broken else None,
        }
    payload["policy_version"] = pinned.policy().version
    return _versioned(schemas.ExplanationSchema().dump(payload), pinned)


def _link(link) -> dict:
    return {
        "kind": link.kind, "id": link.id, "holds": link.holds, "status": link.status,
        "scope": list(link.scope) if link.scope is not None else None, "ends_at": link.ends_at,
        "detail": link.detail,
    }


