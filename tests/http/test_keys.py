"""API keys are remembered per process only while nothing changed: revocation bites at once."""

from __future__ import annotations

from authz import tokens
from tests.http.conftest import Api, assert_error


def test_a_revoked_key_fails_on_the_very_next_request(api: Api, db, clock):
    assert api.get("/v1/policy", key="admin").status_code == 200  # now remembered by the app
    with db.transaction() as tx:
        assert tx.revoke_api_key("test-admin", clock())

    assert_error(api.get("/v1/policy", key="admin"), 401)


def test_a_new_key_works_on_the_very_next_request(api: Api, db, clock):
    assert api.get("/v1/policy", key="admin").status_code == 200
    with db.transaction() as tx:
        tx.insert_api_key("second-admin", "admin", tokens.digest("second-admin-secret"), clock())
    api.keys["second"] = "second-admin-secret"

    assert api.get("/v1/policy", key="second").status_code == 200
