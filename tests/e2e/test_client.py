"""authz.client.AuthzClient, the portals' client, against a live `authz serve` on the demo data.

Then against no server at all, a stopped one, and stand-ins answering 503, garbage or
too slowly: the decisions must fail closed (False, a warning logged), the management
calls raise a typed AuthzClientError, and nothing sent is ever sent twice.
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from authz import demo
from authz.client import AuthzClient, AuthzClientError
from tests.e2e.harness import Server, free_port
from tests.e2e.live import Live, demo_server, stand_in
from tests.support import ROOT, siret

CHLOE = "chloe@legrand.example"    # declarations, compte on demo.COMPANY
DAMIEN = "damien@legrand.example"  # salaries, conges on demo.COMPANY
STRANGER = "eve@nowhere.example"
EVERY_RIGHT = ["attestations", "compte", "conges", "cotisations", "declarations", "entreprise", "intemperies",
               "salaries"]


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Live:
    with demo_server(tmp_path_factory.mktemp("client-e2e")) as running:
        yield running


@pytest.fixture
def portal(live) -> AuthzClient:
    with AuthzClient(live.base_url, live.portal_key) as client:
        yield client


def test_the_client_needs_only_the_standard_library_and_httpx():
    """A portal installs authz/client.py without Flask, oso, SQLAlchemy or the service."""
    probe = ("import sys, authz.client; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'flask', 'oso', 'polar', 'sqlalchemy', 'marshmallow', 'apispec', 'service', 'werkzeug'}))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    imports = [line for line in (ROOT / "authz" / "client.py").read_text().splitlines()
               if line.startswith(("import ", "from "))]
    assert all(line.split()[1].split(".")[0] in sys.stdlib_module_names | {"httpx", "__future__"}
               for line in imports), imports


# ---- decisions -------------------------------------------------------------------------------


def test_can_answers_the_demo_decisions(portal):
    assert portal.can(CHLOE, "declarations", demo.COMPANY) is True
    assert portal.can(CHLOE, "compte", demo.COMPANY) is True
    assert portal.can(CHLOE, "salaries", demo.COMPANY) is False
    assert portal.can(DAMIEN, "salaries", demo.COMPANY) is True
    assert portal.can(demo.MANAGER, "attestations", demo.SECOND_COMPANY) is True
    assert portal.can(demo.MANAGER, "attestations", demo.COMPANY) is False
    assert portal.can(CHLOE, "declarations", demo.SECOND_COMPANY) is False
    assert [portal.can(demo.ADMIN, right, demo.COMPANY) for right in EVERY_RIGHT] == [True] * len(EVERY_RIGHT)
    assert portal.can(CHLOE.upper(), "declarations", demo.COMPANY) is True, "e-mails compare case-insensitively"
    assert portal.can(STRANGER, "compte", demo.COMPANY) is False
    assert portal.can(CHLOE, "no_such_right", demo.COMPANY) is False


def test_a_pep_key_may_decide(live):
    with AuthzClient(live.base_url, live.pep_key) as pep:
        assert pep.can(CHLOE, "declarations", demo.COMPANY) is True
        assert pep.can_many([(CHLOE, "declarations", demo.COMPANY), (CHLOE, "salaries", demo.COMPANY)]) == [True, False]


def test_can_many_answers_in_order_with_each_semantic(portal):
    questions = [
        (CHLOE, "declarations", demo.COMPANY),   # True
        (CHLOE, "salaries", demo.COMPANY),       # False
        (DAMIEN, "salaries", demo.COMPANY),      # True
        (STRANGER, "compte", demo.COMPANY),      # False
    ]
    assert portal.can_many(questions) == [True, False, True, False]
    assert portal.can_many(questions, "execute_all") == [True, False, True, False]
    # The service stops at the first deny / permit; what it did not evaluate is a deny.
    assert portal.can_many(questions, "deny_on_first_deny") == [True, False, False, False]
    assert portal.can_many(questions[1:], "permit_on_first_permit") == [False, True, False]
    assert portal.can_many(iter(questions[:1])) == [True]
    assert portal.can_many([]) == []
    with pytest.raises(ValueError):
        portal.can_many(questions, "first_one_wins")


# ---- searches and explanations ----------------------------------------------------------------


def test_clients_follows_the_pages(live, portal):
    # One item a page: the manager's two client companies take two pages.
    first = httpx.post(f"{live.base_url}/access/v1/search/resource", headers={"Authorization": f"Bearer {live.portal_key}"},
                       json={"subject": {"type": "user", "id": demo.MANAGER}, "action": {"name": "compte"},
                             "resource": {"type": "company"}, "page": {"limit": 1}})
    assert first.status_code == 200, first.text
    assert first.json()["page"]["count"] == 1 and first.json()["page"]["next_token"], "one page must not hold both"

    expected = sorted([demo.COMPANY, demo.SECOND_COMPANY])
    assert portal.clients(demo.MANAGER, "compte", page_size=1) == expected
    assert portal.clients(demo.MANAGER, "compte") == expected
    assert portal.clients(demo.MANAGER, "attestations", page_size=1) == [demo.SECOND_COMPANY]
    assert portal.clients(CHLOE, "declarations", page_size=1) == [demo.COMPANY]
    assert portal.clients(STRANGER, "compte", page_size=1) == []


def test_subjects_and_actions(portal):
    assert portal.subjects(demo.COMPANY, "declarations", page_size=1) == [demo.ADMIN, demo.MANAGER, CHLOE]
    assert portal.subjects(demo.COMPANY, "salaries", page_size=2) == [demo.ADMIN, demo.MANAGER, DAMIEN]
    assert portal.actions(CHLOE, demo.COMPANY, page_size=1) == ["compte", "declarations"]
    assert portal.actions(demo.MANAGER, demo.SECOND_COMPANY) == ["attestations", "compte"]
    assert portal.actions(STRANGER, demo.COMPANY) == []


def test_explain_gives_the_chain_or_the_broken_link(portal):
    allowed = portal.explain(CHLOE, "declarations", demo.COMPANY)
    assert allowed["decision"] is True
    assert [link["kind"] for link in allowed["chain"]] == ["company", "delegation", "grant"]
    assert all(link["holds"] for link in allowed["chain"]) and allowed["broken"] is None

    denied = portal.explain(CHLOE, "salaries", demo.COMPANY)
    assert denied["decision"] is False
    assert denied["broken"]["kind"] == "grant" and denied["broken"]["detail"] == "grant_out_of_scope"


# ---- management ------------------------------------------------------------------------------

_people = itertools.count(1)


def test_management_round_trip(live, portal):
    """designate -> activate -> grant -> decide -> revoke -> decide false, all through the client."""
    n = next(_people)
    company, firm = siret(5_0000_0000_0000 + n), siret(6_0000_0000_0000 + n)
    admin, manager, collab = f"admin@co-{n}.example", f"manager@firm-{n}.example", f"collab@firm-{n}.example"
    request_id = f"client-e2e-{uuid.uuid4().hex}"

    registered = portal.register_company(company, "Couverture Petit", admin, request_id=request_id)
    assert registered["admins"] == [admin]
    assert portal.get_company(company, acting_user=admin)["siret"] == company
    assert portal.add_admin(company, f"second@co-{n}.example", acting_user=admin)["admins"] == sorted(
        [admin, f"second@co-{n}.example"])
    assert portal.remove_admin(company, f"second@co-{n}.example", acting_user=admin)["admins"] == [admin]

    # The company's admin designates the firm for four rights; nothing until it is activated.
    designation = portal.designate(company, manager, ["salaries", "declarations", "cotisations", "compte"],
                                   acting_user=admin)
    assert designation["status"] == "pending"
    assert designation["scope"] == ["compte", "cotisations", "declarations", "salaries"]
    assert portal.can(manager, "declarations", company) is False
    assert [d["id"] for d in portal.list_delegations(company, acting_user=admin)] == [designation["id"]]

    activated = portal.activate(designation["activation"]["token"], firm, "Cabinet Petit", acting_user=manager)
    assert activated["status"] == "active" and activated["firm"] == firm
    assert portal.can(manager, "declarations", company) is True
    assert portal.can(manager, "conges", company) is False
    assert [(c["siret"], c["scope"]) for c in portal.firm_clients(firm, acting_user=manager)] == [
        (company, ["compte", "cotisations", "declarations", "salaries"])]
    assert portal.clients(manager, "salaries") == [company]

    # The manager brings a collaborator in and grants two of the firm's rights.
    portal.add_collaborator(firm, collab, acting_user=manager)
    assert [c["email"] for c in portal.collaborators(firm, acting_user=manager)] == [collab]
    assert portal.can(collab, "declarations", company) is False
    granted = portal.grant(firm, collab, company, ["declarations", "compte"], acting_user=manager)
    assert (granted["status"], granted["scope"]) == ("active", ["compte", "declarations"])
    assert portal.can(collab, "declarations", company) is True
    assert portal.can_many([(collab, "compte", company), (collab, "salaries", company)]) == [True, False]
    assert portal.get_grant(granted["id"], acting_user=manager)["scope"] == ["compte", "declarations"]

    # Narrowing the grant and the delegation takes effect at once.
    assert portal.change_grant(granted["id"], scope=["declarations"], acting_user=manager)["scope"] == ["declarations"]
    assert portal.can(collab, "compte", company) is False
    changed = portal.change_delegation(designation["id"], scope=["compte", "salaries"],
                                       ends_at="2099-01-01T00:00:00+00:00", acting_user=admin)
    assert changed["scope"] == ["compte", "salaries"] and changed["ends_at"].startswith("2099-01-01")
    assert portal.can(collab, "declarations", company) is False, "the firm no longer holds it"
    assert portal.change_delegation(designation["id"], scope=["compte", "declarations", "salaries"], ends_at=None,
                                    acting_user=admin)["ends_at"] is None
    assert portal.can(collab, "declarations", company) is True
    assert portal.get_delegation(designation["id"], acting_user=admin)["scope"] == ["compte", "declarations", "salaries"]

    # Revoking the grant ends the collaborator's access; revoking the delegation the firm's.
    assert portal.revoke_grant(granted["id"], acting_user=manager)["status"] == "revoked"
    assert portal.can(collab, "declarations", company) is False
    assert portal.can(manager, "declarations", company) is True
    regranted = portal.grant(firm, collab, company, ["compte"], acting_user=manager)
    removed = portal.remove_collaborator(firm, collab, acting_user=manager)
    assert removed["grants_revoked"] == [regranted["id"]]
    assert portal.can(collab, "compte", company) is False
    assert portal.revoke_delegation(designation["id"], acting_user=admin)["status"] == "revoked"
    assert portal.can(manager, "declarations", company) is False
    assert portal.clients(manager, "declarations") == []

    # The audit trail names the request id the portal sent.
    audit = portal.audit(company=company, acting_user=admin)
    assert [r["request_id"] for r in audit["records"] if r["action"] == "company.register"] == [request_id]
    with AuthzClient(live.base_url, live.admin_key) as admin_client:
        page = admin_client.audit(company=company, limit=2)
        assert len(page["records"]) == 2 and page["next_after"] == page["records"][-1]["id"]


def test_the_default_acting_user_and_per_call_override(live):
    with AuthzClient(live.base_url, live.portal_key, acting_user=demo.ADMIN) as client:
        assert client.get_company(demo.COMPANY)["admins"] == [demo.ADMIN]
        with pytest.raises(AuthzClientError) as refused:
            client.get_company(demo.COMPANY, acting_user=STRANGER)
        assert refused.value.status in (403, 404)


def test_refusals_are_typed_errors_from_the_envelope(live, portal):
    with pytest.raises(AuthzClientError) as beyond:
        portal.grant(demo.FIRM, CHLOE, demo.COMPANY, ["attestations", "compte"], acting_user=demo.MANAGER)
    assert beyond.value.status == 403
    assert beyond.value.code == "scope_exceeds_firm"
    assert beyond.value.details["exceeding"] == ["attestations"]
    assert beyond.value.message

    with pytest.raises(AuthzClientError) as last:
        portal.remove_admin(demo.COMPANY, demo.ADMIN, acting_user=demo.ADMIN)
    assert (last.value.status, last.value.code) == (409, "last_admin")

    with pytest.raises(AuthzClientError) as missing:
        portal.get_delegation("no-such-delegation", acting_user=demo.ADMIN)
    assert missing.value.status == 404

    with pytest.raises(AuthzClientError) as unnamed:
        portal.list_delegations(demo.COMPANY)
    assert (unnamed.value.status, unnamed.value.code) == (400, "acting_user_required")

    with pytest.raises(AuthzClientError) as invalid:
        portal.register_company("12345678901234", "Nope", "not-an-email")
    assert invalid.value.status == 400 and {"siret", "admin_email"} <= set(invalid.value.details)

    with pytest.raises(AuthzClientError) as token:
        portal.activate("no-such-token", demo.FIRM, "Cabinet Legrand", acting_user=demo.MANAGER)
    assert token.value.status == 404

    with AuthzClient(live.base_url, live.pep_key) as pep, pytest.raises(AuthzClientError) as role:
        pep.get_company(demo.COMPANY, acting_user=demo.ADMIN)
    assert (role.value.status, role.value.code) == (403, "forbidden")

    with AuthzClient(live.base_url, "not-a-key") as stranger:
        with pytest.raises(AuthzClientError) as unknown:
            stranger.clients(demo.MANAGER, "compte")
        assert unknown.value.status == 401
        assert stranger.can(CHLOE, "declarations", demo.COMPANY) is False, "an unknown key decides nothing"


# ---- failing closed ------------------------------------------------------------------------------

ASK = (CHLOE, "declarations", demo.COMPANY)


def _fails_closed(client: AuthzClient, caplog) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="authz.client"):
        assert client.can(*ASK) is False
        assert client.can_many([ASK, ASK]) == [False, False]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2, caplog.text


def test_fails_closed_on_a_closed_port(caplog):
    with AuthzClient(f"http://127.0.0.1:{free_port()}", "any-key", retries=1) as client:
        _fails_closed(client, caplog)
        with pytest.raises(AuthzClientError) as down:
            client.designate(demo.COMPANY, demo.MANAGER, ["compte"], acting_user=demo.ADMIN)
        assert (down.value.status, down.value.code) == (None, "unavailable")
        with pytest.raises(AuthzClientError):
            client.clients(demo.MANAGER, "compte")


def test_fails_closed_once_the_server_is_stopped(live, tmp_path, caplog):
    """A second server on the same database: it answers, then it is stopped."""
    second = Server(live.cli.env, live.cli.cwd, tmp_path / "second.log", workers=1).start()
    try:
        with AuthzClient(second.base_url, live.portal_key) as client:
            assert client.can(*ASK) is True
            second.stop()
            _fails_closed(client, caplog)
    finally:
        second.stop()


@pytest.mark.parametrize(("status", "body"), [
    (503, {"decision": True}),                            # unavailable, whatever the body says
    (500, {"evaluations": [{"decision": True}] * 2}),
    (503, {"error": {"code": "unavailable", "message": "down", "details": {}}}),
    (200, "<html>proxy error</html>"),                     # not JSON
    (200, ""),
    (200, {"decision": "true"}),                           # not a boolean
    (200, {"decision": 1}),
    (200, {"allowed": True}),
    (200, {"evaluations": [{"decision": "yes"}] * 2}),     # batch answers that are not booleans
    (302, {"decision": True}),                             # redirects are not followed
], ids=lambda value: str(value)[:30])
def test_fails_closed_on_errors_and_garbage(status, body, caplog):
    with stand_in(status, body) as (url, seen), AuthzClient(url, "any-key") as client:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="authz.client"):
            assert client.can(*ASK) is False
            assert client.can_many([ASK, ASK]) == [False, False]
        assert len(caplog.records) == 2
        assert len(seen.requests) == 2, "an answered request is never retried"


def test_a_batch_answer_longer_than_the_questions_fails_closed(caplog):
    with stand_in(200, {"evaluations": [{"decision": True}] * 3}) as (url, _), AuthzClient(url, "k") as client:
        assert client.can_many([ASK, ASK]) == [False, False]


def test_fails_closed_on_timeout(caplog):
    with stand_in(200, {"decision": True}, delay=2.0) as (url, seen), \
            AuthzClient(url, "any-key", timeout=0.3) as client:
        started = time.monotonic()
        assert client.can(*ASK) is False
        assert time.monotonic() - started < 1.5
        assert len(seen.requests) == 1, "a sent request is never retried"
        with pytest.raises(AuthzClientError) as slow:
            client.explain(*ASK)
        assert (slow.value.status, slow.value.code) == (None, "timeout")


def test_management_calls_are_not_retried_once_sent(caplog):
    envelope = {"error": {"code": "unavailable", "message": "the database is unreachable", "details": {"db": "down"}}}
    with stand_in(503, envelope) as (url, seen), AuthzClient(url, "portal-key", retries=3) as client:
        with pytest.raises(AuthzClientError) as refused:
            client.grant(demo.FIRM, CHLOE, demo.COMPANY, ["compte"], acting_user=demo.MANAGER, request_id="req-42")
        assert (refused.value.status, refused.value.code, refused.value.details) == (503, "unavailable", {"db": "down"})
        assert len(seen.requests) == 1
        method, path, headers, _ = seen.requests[0]
        assert (method, path) == ("POST", f"/v1/firms/{demo.FIRM}/grants")
        assert headers["Authorization"] == "Bearer portal-key"
        assert headers["Acting-User"] == demo.MANAGER
        assert headers["X-Request-ID"] == "req-42"

    with stand_in(502, "Bad Gateway", content_type="text/plain") as (url, seen), AuthzClient(url, "k") as client:
        with pytest.raises(AuthzClientError) as gateway:
            client.revoke_grant("g1", acting_user=demo.MANAGER)
        assert (gateway.value.status, gateway.value.code) == (502, "unexpected_response")
        assert [(m, p) for m, p, _, _ in seen.requests] == [("DELETE", "/v1/grants/g1")]


def test_connection_failures_are_retried(caplog):
    """Nothing listens at first; the server comes up while the client retries the connection."""
    port = free_port()
    ready = threading.Event()
    done = threading.Event()

    def late_server():
        time.sleep(0.2)
        with stand_in(200, {"decision": True}, port=port):
            ready.set()
            done.wait(10)

    thread = threading.Thread(target=late_server, daemon=True)
    thread.start()
    try:
        with AuthzClient(f"http://127.0.0.1:{port}", "k", retries=4) as client:
            assert client.can(*ASK) is True
        assert ready.is_set()
    finally:
        done.set()
        thread.join(5)
