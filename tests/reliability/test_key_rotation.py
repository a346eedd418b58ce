"""Key rotation as docs/operations.md describes it, on a running `authz serve --workers 2`:
create the new key, move the portal to it, `authz keys revoke OLD`. And what happens
when a portal is forgotten and keeps calling with the old key from the same address as
everyone else (as behind a load balancer): the guessing throttle (service/throttle.py)
counts addresses, so that address is refused (429) whatever key it sends.

Run with -s to see the figures RELIABILITY.md quotes.
"""

from __future__ import annotations

from collections import Counter

from authz.demo import ADMIN, COMPANY
from tests.e2e.harness import Api, Cli, Server, environment

ASKS = 20
LIMIT = 5  # AUTHZ_GUESS_LIMIT for this server (default 20), per worker and window
WINDOW = 60


def evaluate(api: Api):
    return api.post("/access/v1/evaluation", {"subject": {"type": "user", "id": ADMIN},
                                              "action": {"name": "declarations"},
                                              "resource": {"type": "company", "id": COMPANY}})


def test_rotate_a_portal_key_then_a_forgotten_portal_on_the_old_key(tmp_path):
    cli = Cli(environment(f"sqlite:///{tmp_path / 'authz.sqlite3'}", AUTHZ_GUESS_LIMIT=str(LIMIT),
                          AUTHZ_GUESS_WINDOW_SECONDS=str(WINDOW)), tmp_path)
    cli.ok("db", "upgrade")
    old = cli.create_key("portal", "portal-2025")
    cli.ok("demo")
    server = Server(cli.env, tmp_path, tmp_path / "server.log", workers=2)
    try:
        server.start()
        old_api = Api(server.base_url, old)
        assert all(old_api.decide(ADMIN, "declarations", COMPANY) for _ in range(ASKS))

        new = cli.create_key("portal", "portal-2026")  # 1. create; 2. deploy to the portals
        new_api = Api(server.base_url, new)
        both = Counter(api.decide(ADMIN, "declarations", COMPANY) for api in (old_api, new_api) for _ in range(ASKS))
        revoked = cli.ok("keys", "revoke", "portal-2025")  # 3. revoke the old one
        after_revoke = Counter(evaluate(old_api).status for _ in range(2 * ASKS))
        # The forgotten portal's calls above were wrong keys from 127.0.0.1: now the new key,
        # from the same address, is refused too until the window passes.
        replies = [evaluate(new_api) for _ in range(ASKS)]
        same_address = Counter(reply.status for reply in replies)
        retry_after = replies[-1].headers.get("retry-after")
    finally:
        server.stop()

    print(f"\n[key rotation] with both keys: {ASKS * 2} decisions, {both[True]} allowed; `authz keys revoke`: "
          f"{revoked.stdout.strip()!r}; then {2 * ASKS} calls with the old key (new connections, both workers): "
          f"{dict(after_revoke)}; then {ASKS} calls with the NEW key from the same address: {dict(same_address)} "
          f"(AUTHZ_GUESS_LIMIT={LIMIT} per worker, window {WINDOW} s, Retry-After {retry_after})")
    assert both == Counter({True: 2 * ASKS})
    assert set(after_revoke) <= {401, 429} and after_revoke[401] >= 1
    assert after_revoke[401] <= 2 * LIMIT  # per worker, then 429
    assert same_address == Counter({429: ASKS}), "the throttle counts addresses, whatever key comes next"
    assert retry_after is not None and 1 <= int(retry_after) <= WINDOW
