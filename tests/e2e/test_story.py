"""The delegation story of docs/domain.md, told to a real `authz serve` over HTTP.

One gunicorn server with two workers runs per database (SQLite file, PostgreSQL); its
schema and API keys come from the console script, as an operator would do it. Every
test casts its own company, firm and people, so the tests share the server but no rows.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

import pytest

from authz.store import Database
from authz.tables import delegations, utcnow
from tests.e2e.harness import Api, Cli, Server, environment
from tests.support import siret

RIGHTS = ["declarations", "cotisations", "compte", "salaries", "conges", "intemperies", "attestations", "entreprise"]
FIRM_SCOPE = ["compte", "cotisations", "declarations", "salaries"]
NARROWED_SCOPE = ["compte", "cotisations", "salaries"]
WIDENED_SCOPE = ["compte", "conges", "cotisations", "declarations", "salaries"]
GRANTED = ["compte", "declarations"]
READ_YOUR_WRITES_CALLS = 20


@dataclass(frozen=True)
class Running:
    """The server under test, a portal's client, and the admin key."""

    api: Api
    admin_key: str
    database_url: str
    server: Server


@pytest.fixture(scope="module")
def service(blank_database_url, tmp_path_factory) -> Running:
    """Set up the database and keys with `authz`, then serve it with two workers."""
    workdir = tmp_path_factory.mktemp("e2e-server")
    cli = Cli(environment(blank_database_url), workdir)
    cli.ok("db", "upgrade")
    portal_key = cli.create_key("portal", "e2e")
    admin_key = cli.create_key("admin", "e2e-admin")
    server = Server(cli.env, workdir, workdir / "server.log", workers=2)
    try:
        server.start()
        yield Running(Api(server.base_url, portal_key), admin_key, blank_database_url, server)
    finally:
        server.stop()


@dataclass(frozen=True)
class Cast:
    """The people and organisations of one telling of the story."""

    company: str       # the member company
    firm: str          # its accounting firm
    admin: str         # the company admin
    manager: str       # the firm manager
    collaborator: str  # a collaborator of the firm


_tellings = itertools.count(1)


@pytest.fixture
def cast() -> Cast:
    n = next(_tellings)
    return Cast(
        company=siret(3_0000_0000_0000 + n),
        firm=siret(4_0000_0000_0000 + n),
        admin=f"alice@dupont-{n}.example",
        manager=f"bruno@legrand-{n}.example",
        collaborator=f"chloe@legrand-{n}.example",
    )


# ---- steps of the story, each checked on its HTTP answer ----------------------------------


def register(api: Api, cast: Cast) -> None:
    reply = api.post("/v1/companies", {"siret": cast.company, "name": "Maçonnerie Dupont", "admin_email": cast.admin})
    assert reply.status == 201, reply.body
    assert reply.body["admins"] == [cast.admin]


def designate(api: Api, cast: Cast, scope: list[str], **kw) -> dict:
    reply = api.post(f"/v1/companies/{cast.company}/delegations",
                     {"manager_email": cast.manager, "scope": scope}, user=cast.admin, **kw)
    assert reply.status == 201, reply.body
    assert reply.body["status"] == "pending"
    assert reply.body["scope"] == sorted(scope)
    assert reply.body["activation"]["token"]
    return reply.body


def activate(api: Api, cast: Cast, token: str, acting: str | None = None):
    return api.post("/v1/activations", {"token": token, "firm_siret": cast.firm, "firm_name": "Cabinet Legrand"},
                    user=acting or cast.manager)


def active_firm(api: Api, cast: Cast, scope: list[str]) -> str:
    """Register the company and bring the firm's delegation to active; return its id."""
    register(api, cast)
    designation = designate(api, cast, scope)
    reply = activate(api, cast, designation["activation"]["token"])
    assert reply.status == 200, reply.body
    return designation["id"]


def add_collaborator(api: Api, cast: Cast) -> None:
    reply = api.post(f"/v1/firms/{cast.firm}/collaborators", {"email": cast.collaborator}, user=cast.manager)
    assert reply.status == 201, reply.body


def grant(api: Api, cast: Cast, scope: list[str]):
    return api.post(f"/v1/firms/{cast.firm}/grants",
                    {"collaborator": cast.collaborator, "company": cast.company, "scope": scope}, user=cast.manager)


def rights_of(api: Api, user: str, company: str) -> dict[str, bool]:
    """The decision grid of one person on one company, right by right."""
    return {right: api.decide(user, right, company) for right in RIGHTS}


def only(*rights: str) -> dict[str, bool]:
    return {right: right in rights for right in RIGHTS}


# ---- the story --------------------------------------------------------------------------


def test_delegation_story_from_designation_to_revocation(service, cast):
    api = service.api

    register(api, cast)
    assert rights_of(api, cast.admin, cast.company) == only(*RIGHTS)

    designation = designate(api, cast, ["salaries", "declarations", "cotisations", "compte"])
    delegation_id, token = designation["id"], designation["activation"]["token"]
    assert designation["scope"] == FIRM_SCOPE
    assert not api.decide(cast.manager, "declarations", cast.company), "a pending designation gives nothing"

    # The manager confirms the e-mail in another case: e-mails compare case-insensitively.
    reply = activate(api, cast, token, acting=cast.manager.upper())
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "active"
    assert reply.body["firm"] == cast.firm
    assert rights_of(api, cast.manager, cast.company) == only(*FIRM_SCOPE)
    clients = api.get(f"/v1/firms/{cast.firm}/clients", user=cast.manager)
    assert clients.status == 200, clients.body
    assert [(c["siret"], c["scope"]) for c in clients.body["clients"]] == [(cast.company, FIRM_SCOPE)]
    again = activate(api, cast, token)
    assert again.status == 410, "an activation link works once"

    add_collaborator(api, cast)
    assert rights_of(api, cast.collaborator, cast.company) == only(), "a collaborator without a grant holds nothing"
    reply = grant(api, cast, ["declarations", "compte"])
    assert reply.status == 201, reply.body
    grant_id = reply.body["id"]
    assert reply.body["scope"] == GRANTED

    assert rights_of(api, cast.collaborator, cast.company) == only(*GRANTED)
    actions = api.post("/access/v1/search/action", {
        "subject": {"type": "user", "id": cast.collaborator}, "resource": {"type": "company", "id": cast.company},
    })
    assert actions.status == 200, actions.body
    assert sorted(result["name"] for result in actions.body["results"]) == GRANTED

    # The company narrows the firm: the collaborator loses declarations at once,
    # though the grant itself is not rewritten.
    reply = api.patch(f"/v1/delegations/{delegation_id}", {"scope": NARROWED_SCOPE}, user=cast.admin)
    assert reply.status == 200, reply.body
    assert reply.body["scope"] == NARROWED_SCOPE
    assert rights_of(api, cast.collaborator, cast.company) == only("compte")
    assert rights_of(api, cast.manager, cast.company) == only(*NARROWED_SCOPE)
    kept = api.get(f"/v1/grants/{grant_id}", user=cast.manager)
    assert kept.status == 200, kept.body
    assert (kept.body["status"], kept.body["scope"]) == ("active", GRANTED)
    explained = api.post("/v1/explain", {
        "subject": {"type": "user", "id": cast.collaborator}, "action": {"name": "declarations"},
        "resource": {"type": "company", "id": cast.company},
    })
    assert explained.status == 200, explained.body
    assert explained.body["decision"] is False
    assert (explained.body["broken"]["kind"], explained.body["broken"]["id"]) == ("delegation", delegation_id)
    assert explained.body["broken"]["detail"] == "delegation_out_of_scope"

    # Widening again brings declarations back through the untouched grant, and no more.
    reply = api.patch(f"/v1/delegations/{delegation_id}", {"scope": WIDENED_SCOPE}, user=cast.admin)
    assert reply.status == 200, reply.body
    assert rights_of(api, cast.collaborator, cast.company) == only(*GRANTED)
    assert rights_of(api, cast.manager, cast.company) == only(*WIDENED_SCOPE)
    explained = api.post("/v1/explain", {
        "subject": {"type": "user", "id": cast.collaborator}, "action": {"name": "declarations"},
        "resource": {"type": "company", "id": cast.company},
    })
    assert explained.body["decision"] is True
    assert [(link["kind"], link["id"]) for link in explained.body["chain"]][-2:] == [
        ("delegation", delegation_id), ("grant", grant_id)]

    reply = api.delete(f"/v1/delegations/{delegation_id}", user=cast.admin)
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "revoked"
    # Read-your-writes across workers: every call is a new connection, so they spread
    # over both gunicorn workers; none may answer from a state before the revocation.
    people = itertools.cycle([cast.collaborator, cast.manager])
    answers = [api.decide(next(people), "declarations", cast.company) for _ in range(READ_YOUR_WRITES_CALLS)]
    assert answers == [False] * READ_YOUR_WRITES_CALLS
    workers = service.server.worker_pids()
    assert workers is None or len(workers) == 2, f"the server should still run two workers, not {workers}"
    assert rights_of(api, cast.manager, cast.company) == only()
    assert rights_of(api, cast.collaborator, cast.company) == only()
    assert rights_of(api, cast.admin, cast.company) == only(*RIGHTS), "the company keeps its own rights"
    clients = api.get(f"/v1/firms/{cast.firm}/clients", user=cast.manager)
    assert clients.status == 200, clients.body
    assert clients.body["clients"] == []
    kept = api.get(f"/v1/grants/{grant_id}", user=cast.manager)
    assert (kept.body["status"], kept.body["scope"]) == ("active", GRANTED)


def test_expired_activation_link_gives_nothing_and_a_new_designation_works(service, cast):
    api = service.api
    register(api, cast)
    first = designate(api, cast, FIRM_SCOPE)
    # The server's clock cannot move: age the stored link instead.
    database = Database(service.database_url)
    try:
        with database.engine.begin() as conn:
            conn.execute(delegations.update().where(delegations.c.id == first["id"])
                         .values(token_expires_at=utcnow() - timedelta(minutes=1)))
    finally:
        database.dispose()

    listed = api.get(f"/v1/companies/{cast.company}/delegations", user=cast.admin)
    assert listed.status == 200, listed.body
    assert [(d["id"], d["status"]) for d in listed.body["delegations"]] == [(first["id"], "expired")]
    reply = activate(api, cast, first["activation"]["token"])
    assert reply.status == 410, reply.body
    assert reply.error["code"] == "token_expired"
    assert rights_of(api, cast.manager, cast.company) == only()

    second = designate(api, cast, FIRM_SCOPE)
    assert second["activation"]["token"] != first["activation"]["token"]
    assert activate(api, cast, first["activation"]["token"]).status == 410, "the old link never works"
    reply = activate(api, cast, second["activation"]["token"])
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "active"
    assert rights_of(api, cast.manager, cast.company) == only(*FIRM_SCOPE)
    statuses = {d["id"]: d["status"] for d in
                api.get(f"/v1/companies/{cast.company}/delegations", user=cast.admin).body["delegations"]}
    assert statuses[second["id"]] == "active"
    assert statuses[first["id"]] in ("expired", "revoked")


def test_grant_beyond_the_firm_scope_is_refused_with_the_exceeding_rights(service, cast):
    api = service.api
    active_firm(api, cast, ["compte", "declarations"])
    add_collaborator(api, cast)

    reply = grant(api, cast, ["declarations", "cotisations", "entreprise"])
    assert reply.status == 403, reply.body
    assert reply.error["details"]["exceeding"] == ["cotisations", "entreprise"]
    assert rights_of(api, cast.collaborator, cast.company) == only(), "a refused grant is not stored"

    reply = grant(api, cast, ["declarations"])
    assert reply.status == 201, reply.body
    widened = api.patch(f"/v1/grants/{reply.body['id']}", {"scope": ["declarations", "salaries"]}, user=cast.manager)
    assert widened.status == 403, widened.body
    assert widened.error["details"]["exceeding"] == ["salaries"]
    kept = api.get(f"/v1/grants/{reply.body['id']}", user=cast.manager)
    assert kept.body["scope"] == ["declarations"]


def audit_of(api: Api, company: str, **kw) -> list[dict]:
    reply = api.get("/v1/audit?" + urlencode({"company": company, "limit": 1000}), **kw)
    assert reply.status == 200, reply.body
    return reply.body["records"]


def test_request_id_of_a_change_is_echoed_and_recorded_in_the_audit_log(service, cast):
    api = service.api
    register(api, cast)
    request_id = f"e2e-{uuid.uuid4().hex}"
    designation = api.post(f"/v1/companies/{cast.company}/delegations",
                           {"manager_email": cast.manager, "scope": FIRM_SCOPE},
                           user=cast.admin, headers={"X-Request-ID": request_id})
    assert designation.status == 201, designation.body
    assert designation.headers["x-request-id"] == request_id
    # Without one, the service makes one up, echoes it, and records that.
    change = api.patch(f"/v1/delegations/{designation.body['id']}", {"scope": ["compte"]}, user=cast.admin)
    assert change.status == 200, change.body
    generated = change.headers["x-request-id"]
    assert generated and generated != request_id

    records = audit_of(api, cast.company, key=service.admin_key)
    by_request = {record["request_id"]: record for record in records}
    assert by_request[request_id]["action"] == "delegation.designate"
    assert by_request[request_id]["actor"] == cast.admin
    assert by_request[request_id]["target"] == designation.body["id"]
    assert by_request[generated]["action"] == "delegation.change"
    # The company admin reads the same log for their company through the portal.
    assert audit_of(api, cast.company, user=cast.admin) == records
