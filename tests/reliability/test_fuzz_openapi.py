"""Schema-driven fuzzing of EVERY endpoint against the app's own /openapi.json, with
schemathesis (its Python API on the Flask WSGI app), plus the hostile inputs a
generator does not produce by itself.

The app runs on the ``db`` fixture (SQLite, then PostgreSQL when
AUTHZ_TEST_POSTGRES_URL is set) with the demo story loaded through the use cases, an
API key of each role, and the wrong-secret throttle off (a fuzzer sends many unknown
activation links on purpose). Every call carries the admin key, so every endpoint is
reachable; the Acting-User is a real person of the story most of the time.

Checks on every response: no 5xx (``not_a_server_error``), the body matches the
documented schema for its status (``response_schema_conformance``), the content type
is the documented one (``content_type_conformance``), and the status is documented
(``status_code_conformance``). The figures (inputs tried, failures per check) are
printed, so run with ``-s`` to see them.

Budget: AUTHZ_FUZZ_EXAMPLES random examples per operation and generation mode
(default 12), after schemathesis' coverage phase (boundary values of every schema);
AUTHZ_FUZZ_SEED fixes the random choices (default 20260302).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select

from authz import demo, tokens
from authz.audit import Context
from authz.engine import read_policy
from authz.identifiers import luhn_valid
from authz.tables import data_version, delegations, grants, metadata
from service.app import create_app
from tests.http.conftest import SECRETS, question
from tests.support import ROOT, Clock, siret

EXAMPLES = int(os.environ.get("AUTHZ_FUZZ_EXAMPLES", "12"))
SEED = int(os.environ.get("AUTHZ_FUZZ_SEED", "20260302"))
ADMIN_KEY = {"Authorization": f"Bearer {SECRETS['admin']}"}
CHECKS = {
    "not_a_server_error": not_a_server_error,
    "response_schema_conformance": response_schema_conformance,
    "content_type_conformance": content_type_conformance,
    "status_code_conformance": status_code_conformance,
}
# Recompiling the policy (and running its tests) takes ~0.4 s a call: fewer examples there.
SLOW = {"POST /v1/policy/reload": 4, "POST /v1/policy/impact": 6, "POST /v1/policy/validate": 6}
# The audit query is the only one with integers and times in the query string, and cheap: more.
MORE = {"GET /v1/audit": 8}

COLLAB, COLLAB2 = list(demo.COLLABORATORS)
PENDING_MANAGER = "paul@pending-firm.example"
PENDING_FIRM = siret(2_0000_0000_0042)
STRANGER = "eve@nowhere.example"
UNKNOWN_COMPANY = siret(9_9999_9999_9999)
PEOPLE = [demo.ADMIN, demo.SECOND_ADMIN, demo.MANAGER, COLLAB, COLLAB2, PENDING_MANAGER, STRANGER]


# ---- the app, the story, and the fingerprint of the store ----------------------------------------


@pytest.fixture
def world(db):
    """The app on the test database with the demo story, keys and a pending designation."""
    clock = Clock()
    url = db.engine.url.render_as_string(hide_password=False)
    app = create_app({"AUTHZ_DATABASE_URL": url, "TESTING": True, "AUTHZ_GUESS_LIMIT": 0,
                      "AUTHZ_LOG_LEVEL": logging.CRITICAL}, clock=clock)
    services = app.extensions["authz"]
    with db.transaction() as tx:
        for role, secret in SECRETS.items():
            tx.insert_api_key(f"test-{role}", role, tokens.digest(secret), clock())
    demo.load_demo(services.management)
    pending = services.management.designate(
        Context(user=demo.ADMIN, key="test-portal", request_id="setup"), demo.COMPANY, PENDING_MANAGER, ["compte"])
    with db.engine.connect() as conn:
        delegation_ids = list(conn.execute(select(delegations.c.id).order_by(delegations.c.id)).scalars())
        grant_ids = list(conn.execute(select(grants.c.id).order_by(grants.c.id)).scalars())
        # DUPONT's active delegation to the firm, which ADMIN may change.
        own_delegation = conn.execute(select(delegations.c.id).where(
            delegations.c.company_siret == demo.COMPANY, delegations.c.status == "active")).scalar_one()
    yield SimpleNamespace(app=app, db=db, clock=clock, token=pending.activation.token,
                          delegation_ids=delegation_ids, grant_ids=grant_ids, own_delegation=own_delegation)
    services.db.dispose()


def fingerprint(db) -> dict[str, int]:
    """Row count of every table, and the data version (bumped by every change)."""
    with db.engine.connect() as conn:
        found = {table.name: conn.execute(select(func.count()).select_from(table)).scalar()
                 for table in metadata.sorted_tables}
        found["data_version.version"] = conn.execute(select(data_version.c.version)).scalar()
    return found


def load_schema(app):
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


# ---- recording what the checks say ----------------------------------------------------------------


@dataclass
class Findings:
    """Every call and every check failure, for the printed figures and the assert."""

    label: str
    calls: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    failures: dict = field(default_factory=dict)  # (check, operation, status) -> [count, example]
    call_errors: list = field(default_factory=list)

    def run(self, case, phase: str):
        """Send ``case``, run every check on the response, and return it (None if unsent)."""
        self.calls[phase] += 1
        try:
            response = case.call()
        except Exception as exc:  # noqa: BLE001 - the client refused to send it: not the app's fault
            self.call_errors.append(f"{case.operation.label}: {type(exc).__name__}: {exc}"[:300])
            return None
        self.statuses[f"{response.status_code // 100}xx"] += 1
        for name, check in CHECKS.items():
            try:
                case.validate_response(response, checks=[check])
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - a failed check (FailureGroup) is the finding
                key = (name, case.operation.label, response.status_code)
                if key not in self.failures:
                    self.failures[key] = [0, _example(case, response, exc)]
                self.failures[key][0] += 1
        return response

    def count(self, check: str) -> int:
        return sum(n for (name, _, _), (n, _) in self.failures.items() if name == check)

    def report(self) -> str:
        tried = sum(self.calls.values())
        lines = [
            f"[fuzz {self.label}] inputs tried: {tried} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.calls.items()))}); "
            f"responses: {dict(sorted(self.statuses.items()))}",
            f"[fuzz {self.label}] server errors (5xx): {self.count('not_a_server_error')}; "
            f"schema violations: {self.count('response_schema_conformance')}; "
            f"content-type violations: {self.count('content_type_conformance')}; "
            f"undocumented status codes: {self.count('status_code_conformance')}; "
            f"requests the client could not send: {len(self.call_errors)}",
        ]
        for (name, operation, status), (n, example) in sorted(self.failures.items()):
            lines.append(f"    {name}: {operation} -> {status} ({n}x)\n        {example}")
        return "\n".join(lines)


def _example(case, response, exc) -> str:
    body = case.body if isinstance(case.body, dict | list | str | int | float | bool) else None
    sent = {"path": case.path_parameters or None, "query": case.query or None,
            "Acting-User": (case.headers or {}).get("Acting-User"), "body": body}
    sent = {k: v for k, v in sent.items() if v is not None}
    reason = getattr(exc, "exceptions", [exc])[0]
    title = getattr(reason, "title", type(reason).__name__)
    return (f"{title}; sent {json.dumps(sent, ensure_ascii=True, default=str)[:400]}; "
            f"got {response.content[:300]!r}")


# ---- the OpenAPI document itself ----------------------------------------------------------------------


def test_schemathesis_accepts_the_openapi_document(world):
    """The document validates against the OpenAPI 3 schema, every operation in it loads,
    and every route of the app (but the document and its page) is in it."""
    schema = load_schema(world.app)
    schema.validate()
    loaded, broken = [], []
    for result in schema.get_all_operations():
        try:
            loaded.append(result.ok().label)
        except Exception as exc:  # noqa: BLE001 - an operation schemathesis cannot use
            broken.append(str(exc)[:300])
    routes = {f"{method} {rule.rule}".replace("<", "{").replace(">", "}")
              for rule in world.app.url_map.iter_rules()
              for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
              if rule.endpoint not in ("static", "ops.openapi", "ops.docs")}
    print(f"\n[fuzz] /openapi.json: {len(loaded)} operations loaded by schemathesis {schemathesis.__version__}, "
          f"{len(broken)} rejected; {len(routes)} routes in the app")
    assert not broken, broken
    assert routes == set(loaded), {"undocumented": routes - set(loaded), "not served": set(loaded) - routes}


# ---- one valid request per operation: every success body against its schema -----------------------------


def _success_calls(world) -> list[tuple]:
    """(method, path, path parameters, Acting-User, query, body, expected status) for every
    operation, in an order where each call prepares the next (ids and the token)."""
    new, new_admin, new_admin2 = siret(1_2345_6789_0001), "nina@nouvelle.example", "noe@nouvelle.example"
    new_collab = "nadia@legrand.example"
    policy_files = read_policy(ROOT)
    firm, company = demo.FIRM, demo.COMPANY
    search = {"action": {"name": "compte"}}
    return [
        ("GET", "/.well-known/authzen-configuration", {}, None, None, None, 200),
        ("GET", "/healthz", {}, None, None, None, 200),
        ("GET", "/readyz", {}, None, None, None, 200),
        ("GET", "/metrics", {}, None, None, None, 200),
        ("POST", "/access/v1/evaluation", {}, None, None, question(COLLAB, "compte", company), 200),
        ("POST", "/access/v1/evaluations", {}, None, None,
         {**question(COLLAB, "compte", company), "evaluations": [{}, {"action": {"name": "entreprise"}}]}, 200),
        # AuthZEN: without items, the batch endpoint answers the defaults as one evaluation.
        ("POST", "/access/v1/evaluations", {}, None, None, question(COLLAB, "compte", company), 200),
        ("POST", "/access/v1/search/subject", {}, None, None,
         {**search, "subject": {"type": "user"}, "resource": {"type": "company", "id": company}}, 200),
        ("POST", "/access/v1/search/resource", {}, None, None,
         {**search, "subject": {"type": "user", "id": demo.MANAGER}, "resource": {"type": "company"}}, 200),
        ("POST", "/access/v1/search/action", {}, None, None,
         {"subject": {"type": "user", "id": COLLAB}, "resource": {"type": "company", "id": company}}, 200),
        ("POST", "/v1/explain", {}, None, None, question(COLLAB, "compte", company), 200),
        ("POST", "/v1/explain", {}, None, None, question(COLLAB, "cotisations", company), 200),
        ("POST", "/v1/companies", {}, None, None,
         {"siret": new, "name": "Nouvelle SARL", "admin_email": new_admin}, 201),
        ("GET", "/v1/companies/{siret}", {"siret": new}, new_admin, None, None, 200),
        ("POST", "/v1/companies/{siret}/admins", {"siret": new}, new_admin, None, {"email": new_admin2}, 201),
        ("DELETE", "/v1/companies/{siret}/admins/{email}", {"siret": new, "email": new_admin2}, new_admin,
         None, None, 200),
        ("POST", "/v1/companies/{siret}/delegations", {"siret": new}, new_admin, None,
         {"manager_email": demo.MANAGER, "scope": ["compte", "conges"], "ends_at": "2027-01-01T00:00:00+01:00"}, 201),
        ("GET", "/v1/companies/{siret}/delegations", {"siret": new}, new_admin, None, None, 200),
        ("POST", "/v1/activations", {}, demo.MANAGER, None,
         {"token": "{token}", "firm_siret": firm, "firm_name": "x"}, 200),
        ("GET", "/v1/delegations/{delegation_id}", {"delegation_id": "{delegation}"}, new_admin, None, None, 200),
        ("PATCH", "/v1/delegations/{delegation_id}", {"delegation_id": "{delegation}"}, new_admin, None,
         {"scope": ["compte", "conges", "salaries"], "ends_at": None}, 200),
        ("POST", "/v1/delegations/{delegation_id}/impact", {"delegation_id": "{delegation}"}, None, None,
         {"scope": ["compte"]}, 200),
        ("GET", "/v1/firms/{siret}/clients", {"siret": firm}, demo.MANAGER, None, None, 200),
        ("GET", "/v1/firms/{siret}/collaborators", {"siret": firm}, demo.MANAGER, None, None, 200),
        ("POST", "/v1/firms/{siret}/collaborators", {"siret": firm}, demo.MANAGER, None, {"email": new_collab}, 201),
        ("POST", "/v1/firms/{siret}/grants", {"siret": firm}, demo.MANAGER, None,
         {"collaborator": new_collab, "company": new, "scope": ["compte"], "ends_at": "2026-12-31T23:00:00Z"}, 201),
        ("GET", "/v1/grants/{grant_id}", {"grant_id": "{grant}"}, demo.MANAGER, None, None, 200),
        ("PATCH", "/v1/grants/{grant_id}", {"grant_id": "{grant}"}, demo.MANAGER, None, {"scope": ["conges"]}, 200),
        ("DELETE", "/v1/grants/{grant_id}", {"grant_id": "{grant}"}, demo.MANAGER, None, None, 200),
        ("DELETE", "/v1/firms/{siret}/collaborators/{email}", {"siret": firm, "email": new_collab}, demo.MANAGER,
         None, None, 200),
        ("DELETE", "/v1/delegations/{delegation_id}", {"delegation_id": "{delegation}"}, new_admin, None, None, 200),
        ("GET", "/v1/audit", {}, None, {"limit": 5}, None, 200),
        ("GET", "/v1/audit", {}, new_admin, {"company": new, "since": "2026-01-01T00:00:00Z"}, None, 200),
        ("GET", "/v1/policy", {}, None, None, None, 200),
        ("POST", "/v1/policy/validate", {}, None, None, {"files": policy_files}, 200),
        ("POST", "/v1/policy/validate", {}, None, None, {"files": {"policies.polar": "allow(x) if"}}, 200),
        ("POST", "/v1/policy/impact", {}, None, None, {"files": policy_files}, 200),
        ("GET", "/v1/policy/impact/{report_id}", {"report_id": "{report}"}, None, None, None, 200),
        ("POST", "/v1/policy/reload", {}, None, None, None, 200),
    ]


def test_every_operation_answers_a_valid_request_with_its_documented_success(world):
    """One valid request per operation of the document (the fuzzer mostly gets 4xx):
    the documented success status, and a body that matches the documented schema."""
    schema = load_schema(world.app)
    findings = Findings(f"{world.db.engine.dialect.name} valid requests")
    covered, wrong_status = set(), []
    ids: dict[str, str] = {"token": world.token}
    for method, path, params, user, query, body, status in _success_calls(world):
        params = {k: ids.get(v.strip("{}"), v) if v.startswith("{") else v for k, v in params.items()}
        if isinstance(body, dict) and body.get("token") == "{token}":
            body = {**body, "token": ids["token"]}
        headers = {**ADMIN_KEY, **({"Acting-User": user} if user else {})}
        operation = schema[path][method]
        case = operation.Case(path_parameters=params, headers=headers, query=query,
                              **({"body": body} if body is not None else {}))
        covered.add(operation.label)
        response = findings.run(case, "valid")
        assert response is not None, f"{method} {path} could not be sent"
        if response.status_code != status:
            wrong_status.append(f"{method} {path} -> {response.status_code}, expected {status}: "
                                f"{response.content[:300]!r}")
        if response.status_code < 300 and path not in ("/metrics", "/.well-known/authzen-configuration"):
            answer = json.loads(response.content)
            if path == "/v1/companies/{siret}/delegations" and method == "POST":
                ids["token"] = answer["activation"]["token"]
            if path == "/v1/activations":
                ids["delegation"] = answer["id"]
            if path == "/v1/firms/{siret}/grants":
                ids["grant"] = answer["id"]
            if path == "/v1/policy/impact":
                ids["report"] = answer["id"]
    missing = {op.label for op in operations(schema)} - covered
    report = findings.report()
    print("\n" + report)
    assert not missing, f"operations with no valid request in this test: {sorted(missing)}"
    problems = wrong_status + [f"{name}: {op} -> {st}: {ex}" for (name, op, st), (_, ex) in findings.failures.items()]
    if problems:
        pytest.fail("valid requests not answered as documented:\n  " + "\n  ".join(problems), pytrace=False)


# ---- the fuzzing run --------------------------------------------------------------------------------------


def _real_path_parameters(world, rng: random.Random, names) -> dict[str, str]:
    pools = {
        "siret": [demo.COMPANY, demo.SECOND_COMPANY, demo.FIRM, UNKNOWN_COMPANY],
        "email": PEOPLE,
        "delegation_id": world.delegation_ids,
        "grant_id": world.grant_ids,
    }
    return {name: rng.choice(pools[name]) for name in names if pools.get(name)}


def _fuzz(operation, mode: GenerationMode, examples: int, prepare, findings: Findings) -> None:
    """``examples`` random cases of ``operation`` in ``mode``, each sent and checked."""

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(SEED)
    @given(case=operation.as_strategy(generation_mode=mode, headers=dict(ADMIN_KEY)))
    def fuzz(case):
        prepare(case)
        findings.run(case, str(mode.value))

    fuzz()


def test_fuzz_every_operation_against_the_openapi_document(world):
    """Coverage phase (every boundary of every schema, valid and invalid) then random
    positive and negative examples of every operation; real resources in the path and a
    real Acting-User most of the time, so the calls reach the use cases."""
    schema = load_schema(world.app)
    findings = Findings(world.db.engine.dialect.name)
    rng = random.Random(SEED)
    before = fingerprint(world.db)

    def prepare(case) -> None:
        headers = dict(case.headers or {})
        headers.update(ADMIN_KEY)
        # A real person most of the time; else the generated value (or none, where optional).
        if ("Acting-User" in headers or rng.random() < 0.5) and rng.random() < 0.85:
            headers["Acting-User"] = rng.choice(PEOPLE)
        case.headers = headers
        if case.path_parameters and rng.random() < 0.6:
            case.path_parameters = {**case.path_parameters,
                                    **_real_path_parameters(world, rng, case.path_parameters)}

    for operation in operations(schema):
        config = schema.config.generation_for(operation=operation, phase="coverage")
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        for case in schema.iter_coverage_cases(operation, generation_modes=modes, generation_config=config):
            prepare(case)
            findings.run(case, "coverage")
        # Operations whose only inputs are strings without constraints (path, headers) have
        # no negative examples: any string is valid there.
        negatable = bool(operation.body) or bool(operation.query)
        for mode in modes if negatable else modes[:1]:
            examples = min(EXAMPLES, SLOW.get(operation.label, EXAMPLES)) * MORE.get(operation.label, 1)
            _fuzz(operation, mode, examples, prepare, findings)
    after = fingerprint(world.db)
    report = findings.report()
    print(f"\n{report}\n[fuzz {findings.label}] store before: {before}\n[fuzz {findings.label}] store after:  {after}")
    if findings.failures:
        pytest.fail(f"the fuzzer found {len(findings.failures)} distinct failures:\n{report}", pytrace=False)


# ---- hostile inputs a generator does not make ---------------------------------------------------------------


BODY_CALLS = [  # (method, path, Acting-User) of every operation that takes a JSON body
    ("POST", "/access/v1/evaluation", None),
    ("POST", "/access/v1/evaluations", None),
    ("POST", "/access/v1/search/subject", None),
    ("POST", "/access/v1/search/resource", None),
    ("POST", "/access/v1/search/action", None),
    ("POST", "/v1/explain", None),
    ("POST", "/v1/companies", None),
    ("POST", f"/v1/companies/{demo.COMPANY}/admins", demo.ADMIN),
    ("POST", f"/v1/companies/{demo.COMPANY}/delegations", demo.ADMIN),
    ("POST", "/v1/activations", PENDING_MANAGER),
    ("PATCH", "/v1/delegations/{delegation}", demo.ADMIN),
    ("POST", "/v1/delegations/{delegation}/impact", None),
    ("POST", f"/v1/firms/{demo.FIRM}/collaborators", demo.MANAGER),
    ("POST", f"/v1/firms/{demo.FIRM}/grants", demo.MANAGER),
    ("PATCH", "/v1/grants/{grant}", demo.MANAGER),
    ("POST", "/v1/policy/validate", None),
    ("POST", "/v1/policy/impact", None),
]


class Hostile:
    """Send requests to the app, expect a clear 4xx each time and no change in the store."""

    def __init__(self, world, title: str):
        self.world, self.title = world, title
        self.client = world.app.test_client()
        self.baseline = fingerprint(world.db)
        self.sent = 0
        self.problems: list[str] = []

    def path(self, path: str) -> str:
        return path.replace("{delegation}", self.world.own_delegation).replace("{grant}", self.world.grant_ids[0])

    def send(self, method: str, path: str, *, user: str | None = None, data: bytes | None = None, json_body=None,
             query: dict | None = None, headers: dict | None = None, content_type: str = "application/json"):
        sent = {**ADMIN_KEY, **(headers or {})}
        if user is not None:
            sent["Acting-User"] = user
        kwargs: dict = {"headers": sent, "query_string": query}
        if json_body is not None:
            data = json.dumps(json_body).encode()
        if data is not None:
            kwargs.update(data=data, content_type=content_type)
        self.sent += 1
        return self.client.open(self.path(path), method=method, **kwargs)

    def expect(self, response, status: int, what: str, *, code: str | None = None, field: str | None = None,
               changes: bool = False) -> None:
        """``status`` with the error envelope (naming ``field`` in details); nothing stored."""
        body = response.get_json(silent=True)
        problem = None
        if response.status_code != status:
            problem = f"got {response.status_code}, expected {status}"
        elif status >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            if not isinstance(error, dict) or set(error) != {"code", "message", "details"}:
                problem = "no error envelope"
            elif code and error["code"] != code:
                problem = f"code {error['code']!r}, expected {code!r}"
            elif field and field not in error["details"]:
                problem = f"details {error['details']} do not name {field!r}"
        now = fingerprint(self.world.db)
        if not changes and now != self.baseline:
            changed = {k: (self.baseline[k], v) for k, v in now.items() if self.baseline[k] != v}
            problem = (problem + "; " if problem else "") + f"the store changed: {changed}"
        self.baseline = now
        if problem:
            error = body.get("error") if isinstance(body, dict) else None
            said = f"code {error.get('code')!r}" if isinstance(error, dict) else repr(response.get_data()[:200])
            self.problems.append(f"{what}: {problem} ({said})")

    def check(self) -> None:
        print(f"\n[edge {self.world.db.engine.dialect.name}] {self.title}: {self.sent} requests, "
              f"{len(self.problems)} not answered with the expected 4xx or changed the store")
        for line in self.problems[:40]:
            print(f"    !! {line}")
        if self.problems:
            pytest.fail(f"{self.title}:\n  " + "\n  ".join(self.problems[:40]), pytrace=False)


def test_oversized_bodies_are_413_and_store_nothing(world):
    hostile = Hostile(world, "bodies over 1 MiB")
    limit = world.app.config["MAX_CONTENT_LENGTH"]
    big = json.dumps({"name": "x" * limit}).encode()
    for method, path, user in BODY_CALLS:
        response = hostile.send(method, path, user=user, data=big)
        hostile.expect(response, 413, f"{method} {path} with {len(big)} bytes", code="payload_too_large")
    hostile.check()


def test_deeply_nested_json_is_400_and_stores_nothing(world):
    hostile = Hostile(world, "JSON nested 100,000 levels deep")
    depth = 100_000
    shapes = {"arrays": b"[" * depth + b"]" * depth,
              "objects": b'{"a":' * depth + b"1" + b"}" * depth,
              "in a field": b'{"context": ' + b"[" * depth + b"]" * depth + b"}"}
    for method, path, user in BODY_CALLS:
        for name, body in shapes.items():
            response = hostile.send(method, path, user=user, data=body)
            hostile.expect(response, 400, f"{method} {path} with {name}", code="invalid_json")
    # Deep but parseable (under the interpreter's recursion limit): an answer, never a 500.
    for depth in (200, 900):
        nested = question(demo.ADMIN, "compte", demo.COMPANY) | {"context": json.loads("[" * depth + "]" * depth)}
        response = hostile.send("POST", "/access/v1/evaluation", json_body=nested)
        if response.status_code >= 500:
            hostile.problems.append(f"evaluation with a context {depth} levels deep: {response.status_code}")
    hostile.check()


def test_evaluation_batches_over_the_limit_are_400(world):
    hostile = Hostile(world, "evaluation batches over AUTHZ_MAX_EVALUATIONS")
    limit = world.app.config["AUTHZ_MAX_EVALUATIONS"]
    defaults = question(demo.ADMIN, "compte", demo.COMPANY)
    for count in (limit + 1, 10 * limit, 100 * limit):
        response = hostile.send("POST", "/access/v1/evaluations", json_body={**defaults, "evaluations": [{}] * count})
        hostile.expect(response, 400, f"{count} evaluations", code="too_many_evaluations", field="evaluations")
    response = hostile.send("POST", "/access/v1/evaluations", json_body={**defaults, "evaluations": [{}] * limit})
    hostile.expect(response, 200, f"{limit} evaluations (the limit itself)")
    if response.status_code == 200 and len(response.get_json()["evaluations"]) != limit:
        hostile.problems.append(f"{limit} evaluations gave {len(response.get_json()['evaluations'])} answers")
    hostile.check()


def test_huge_search_page_limits_are_400(world):
    hostile = Hostile(world, "search page.limit out of range")
    maximum = world.app.config["AUTHZ_MAX_PAGE_SIZE"]
    searches = {
        "/access/v1/search/subject": {"subject": {"type": "user"}, "action": {"name": "compte"},
                                      "resource": {"type": "company", "id": demo.COMPANY}},
        "/access/v1/search/resource": {"subject": {"type": "user", "id": demo.MANAGER}, "action": {"name": "compte"},
                                       "resource": {"type": "company"}},
        "/access/v1/search/action": {"subject": {"type": "user", "id": demo.ADMIN},
                                     "resource": {"type": "company", "id": demo.COMPANY}},
    }
    too_large = [maximum + 1, 10**6, 2**31, 2**63, 2**64 + 1, 10**30]
    malformed = [0, -1, -(2**63), 1.5, 1e308, "10", True, None, [10], {"n": 10}]
    for path, body in searches.items():
        for limit in too_large:
            response = hostile.send("POST", path, json_body={**body, "page": {"limit": limit}})
            hostile.expect(response, 400, f"{path} page.limit={limit}", code="page_limit_too_large")
        for limit in malformed:
            response = hostile.send("POST", path, json_body={**body, "page": {"limit": limit}})
            hostile.expect(response, 400, f"{path} page.limit={limit!r}", field="page")
        # 5,000 digits: Python refuses to parse the integer at all.
        response = hostile.send("POST", path, data=json.dumps(body)[:-1].encode() + b', "page": {"limit": '
                                + b"9" * 5000 + b"}}")
        hostile.expect(response, 400, f"{path} page.limit of 5000 digits")
        response = hostile.send("POST", path, json_body={**body, "page": {"limit": maximum}})
        hostile.expect(response, 200, f"{path} page.limit={maximum} (the maximum itself)")
    hostile.check()


INVALID_UTF8 = {
    "0xff byte": b'{"name": "\xff"}',
    "overlong slash": b'{"name": "\xc0\xaf"}',
    "truncated sequence": b'{"name": "\xe2\x82"}',
    "encoded surrogate": b'{"name": "\xed\xa0\x80"}',
    "latin-1 text": b'{"name": "Ma\xe7onnerie"}',
    "utf-16 with BOM": '{"name": "x"}'.encode("utf-16"),
    "lone continuation byte": b'{"\x80": 1}',
}


def test_invalid_utf8_bodies_are_400_and_store_nothing(world):
    hostile = Hostile(world, "bodies that are not UTF-8")
    for method, path, user in BODY_CALLS:
        for name, body in INVALID_UTF8.items():
            response = hostile.send(method, path, user=user, data=body)
            hostile.expect(response, 400, f"{method} {path} with {name}", code="invalid_json")
    hostile.check()


def _bad_luhn(value: str) -> str:
    last = next(d for d in "0123456789" if not luhn_valid(value[:-1] + d))
    return value[:-1] + last


BAD_SIRETS = {
    "13 digits": demo.COMPANY[:13],
    "15 digits": demo.COMPANY + "0",
    "letters": demo.COMPANY[:12] + "AB",
    "all letters": "ABCDEFGHIJKLMN",
    "bad Luhn": _bad_luhn(demo.COMPANY),
    "fullwidth digits": "".join(chr(0xFF10 + int(d)) for d in demo.COMPANY),
    "arabic-indic digits": "".join(chr(0x0660 + int(d)) for d in demo.COMPANY),
    "devanagari digits": "".join(chr(0x0966 + int(d)) for d in demo.COMPANY),
    "superscript digit": demo.COMPANY[:13] + "\u2074",
    "inner spaces": f"{demo.COMPANY[:3]} {demo.COMPANY[3:6]} {demo.COMPANY[6:9]} {demo.COMPANY[9:]}",
    "surrounding spaces": f" {demo.COMPANY} ",
    "sign": "+" + demo.COMPANY[1:],
    "empty": "",
    "as a JSON number": int(demo.COMPANY),
    "null": None,
    "a list": [demo.COMPANY],
}


def test_siret_edge_cases_are_refused_and_store_nothing(world):
    """Malformed SIRETs in bodies: 400 naming the field; in a query: 400; in a path: 404."""
    hostile = Hostile(world, "malformed SIRETs")
    for name, bad in BAD_SIRETS.items():
        cases = [
            ("POST", "/v1/companies", None, {"siret": bad, "name": "Mauvaise SA", "admin_email": "new@bad.example"},
             "siret"),
            ("POST", "/v1/activations", PENDING_MANAGER, {"token": world.token, "firm_siret": bad, "firm_name": "C"},
             "firm_siret"),
            ("POST", f"/v1/firms/{demo.FIRM}/grants", demo.MANAGER,
             {"collaborator": COLLAB, "company": bad, "scope": ["compte"]}, "company"),
        ]
        for method, path, user, body, fieldname in cases:
            response = hostile.send(method, path, user=user, json_body=body)
            hostile.expect(response, 400, f"{method} {path} {fieldname}={name}", field=fieldname)
        if isinstance(bad, str):
            response = hostile.send("GET", "/v1/audit", query={"company": bad})
            hostile.expect(response, 400, f"GET /v1/audit?company={name}", field="company")
            if bad and "/" not in bad:
                for method, path, user in [("GET", "/v1/companies/{}", demo.ADMIN),
                                           ("POST", "/v1/companies/{}/delegations", demo.ADMIN),
                                           ("GET", "/v1/firms/{}/clients", demo.MANAGER)]:
                    body = {"manager_email": "m@x.example", "scope": ["compte"]} if method == "POST" else None
                    response = hostile.send(method, path.format(bad), user=user, json_body=body)
                    hostile.expect(response, 404, f"{method} {path.format(name)}", code="not_found")
    hostile.check()


def _long_email(length: int) -> str:
    """A well-formed address of exactly ``length`` characters (64-character local part)."""
    local = "l" * 64
    labels, left = [], length - len(local) - 1 - 3  # '@' and '.fr'
    while left > 0:
        size = min(63, left - 1 if left > 64 else left)
        labels.append("d" * size)
        left -= size + 1
    domain = ".".join(labels) + ".fr"
    address = f"{local}@{domain}"
    assert len(address) == length, (len(address), length)
    return address


BAD_EMAILS = {
    "no @": "alice.dupont.example",
    "two @": "alice@@dupont.example",
    "space inside": "alice dupont@dupont.example",
    "space in domain": "alice@dupont .example",
    "surrounding spaces": " alice@dupont.example ",
    "tab": "alice\t@dupont.example",
    "255 characters": _long_email(255),
    "1000 characters": "a" * 990 + "@dupont.fr",
    "65-character local part": "l" * 65 + "@dupont.example",
    "64-character domain label": "alice@" + "d" * 64 + ".example",
    "unicode local part": "élodie@dupont.example",
    "unicode domain": "alice@dupönt.example",
    "fullwidth at sign": "alice\uff20dupont.example",
    "zero-width space": "alice\u200b@dupont.example",
    "no dot in domain": "alice@dupont",
    "trailing dot": "alice@dupont.example.",
    "double dot in domain": "alice@dupont..example",
    "hyphen-led label": "alice@-dupont.example",
    "nothing before @": "@dupont.example",
    "nothing after @": "alice@",
    "header injection": "alice@dupont.example\r\nBcc: eve@nowhere.example",
    "empty": "",
    "a number": 42,
    "null": None,
}


def test_email_edge_cases_are_refused_and_store_nothing(world):
    """Malformed e-mails in every body field that takes one: 400 naming the field; in the
    Acting-User header: 400; in the audit query: 400; in a path: 404. A well-formed
    address of exactly 254 characters is still accepted (the limit is exact)."""
    hostile = Hostile(world, "malformed e-mail addresses")
    new = siret(1_2345_6789_0099)
    for name, bad in BAD_EMAILS.items():
        cases = [
            ("POST", "/v1/companies", None, {"siret": new, "name": "Mauvaise SA", "admin_email": bad}, "admin_email"),
            ("POST", f"/v1/companies/{demo.COMPANY}/admins", demo.ADMIN, {"email": bad}, "email"),
            ("POST", f"/v1/companies/{demo.COMPANY}/delegations", demo.ADMIN,
             {"manager_email": bad, "scope": ["compte"]}, "manager_email"),
            ("POST", f"/v1/firms/{demo.FIRM}/collaborators", demo.MANAGER, {"email": bad}, "email"),
            ("POST", f"/v1/firms/{demo.FIRM}/grants", demo.MANAGER,
             {"collaborator": bad, "company": demo.COMPANY, "scope": ["compte"]}, "collaborator"),
        ]
        for method, path, user, body, fieldname in cases:
            response = hostile.send(method, path, user=user, json_body=body)
            hostile.expect(response, 400, f"{method} {path} {fieldname}={name}", field=fieldname)
        if isinstance(bad, str):
            try:
                response = hostile.send("POST", f"/v1/companies/{demo.COMPANY}/admins", user=bad,
                                        json_body={"email": "ok@dupont.example"})
            except (ValueError, UnicodeEncodeError):
                pass  # no HTTP client can put it in a header (a line break, or not latin-1)
            else:
                hostile.expect(response, 400, f"Acting-User: {name}", field="Acting-User")
        if isinstance(bad, str):
            response = hostile.send("GET", "/v1/audit", query={"user": bad})
            hostile.expect(response, 400, f"GET /v1/audit?user={name}", field="user")
            # (URL parsers drop tabs and line breaks from a path: the app would see another address)
            if bad.strip() and not any(c in bad for c in "/\t\r\n"):
                response = hostile.send("DELETE", f"/v1/companies/{demo.COMPANY}/admins/{bad}", user=demo.ADMIN)
                hostile.expect(response, 404, f"DELETE .../admins/{name}", code="not_found")
    longest = _long_email(254)
    response = hostile.send("POST", f"/v1/companies/{demo.COMPANY}/admins", user=demo.ADMIN,
                            json_body={"email": longest})
    hostile.expect(response, 201, "a well-formed address of exactly 254 characters", changes=True)
    hostile.check()


EDGE_TIMES = {
    "year 9999, UTC-14": "9999-12-31T23:59:59-14:00",
    "year 9999, UTC-00:01": "9999-12-31T23:59:59-00:01",
    "year 1, UTC+14": "0001-01-01T00:00:00+14:00",
    "year 1, UTC+00:01": "0001-01-01T00:00:00+00:01",
}


def test_dates_at_the_edges_of_the_calendar_are_refused_and_store_nothing(world):
    """RFC 3339 times whose UTC instant falls outside years 1-9999 cannot be stored:
    400 (a clear refusal) for ``ends_at`` in every body that takes one and for the audit
    log's ``since``; never a 500, nothing stored."""
    hostile = Hostile(world, "times outside years 1-9999 in UTC")
    for moment in EDGE_TIMES.values():
        cases = [
            ("POST", f"/v1/companies/{demo.COMPANY}/delegations", demo.ADMIN,
             {"manager_email": "late@firm.example", "scope": ["compte"], "ends_at": moment}),
            ("PATCH", "/v1/delegations/{delegation}", demo.ADMIN, {"ends_at": moment}),
            ("POST", f"/v1/firms/{demo.FIRM}/grants", demo.MANAGER,
             {"collaborator": COLLAB, "company": demo.SECOND_COMPANY, "scope": ["compte"], "ends_at": moment}),
            ("PATCH", "/v1/grants/{grant}", demo.MANAGER, {"ends_at": moment}),
        ]
        for method, path, user, body in cases:
            response = hostile.send(method, path, user=user, json_body=body)
            hostile.expect(response, 400, f"{method} {path} ends_at={moment}", field="ends_at")
        response = hostile.send("GET", "/v1/audit", query={"since": moment})
        hostile.expect(response, 400, f"GET /v1/audit?since={moment}", field="since")
    hostile.check()


def test_audit_cursor_beyond_64_bits_is_an_answer(world):
    """``after`` is an integer >= 0 in the document, with no maximum: a cursor past every
    record gives an empty page (or a 400 naming it), never a 500."""
    hostile = Hostile(world, "audit cursors beyond 64 bits")
    for after in (2**63 - 1, 2**63, 2**64, 10**30):
        response = hostile.send("GET", "/v1/audit", query={"after": str(after)})
        if response.status_code == 200:
            hostile.expect(response, 200, f"GET /v1/audit?after={after}")
            if response.get_json()["records"]:
                hostile.problems.append(f"after={after} returned records")
        else:
            hostile.expect(response, 400, f"GET /v1/audit?after={after}", field="after")
    hostile.check()
