"""A third-party AuthZEN 1.0 client, used unmodified, against a live `authz serve`.

The client is `apparitor` (PyPI, pinned in the `test` extra): its `AuthZENClient` is a
generic AuthZEN Access Evaluation client (pydantic models of the 1.0 wire format,
`POST /access/v1/evaluation` and `POST /access/v1/evaluations` with
`options.evaluations_semantic`), and its `AuthorizationEngine` the fail-closed layer
agent firewalls put on top of it. Nothing of it is patched or subclassed here.

Wiring, through the library's own options only:
- `ScannerConfig(pdp_url=..., allow_insecure_pdp=True)`: the library refuses plain-HTTP
  and loopback PDP URLs unless told it is local development, which this is.
- The API key: apparitor has no `token` option; its documented way to send credentials
  is a bring-your-own `httpx.AsyncClient` (`http_client=`) carrying
  `Authorization: Bearer <key>`. Its `default_headers` option works as well and is
  checked once below.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from apparitor import (
    Action,
    AuthZENClientError,
    BatchEvaluationRequest,
    EvaluationItem,
    EvaluationRequest,
    EvaluationSemantic,
    EvaluationsOptions,
    PDPUnavailableError,
    Resource,
    ScannerConfig,
    Subject,
    Verdict,
    build_backend,
)
from apparitor.engine import build_engine

from authz import demo
from tests.e2e.harness import Server
from tests.e2e.live import Live, demo_server

CHLOE = "chloe@legrand.example"    # declarations, compte on demo.COMPANY
DAMIEN = "damien@legrand.example"  # salaries, conges on demo.COMPANY


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Live:
    with demo_server(tmp_path_factory.mktemp("authzen-client-e2e")) as running:
        yield running


def config(base_url: str, **options) -> ScannerConfig:
    return ScannerConfig(pdp_url=base_url, allow_insecure_pdp=True, **options)


def bearer(key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"})


def user(email: str) -> Subject:
    return Subject(type="user", id=email)


def company(siret: str) -> Resource:
    return Resource(type="company", id=siret)


def question(email: str, right: str, siret: str) -> EvaluationRequest:
    return EvaluationRequest(subject=user(email), action=Action(name=right), resource=company(siret))


def run(coroutine_function, base_url: str, key: str | None, **options):
    """Build apparitor's AuthZEN backend with the key, run ``coroutine_function(backend)``, close."""
    async def main():
        http = bearer(key) if key else httpx.AsyncClient()
        async with http:
            backend = build_backend(config(base_url, **options), http_client=http)
            return await coroutine_function(backend)
    return asyncio.run(main())


def test_single_evaluation(live):
    async def ask(backend):
        return [await backend.evaluate(question(*q)) for q in [
            (CHLOE, "declarations", demo.COMPANY),
            (CHLOE, "salaries", demo.COMPANY),
            (demo.MANAGER, "attestations", demo.SECOND_COMPANY),
            ("eve@nowhere.example", "compte", demo.COMPANY),
        ]]

    allowed, denied, manager, stranger = run(ask, live.base_url, live.portal_key)
    assert allowed.decision is True
    assert allowed.context["reason"] == "collaborator_grant"
    assert denied.decision is False, "a deny is a 200 with decision false, not an error"
    assert manager.decision is True
    assert stranger.decision is False


def test_a_pep_key_and_the_default_headers_option(live):
    async def ask(backend):
        return await backend.evaluate(question(DAMIEN, "conges", demo.COMPANY))

    # default_headers is apparitor's static-header option; the client builds its own httpx client.
    async def main():
        backend = build_backend(config(live.base_url, default_headers={"Authorization": f"Bearer {live.pep_key}"}))
        try:
            return await ask(backend)
        finally:
            await backend.aclose()

    assert asyncio.run(main()).decision is True


def test_batch_evaluations_with_defaults_and_semantics(live):
    # Top-level subject and resource are defaults; an item may replace them.
    batch = dict(
        subject=user(CHLOE),
        resource=company(demo.COMPANY),
        evaluations=[
            EvaluationItem(action=Action(name="declarations")),                       # True
            EvaluationItem(action=Action(name="salaries")),                           # False
            EvaluationItem(subject=user(DAMIEN), action=Action(name="salaries")),     # True
            EvaluationItem(action=Action(name="compte"), resource=company(demo.SECOND_COMPANY)),  # False
        ],
    )

    async def ask(backend):
        answers = {}
        answers[None] = await backend.evaluate_batch(BatchEvaluationRequest(**batch))
        for semantic in EvaluationSemantic:
            answers[semantic] = await backend.evaluate_batch(
                BatchEvaluationRequest(**batch, options=EvaluationsOptions(evaluations_semantic=semantic)))
        return {key: [item.decision for item in value.evaluations] for key, value in answers.items()}

    decisions = run(ask, live.base_url, live.portal_key)
    assert decisions[None] == [True, False, True, False]
    assert decisions[EvaluationSemantic.EXECUTE_ALL] == [True, False, True, False]
    assert decisions[EvaluationSemantic.DENY_ON_FIRST_DENY] == [True, False]
    assert decisions[EvaluationSemantic.PERMIT_ON_FIRST_PERMIT] == [True]


def test_the_engine_gives_verdicts(live):
    """apparitor's AuthorizationEngine: one request goes to evaluation, several to evaluations."""
    async def main():
        async with bearer(live.portal_key) as http:
            engine = build_engine(config(live.base_url), http_client=http)
            return (
                await engine.evaluate_requests([question(CHLOE, "declarations", demo.COMPANY)]),
                await engine.evaluate_requests([question(CHLOE, "salaries", demo.COMPANY)]),
                await engine.evaluate_requests([question(CHLOE, "declarations", demo.COMPANY),
                                                question(CHLOE, "compte", demo.COMPANY)]),
                await engine.evaluate_requests([question(CHLOE, "declarations", demo.COMPANY),
                                                question(CHLOE, "salaries", demo.COMPANY)]),
            )

    single_allow, single_deny, batch_allow, batch_deny = asyncio.run(main())
    assert single_allow.verdict is Verdict.ALLOW
    assert single_deny.verdict is Verdict.BLOCK
    assert batch_allow.verdict is Verdict.ALLOW
    assert batch_deny.verdict is Verdict.BLOCK


def test_without_a_key_the_client_reports_401(live):
    async def ask(backend):
        return await backend.evaluate(question(CHLOE, "declarations", demo.COMPANY))

    with pytest.raises(AuthZENClientError) as refused:
        run(ask, live.base_url, None)
    assert refused.value.status_code == 401
    with pytest.raises(AuthZENClientError) as unknown:
        run(ask, live.base_url, "not-a-key")
    assert unknown.value.status_code == 401


def test_an_incomplete_question_is_a_400_to_the_client(live):
    async def ask(backend):
        # A batch item without an action and no default: the service answers 400.
        return await backend.evaluate_batch(BatchEvaluationRequest(
            subject=user(CHLOE), resource=company(demo.COMPANY),
            evaluations=[EvaluationItem(action=Action(name="compte")), EvaluationItem()]))

    with pytest.raises(AuthZENClientError) as refused:
        run(ask, live.base_url, live.portal_key)
    assert refused.value.status_code == 400


def test_the_engine_blocks_when_the_server_is_gone(live, tmp_path):
    second = Server(live.cli.env, live.cli.cwd, tmp_path / "second.log", workers=1).start()
    ask = [question(CHLOE, "declarations", demo.COMPANY)]

    async def verdict():
        async with bearer(live.portal_key) as http:
            engine = build_engine(config(second.base_url, max_retries=0), http_client=http)
            return await engine.evaluate_requests(ask)

    async def raw():
        async with bearer(live.portal_key) as http:
            return await build_backend(config(second.base_url, max_retries=0), http_client=http).evaluate(ask[0])

    try:
        assert asyncio.run(verdict()).verdict is Verdict.ALLOW
        second.stop()
        assert asyncio.run(verdict()).verdict is Verdict.BLOCK
        with pytest.raises(PDPUnavailableError):
            asyncio.run(raw())
    finally:
        second.stop()
