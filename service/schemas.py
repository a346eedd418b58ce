"""Marshmallow schemas for every request and response body.

AuthZEN request schemas ignore unknown fields (the standard says so); management
request schemas reject them. Server-set fields are ``dump_only``.
"""

from __future__ import annotations

from datetime import UTC

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from authz.identifiers import is_email, is_siret, normalize_email

MAX_SCOPE = 64


class Siret(fields.String):
    """A SIRET: 14 digits with a valid Luhn checksum."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if not is_siret(value):
            raise ValidationError("not a valid SIRET (14 digits with a valid Luhn checksum)")
        return value


class Email(fields.String):
    """An e-mail address, stored and compared lower-cased."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if not is_email(value):
            raise ValidationError("not a valid e-mail address")
        return normalize_email(value)


class Instant(fields.AwareDateTime):
    """An RFC 3339 time with its offset, that must be a real instant (years 1 to 9999 in UTC)."""

    def _deserialize(self, value, attr, data, **kwargs):
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except (OverflowError, ValueError) as exc:
            raise ValidationError("out of the range of representable times") from exc


def _scope(required: bool = True) -> fields.List:
    return fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        required=required,
        validate=validate.Length(min=1, max=MAX_SCOPE),
    )


class Strict(Schema):
    class Meta:
        unknown = RAISE


class Lenient(Schema):
    class Meta:
        unknown = EXCLUDE


# ---- errors -----------------------------------------------------------------------------


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


# ---- AuthZEN ----------------------------------------------------------------------------

class SubjectSchema(Lenient):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    id = fields.String(required=True, validate=validate.Length(min=1, max=512))
    properties = fields.Dict()


class ResourceSchema(Lenient):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    id = fields.String(required=True, validate=validate.Length(min=1, max=512))
    properties = fields.Dict()


class ActionSchema(Lenient):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    properties = fields.Dict()


class TypeOnlySchema(Lenient):
    """A subject or resource in a search: the type is needed, the id is what is sought."""

    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    id = fields.String(validate=validate.Length(max=512))
    properties = fields.Dict()


class EvaluationRequestSchema(Lenient):
    subject = fields.Nested(SubjectSchema, required=True)
    action = fields.Nested(ActionSchema, required=True)
    resource = fields.Nested(ResourceSchema, required=True)
    context = fields.Dict()


class DecisionSchema(Schema):
    decision = fields.Boolean(required=True)
    context = fields.Dict()


class EvaluationItemSchema(Lenient):
    """One item of a batch: any part may be left out and taken from the defaults."""

    subject = fields.Dict()
    action = fields.Dict()
    resource = fields.Dict()
    context = fields.Dict()


class EvaluationItems(fields.List):
    """``List(Nested(EvaluationItemSchema))``, without a schema load per item when every
    item is made of dicts only, as portals send them (the load would return each as it
    is, less unknown fields); any other list gets the full load and its exact messages."""

    PARTS = tuple(EvaluationItemSchema().fields)

    def __init__(self, **kwargs):
        super().__init__(fields.Nested(EvaluationItemSchema), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is list and all(
            type(item) is dict and all(type(item[part]) is dict for part in self.PARTS if part in item)
            for item in value
        ):
            return [{part: dict(item[part]) for part in self.PARTS if part in item} for item in value]
        return super()._deserialize(value, attr, data, **kwargs)


class EvaluationsOptionsSchema(Lenient):
    evaluations_semantic = fields.String(
        load_default="execute_all",
        validate=validate.OneOf(["execute_all", "deny_on_first_deny", "permit_on_first_permit"]),
    )


class EvaluationsRequestSchema(Lenient):
    subject = fields.Dict()
    action = fields.Dict()
    resource = fields.Dict()
    context = fields.Dict()
    evaluations = EvaluationItems()
    options = fields.Nested(EvaluationsOptionsSchema, load_default=lambda: {"evaluations_semantic": "execute_all"})


class EvaluationsResponseSchema(Schema):
    """The answers in request order; without items in the request, a single decision instead."""

    evaluations = fields.List(fields.Nested(DecisionSchema))
    decision = fields.Boolean()
    context = fields.Dict()


class PageRequestSchema(Lenient):
    token = fields.String(validate=validate.Length(max=512))
    limit = fields.Integer(strict=True, validate=validate.Range(min=1))


class PageResponseSchema(Schema):
    next_token = fields.String(required=True)
    count = fields.Integer(required=True)
    total = fields.Integer(required=True)


class SubjectSearchRequestSchema(Lenient):
    subject = fields.Nested(TypeOnlySchema, required=True)
    action = fields.Nested(ActionSchema, required=True)
    resource = fields.Nested(ResourceSchema, required=True)
    context = fields.Dict()
    page = fields.Nested(PageRequestSchema)


class ResourceSearchRequestSchema(Lenient):
    subject = fields.Nested(SubjectSchema, required=True)
    action = fields.Nested(ActionSchema, required=True)
    resource = fields.Nested(TypeOnlySchema, required=True)
    context = fields.Dict()
    page = fields.Nested(PageRequestSchema)


class ActionSearchRequestSchema(Lenient):
    subject = fields.Nested(SubjectSchema, required=True)
    resource = fields.Nested(ResourceSchema, required=True)
    context = fields.Dict()
    page = fields.Nested(PageRequestSchema)


class EntityResultSchema(Schema):
    type = fields.String(required=True)
    id = fields.String(required=True)


class ActionResultSchema(Schema):
    name = fields.String(required=True)


class SubjectSearchResponseSchema(Schema):
    results = fields.List(fields.Nested(EntityResultSchema), required=True)
    page = fields.Nested(PageResponseSchema, required=True)


ResourceSearchResponseSchema = SubjectSearchResponseSchema


class ActionSearchResponseSchema(Schema):
    results = fields.List(fields.Nested(ActionResultSchema), required=True)
    page = fields.Nested(PageResponseSchema, required=True)


class MetadataSchema(Schema):
    policy_decision_point = fields.String(required=True)
    access_evaluation_endpoint = fields.String(required=True)
    access_evaluations_endpoint = fields.String(required=True)
    search_subject_endpoint = fields.String(required=True)
    search_resource_endpoint = fields.String(required=True)
    search_action_endpoint = fields.String(required=True)


class LinkSchema(Schema):
    kind = fields.String(required=True)
    id = fields.String(allow_none=True)
    holds = fields.Boolean(required=True)
    status = fields.String(allow_none=True)
    scope = fields.List(fields.String(), allow_none=True)
    ends_at = fields.AwareDateTime(allow_none=True)
    detail = fields.String(allow_none=True)


class ExplanationSchema(Schema):
    decision = fields.Boolean(required=True)
    reason = fields.String(required=True)
    rule = fields.String(allow_none=True)
    policy_version = fields.String(required=True)
    chain = fields.List(fields.Nested(LinkSchema), required=True)
    broken = fields.Nested(LinkSchema, allow_none=True)


# ---- management: requests -------------------------------------------------------------


class CompanyCreateSchema(Strict):
    siret = Siret(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    admin_email = Email(required=True)


class EmailBodySchema(Strict):
    email = Email(required=True)


class DelegationCreateSchema(Strict):
    manager_email = Email(required=True)
    scope = _scope()
    ends_at = Instant(allow_none=True, load_default=None)


class ActivationRequestSchema(Strict):
    token = fields.String(required=True, validate=validate.Length(min=1, max=512))
    firm_siret = Siret(required=True)
    firm_name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class LinkPatchSchema(Strict):
    """A change to a delegation or grant; ``ends_at: null`` removes the end date."""

    scope = _scope(required=False)
    ends_at = Instant(allow_none=True)

    @validates_schema
    def _something(self, data, **kwargs):
        if not data:
            raise ValidationError("give scope, ends_at or both", "_schema")


class GrantCreateSchema(Strict):
    collaborator = Email(required=True)
    company = Siret(required=True)
    scope = _scope()
    ends_at = Instant(allow_none=True, load_default=None)


class AuditQuerySchema(Strict):
    company = Siret()
    user = Email()
    since = Instant()
    after = fields.Integer(validate=validate.Range(min=0, max=2**63 - 1))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


# ---- management: responses -------------------------------------------------------------


class CompanySchema(Schema):
    siret = fields.String(dump_only=True)
    name = fields.String(dump_only=True)
    admins = fields.List(fields.String(), dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)


class DelegationSchema(Schema):
    id = fields.String(dump_only=True)
    company = fields.String(dump_only=True)
    manager_email = fields.String(dump_only=True)
    firm = fields.String(dump_only=True, allow_none=True)
    status = fields.String(dump_only=True)
    scope = fields.List(fields.String(), dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)
    ends_at = fields.AwareDateTime(dump_only=True, allow_none=True)
    activated_at = fields.AwareDateTime(dump_only=True, allow_none=True)
    revoked_at = fields.AwareDateTime(dump_only=True, allow_none=True)
    activation_expires_at = fields.AwareDateTime(dump_only=True, allow_none=True)


class ActivationSchema(Schema):
    token = fields.String(dump_only=True)
    expires_at = fields.AwareDateTime(dump_only=True)


class DesignationSchema(DelegationSchema):
    activation = fields.Nested(ActivationSchema, dump_only=True)


class DelegationListSchema(Schema):
    delegations = fields.List(fields.Nested(DelegationSchema), dump_only=True)


class GrantSchema(Schema):
    id = fields.String(dump_only=True)
    firm = fields.String(dump_only=True)
    collaborator = fields.String(dump_only=True)
    company = fields.String(dump_only=True)
    status = fields.String(dump_only=True)
    scope = fields.List(fields.String(), dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)
    ends_at = fields.AwareDateTime(dump_only=True, allow_none=True)
    revoked_at = fields.AwareDateTime(dump_only=True, allow_none=True)


class ClientSchema(Schema):
    siret = fields.String(dump_only=True)
    name = fields.String(dump_only=True)
    delegation_id = fields.String(dump_only=True)
    scope = fields.List(fields.String(), dump_only=True)
    ends_at = fields.AwareDateTime(dump_only=True, allow_none=True)


class ClientListSchema(Schema):
    clients = fields.List(fields.Nested(ClientSchema), dump_only=True)


class CollaboratorSchema(Schema):
    firm = fields.String(dump_only=True)
    email = fields.String(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)


class CollaboratorListSchema(Schema):
    collaborators = fields.List(fields.Nested(CollaboratorSchema), dump_only=True)


class CollaboratorRemovedSchema(Schema):
    firm = fields.String(dump_only=True)
    email = fields.String(dump_only=True)
    grants_revoked = fields.List(fields.String(), dump_only=True)


class AuditRecordSchema(Schema):
    id = fields.Integer(dump_only=True)
    at = fields.AwareDateTime(dump_only=True)
    actor = fields.String(dump_only=True)
    action = fields.String(dump_only=True)
    company = fields.String(dump_only=True, allow_none=True)
    firm = fields.String(dump_only=True, allow_none=True)
    subject = fields.String(dump_only=True, allow_none=True)
    target = fields.String(dump_only=True, allow_none=True)
    details = fields.Dict(dump_only=True)
    request_id = fields.String(dump_only=True, allow_none=True)


class AuditPageSchema(Schema):
    records = fields.List(fields.Nested(AuditRecordSchema), dump_only=True)
    next_after = fields.Integer(dump_only=True, allow_none=True)


# ---- operations ---------------------------------------------------------------------------


class HealthSchema(Schema):
    status = fields.String(dump_only=True)


class ReadySchema(Schema):
    status = fields.String(dump_only=True)
    database = fields.String(dump_only=True)
    policy_version = fields.String(dump_only=True, allow_none=True)
    policy_files = fields.String(dump_only=True)  # present when the files on disk are refused


class PolicySchema(Schema):
    version = fields.String(dump_only=True)
    files = fields.List(fields.String(), dump_only=True)
    loaded_at = fields.AwareDateTime(dump_only=True)
    rights = fields.List(fields.String(), dump_only=True)
    delegable = fields.List(fields.String(), dump_only=True)


# ---- policy administration -------------------------------------------------------------------


class PolicyDraftSchema(Strict):
    files = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class ProblemSchema(Schema):
    file = fields.String(allow_none=True)
    line = fields.Integer(allow_none=True)
    column = fields.Integer(allow_none=True)
    message = fields.String()


class ValidationReportSchema(Schema):
    valid = fields.Boolean(dump_only=True)
    errors = fields.List(fields.Nested(ProblemSchema), dump_only=True)


class ReloadSchema(Schema):
    accepted = fields.Boolean(dump_only=True)
    old_version = fields.String(dump_only=True)
    version = fields.String(dump_only=True)


class ChangeSchema(Schema):
    user = fields.String(dump_only=True)
    right = fields.String(dump_only=True)
    company = fields.String(dump_only=True)


class RightCountsSchema(Schema):
    gained = fields.Integer(dump_only=True)
    lost = fields.Integer(dump_only=True)


class ImpactCountsSchema(RightCountsSchema):
    pairs_checked = fields.Integer(dump_only=True)
    shapes = fields.Integer(dump_only=True, metadata={"description": "groups of pairs with the same facts"})
    questions = fields.Integer(dump_only=True, metadata={"description": "allow queries asked of the policies"})


class ImpactSchema(Schema):
    """A report: complete counts, and the first changes of each list (``truncated``: more exist)."""

    counts = fields.Nested(ImpactCountsSchema, dump_only=True)
    by_right = fields.Dict(keys=fields.String(), values=fields.Nested(RightCountsSchema), dump_only=True)
    gained = fields.List(fields.Nested(ChangeSchema), dump_only=True)
    lost = fields.List(fields.Nested(ChangeSchema), dump_only=True)
    truncated = fields.Boolean(dump_only=True)
    seconds = fields.Float(dump_only=True)
    method = fields.String(dump_only=True, metadata={"description": "how pairs were grouped, and why not coarser"})


class ImpactReportSchema(ImpactSchema):
    """An impact report of a draft: while ``running``, only who asked what and when."""

    id = fields.String(dump_only=True)
    status = fields.String(dump_only=True, metadata={"enum": ["running", "done", "failed"]})
    href = fields.String(dump_only=True)
    requested_by = fields.String(dump_only=True, allow_none=True)
    as_of = fields.DateTime(dump_only=True, metadata={"description": "the instant the rights are compared at"})
    started_at = fields.DateTime(dump_only=True)
    finished_at = fields.DateTime(dump_only=True, allow_none=True)
    policy_version = fields.String(dump_only=True)
    draft_version = fields.String(dump_only=True)
    error = fields.String(dump_only=True, allow_none=True)


class DelegationImpactRequestSchema(Strict):
    """A proposed change: a narrower scope, or ``scope: null`` for a revocation."""

    scope = fields.List(fields.String(validate=validate.Length(min=1, max=64)), allow_none=True, required=True)
