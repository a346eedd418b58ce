"""Fixtures for the HTTP contract tests: the app on the test database, one API key per
role, a client that refuses any 5xx, and the story helpers (register, designate,
activate, add a collaborator, grant) that go through the HTTP API itself."""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from flask.testing import FlaskClient

from authz import tokens
from service.app import create_app
from tests.support import ADMIN, CABINET, COLLAB, DUPONT, MANAGER, MARTIN, OTHER_ADMIN

# One secret per key role; the keys are stored by the fixtures, never shipped.
SECRETS = {
    "pep": "test-pep-key-0f3a9c",
    "portal": "test-portal-key-7b21d4",
    "admin": "test-admin-key-5e88aa",
}

# Every right of the policy, in the policy's order; FIRM_SCOPE is what DUPONT hands CABINET.
RIGHTS = ["declarations", "cotisations", "compte", "salaries", "conges", "intemperies", "attestations", "entreprise"]
FIRM_SCOPE = ["compte", "conges", "cotisations", "declarations", "salaries"]
COLLAB_SCOPE = ["compte", "declarations"]

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_UNSET = object()


class CheckedClient(FlaskClient):
    """A test client that fails the test on any 5xx: no input ever yields a 500."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        assert response.status_code < 500, (
            f"server error {response.status_code}: {response.get_data(as_text=True)[:2000]}"
        )
        return response


@pytest.fixture
def app(db, clock):
    url = db.engine.url.render_as_string(hide_password=False)
    app = create_app({"AUTHZ_DATABASE_URL": url, "TESTING": True}, clock=clock)
    app.test_client_class = CheckedClient
    yield app
    app.extensions["authz"].db.dispose()


@pytest.fixture
def keys(db, clock) -> dict[str, str]:
    """Store one API key of each role; return role -> secret."""
    with db.transaction() as tx:
        for role, secret in SECRETS.items():
            tx.insert_api_key(f"test-{role}", role, tokens.digest(secret), clock())
    return dict(SECRETS)


@pytest.fixture
def client(app) -> CheckedClient:
    return app.test_client()


@pytest.fixture
def api(client, keys) -> Api:
    return Api(client, keys)


@pytest.fixture
def story(api) -> SimpleNamespace:
    """DUPONT (admin ADMIN) delegates FIRM_SCOPE to CABINET (manager MANAGER), whose
    collaborator COLLAB holds COLLAB_SCOPE on DUPONT; MARTIN (admin OTHER_ADMIN) is
    registered and linked to nothing."""
    api.register_company(DUPONT, "Maçonnerie Dupont", ADMIN)
    api.register_company(MARTIN, "Charpente Martin", OTHER_ADMIN)
    delegation = api.delegate(DUPONT, ADMIN, MANAGER, CABINET, FIRM_SCOPE)
    api.add_collaborator(CABINET, MANAGER, COLLAB)
    grant = api.grant(CABINET, MANAGER, COLLAB, DUPONT, COLLAB_SCOPE)
    return SimpleNamespace(delegation=delegation, grant=grant)


@dataclass
class Api:
    """Calls the service as the portal would; helpers assert the story's happy path."""

    client: CheckedClient
    keys: dict[str, str]

    def call(self, method: str, path: str, *, key: str | None = "portal", user: str | None = None,
             json=_UNSET, data: bytes | str | None = None, headers: dict | None = None,
             content_type: str | None = None, query: dict | None = None):
        """Send one request: ``key`` is a role (None: no Authorization), ``user`` the Acting-User."""
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {self.keys[key]}"
        if user is not None:
            sent["Acting-User"] = user
        kwargs: dict = {"headers": sent}
        if json is not _UNSET:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
            kwargs["content_type"] = content_type or "application/json"
        if query is not None:
            kwargs["query_string"] = query
        return self.client.open(path, method=method, **kwargs)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, **kw):
        return self.call("POST", path, **kw)

    def patch(self, path, **kw):
        return self.call("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    # ---- the story through the API ------------------------------------------------------

    def register_company(self, siret: str, name: str, admin: str, **kw) -> dict:
        response = self.post("/v1/companies", json={"siret": siret, "name": name, "admin_email": admin}, **kw)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def designate(self, company: str, admin: str, manager: str, scope: list[str], ends_at: str | None = None,
                  **kw) -> dict:
        body = {"manager_email": manager, "scope": scope}
        if ends_at is not None:
            body["ends_at"] = ends_at
        response = self.post(f"/v1/companies/{company}/delegations", user=admin, json=body, **kw)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def activate(self, token: str, manager: str, firm: str, firm_name: str = "Cabinet Legrand") -> dict:
        response = self.post("/v1/activations", user=manager,
                             json={"token": token, "firm_siret": firm, "firm_name": firm_name})
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def delegate(self, company: str, admin: str, manager: str, firm: str, scope: list[str],
                 ends_at: str | None = None) -> dict:
        """Designate then activate: the firm holds ``scope`` on ``company``."""
        designation = self.designate(company, admin, manager, scope, ends_at)
        return self.activate(designation["activation"]["token"], manager, firm)

    def add_collaborator(self, firm: str, manager: str, email: str) -> dict:
        response = self.post(f"/v1/firms/{firm}/collaborators", user=manager, json={"email": email})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def grant(self, firm: str, manager: str, collaborator: str, company: str, scope: list[str],
              ends_at: str | None = None) -> dict:
        body = {"collaborator": collaborator, "company": company, "scope": scope}
        if ends_at is not None:
            body["ends_at"] = ends_at
        response = self.post(f"/v1/firms/{firm}/grants", user=manager, json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def decide(self, user: str, right: str, company: str, key: str = "pep") -> bool:
        """Ask the evaluation endpoint; return the decision."""
        response = self.post("/access/v1/evaluation", key=key, json=question(user, right, company))
        assert response.status_code == 200, response.get_json()
        return response.get_json()["decision"]


def question(user: str, right: str, company: str) -> dict:
    """An AuthZEN evaluation body."""
    return {
        "subject": {"type": "user", "id": user},
        "action": {"name": right},
        "resource": {"type": "company", "id": company},
    }


def assert_error(response, status: int, *fields: str, code: str | None = None) -> dict:
    """Check the error envelope; every name in ``fields`` must appear in details."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:2000])
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]), error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], dict), error
    for field in fields:
        assert field in error["details"], (field, error)
    if code is not None:
        assert error["code"] == code, error
    return error


def assert_time(value) -> None:
    assert isinstance(value, str) and RFC3339.match(value), f"not RFC 3339 with offset: {value!r}"


def assert_link_body(body: dict, status: str) -> None:
    """A delegation or grant body: id, status, sorted scope, RFC 3339 times."""
    for field in ("id", "status", "scope", "created_at", "ends_at"):
        assert field in body, (field, body)
    assert isinstance(body["id"], str) and body["id"]
    assert body["status"] == status, body
    assert isinstance(body["scope"], list) and body["scope"] == sorted(body["scope"]), body
    assert_time(body["created_at"])
    if body["ends_at"] is not None:
        assert_time(body["ends_at"])


class Renamed:
    """The engine in service under another version, as after a reload."""

    def __init__(self, engine, version: str):
        self._engine, self.version = engine, version

    def __getattr__(self, name):
        return getattr(self._engine, name)
