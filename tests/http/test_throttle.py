"""Guessing keys or activation links is slowed: after too many wrong tries, 429."""

from __future__ import annotations

from tests.http.conftest import Api, assert_error
from tests.support import MANAGER, RIVAL


def test_wrong_keys_from_one_address_are_refused_for_a_while(api: Api, app):
    limit = app.config["AUTHZ_GUESS_LIMIT"]
    for attempt in range(limit):
        api.keys["wrong"] = f"guess-{attempt}"
        assert_error(api.get("/v1/policy", key="wrong"), 401)

    refused = api.get("/v1/policy", key="admin")  # even a right key, from that address

    assert_error(refused, 429, code="too_many_failures")
    assert int(refused.headers["Retry-After"]) >= 1


def test_wrong_activation_links_count_as_guesses(api: Api, app):
    body = {"firm_siret": RIVAL, "firm_name": "Cabinet Rival"}
    for attempt in range(app.config["AUTHZ_GUESS_LIMIT"]):
        assert_error(api.post("/v1/activations", user=MANAGER, json={"token": f"guess-{attempt}", **body}), 404)

    assert_error(api.post("/v1/activations", user=MANAGER, json={"token": "one-more", **body}), 429)


def test_right_keys_are_never_counted(api: Api, app):
    for _ in range(app.config["AUTHZ_GUESS_LIMIT"] + 5):
        assert api.get("/v1/policy", key="admin").status_code == 200


def test_the_refusal_ends_after_the_window(app):
    from service.throttle import FailureThrottle

    now = [0.0]
    throttle = FailureThrottle(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        throttle.fail("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 60
    assert throttle.retry_after("10.0.0.2") is None
    now[0] = 61.0
    assert throttle.retry_after("10.0.0.1") is None


def test_behind_a_trusted_proxy_each_client_is_counted_on_its_own(db, clock, keys):
    from service.app import create_app

    url = db.engine.url.render_as_string(hide_password=False)
    app = create_app({"AUTHZ_DATABASE_URL": url, "TESTING": True, "AUTHZ_TRUSTED_PROXIES": 1,
                      "AUTHZ_GUESS_LIMIT": 3}, clock=clock)
    client = app.test_client()
    for attempt in range(3):
        client.get("/v1/policy", headers={"Authorization": f"Bearer guess-{attempt}", "X-Forwarded-For": "203.0.113.7"})

    guesser = client.get("/v1/policy", headers={"Authorization": f"Bearer {keys['admin']}", "X-Forwarded-For": "203.0.113.7"})
    honest = client.get("/v1/policy", headers={"Authorization": f"Bearer {keys['admin']}", "X-Forwarded-For": "198.51.100.2"})

    assert guesser.status_code == 429
    assert honest.status_code == 200
    app.extensions["authz"].db.dispose()
