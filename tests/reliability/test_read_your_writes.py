"""Read your writes across processes: two `authz serve` processes (2 workers each) on one
PostgreSQL database. Once one process has answered a narrowing, a grant revocation or a
revocation, the very next decision in the other process, and each of the following ones
(asked on new connections, so every worker answers some), is false, though every worker
had the allow in its answer cache just before.

The database is on a private PostgreSQL server (tests/reliability/private_postgres.py).
Run with -s to see the figures RELIABILITY.md quotes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from authz.demo import ADMIN, COMPANY
from tests.e2e.harness import Api, Cli, Reply, Server, environment
from tests.support import siret

ROUNDS = 20
ASKS = 20  # decisions asked right after each change, each on a new connection
WARM_ASKS = 10  # the same, just before the change: the allow in the cache of both workers
DOMAIN = "ryw.example"


@pytest.fixture(scope="module")
def servers(private_postgres, tmp_path_factory) -> Iterator[tuple[Server, Server, str]]:
    """Processes A and B on one database holding the demo story, and a portal key."""
    workdir = tmp_path_factory.mktemp("read-your-writes")
    cli = Cli(environment(private_postgres.url(private_postgres.create_database("authz_ryw"))), workdir)
    cli.ok("db", "upgrade")
    key = cli.create_key("portal", "ryw-portal")
    cli.ok("demo")
    a = Server(cli.env, workdir, workdir / "a.log", workers=2)
    b = Server(cli.env, workdir, workdir / "b.log", workers=2)
    try:
        a.start()
        b.start()
        yield a, b, key
    finally:
        a.stop()
        b.stop()


def decide(api: Api, user: str, right: str) -> bool:
    return api.decide(user, right, COMPANY)  # asserts a 200


def asked(api: Api, user: str, right: str, times: int = ASKS) -> Counter:
    """``times`` decisions for (user, right, COMPANY), each on a new connection, a few at a time."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return Counter(pool.map(lambda _: decide(api, user, right), range(times)))


def created(reply, status: int = 201) -> dict:
    assert reply.status == status, f"{reply.status} {reply.body}"
    return reply.body


def set_up(writer: Api, n: int) -> tuple[str, str, str, str]:
    """Round ``n``: a new firm designated for declarations and compte on COMPANY, activated,
    with a collaborator granted both. Return (manager, collaborator, delegation id, grant id)."""
    firm, manager, collaborator = siret(3_0000_0000_0000 + n), f"m{n}@{DOMAIN}", f"c{n}@{DOMAIN}"
    designation = created(writer.post(f"/v1/companies/{COMPANY}/delegations",
                                       {"manager_email": manager, "scope": ["declarations", "compte"]}, user=ADMIN))
    delegation = created(writer.post("/v1/activations", {"token": designation["activation"]["token"],
                                                         "firm_siret": firm, "firm_name": f"Cabinet {n}"},
                                     user=manager), 200)
    created(writer.post(f"/v1/firms/{firm}/collaborators", {"email": collaborator}, user=manager))
    grant = created(writer.post(f"/v1/firms/{firm}/grants", {"collaborator": collaborator, "company": COMPANY,
                                                             "scope": ["declarations", "compte"]}, user=manager))
    return manager, collaborator, delegation["id"], grant["id"]


def change(reader: Api, n: int, figures: Counter, kind: str, write: Callable[[], Reply],
           checks: list[tuple[str, str, bool]]) -> None:
    """Warm every worker of ``reader`` with the allows in ``checks``, make the change through
    the other process, then ask ``reader``: the very next decision and the ones after."""
    for who, right, _ in checks:
        assert asked(reader, who, right, WARM_ASKS) == Counter({True: WARM_ASKS}), f"round {n}: {who} {right} before {kind}"
        figures["allows asked before a change"] += WARM_ASKS
    reply = write()
    assert reply.status == 200, f"round {n}: {kind} answered {reply.status} {reply.body}"
    figures[kind] += 1
    for who, right, expected in checks:
        first = decide(reader, who, right)  # the very next decision in the other process
        seen = asked(reader, who, right, ASKS - 1) + Counter({first: 1})
        figures["decisions asked right after a change"] += ASKS
        figures["stale answers"] += seen[not expected]
        assert first is expected, f"round {n}: the first decision after {kind} for {who} {right} was {first}"
        assert seen == Counter({expected: ASKS}), f"round {n}: after {kind}, {who} {right}: {seen}"


def test_a_change_answered_by_one_process_holds_at_once_in_every_worker_of_the_other(servers):
    a, b, key = servers
    figures: Counter = Counter()
    for n in range(ROUNDS):
        # Even rounds write through A and read through B; odd rounds the other way round.
        writer, reader = (Api(a.base_url, key), Api(b.base_url, key))[:: 1 if n % 2 == 0 else -1]
        manager, collaborator, delegation, grant = set_up(writer, n)
        # Narrow the firm to compte: the manager and, along the chain, the collaborator lose declarations.
        change(reader, n, figures, "narrowing",
               partial(writer.patch, f"/v1/delegations/{delegation}", {"scope": ["compte"]}, user=ADMIN),
               [(manager, "declarations", False), (collaborator, "declarations", False)])
        assert decide(reader, manager, "compte") and decide(reader, collaborator, "compte")
        # The firm revokes the collaborator's grant.
        change(reader, n, figures, "grant revocation", partial(writer.delete, f"/v1/grants/{grant}", user=manager),
               [(collaborator, "compte", False)])
        # The company revokes the firm's delegation.
        change(reader, n, figures, "revocation", partial(writer.delete, f"/v1/delegations/{delegation}", user=ADMIN),
               [(manager, "compte", False)])

    print(f"\n[read your writes] 2 x `authz serve --workers 2` on one PostgreSQL database, {ROUNDS} rounds "
          f"(writes alternately through each process, decisions through the other): "
          f"{figures['narrowing']} narrowings, {figures['grant revocation']} grant revocations, "
          f"{figures['revocation']} revocations; {figures['allows asked before a change']} allows asked before "
          f"the changes (cache warm in every worker), {figures['decisions asked right after a change']} decisions "
          f"asked right after them, each on a new connection; stale answers: {figures['stale answers']}")
    assert figures["stale answers"] == 0
