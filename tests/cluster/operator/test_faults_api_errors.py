"""429 (with Retry-After), 500, 504 and requests left unanswered, on LIST, PATCH, create and
status writes, injected by a fault proxy between the operator and the API server
(:mod:`mlserve_testing.faultproxy`): the API server will not produce them on demand.

Each scenario arms one rule (a verb and a path pattern) that answers every matching request
with the fault for WINDOW seconds from the first (an unanswered request: only the first),
makes the operator need that request (Darwin deploys a new pair, or a user applies an
MLServe), and checks: faults were injected, the operator kept running, retried without a hot
loop (at most MAX_RATE attempts a second on average over the window; the gaps between the
attempts are printed, and compared with Retry-After), and converged once the fault ended:
the sync protocol's invariants hold, nothing lost, nothing duplicated.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from lightkube import Client
from mlserve_testing import darwin
from mlserve_testing.faultproxy import Rule
from mlserve_testing.faults import Ledger, ProxiedOperator, module_namespace, proxied_operator, ready_at_version, record
from mlserve_testing.mlserves import apply, mlserve, unique
from mlserve_testing.operator import StoppableMariaDB
from mlserve_testing.wait import wait_for

from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster, pytest.mark.mariadb]

CONVERGE_WITHIN = 90.0
WINDOW = 6.0
"""Seconds each fault lasts, from its first injection."""
MAX_RATE = 2.0
"""Attempts a second, on average over the window, above which the retries are a hot loop
(a retry after every event of a rolling Deployment stays far below)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    flow: str
    """``darwin``: Darwin deploys a new pair (the sync creates its MLServe); ``startup``: the
    operator starts and Darwin deploys (the sync reads the controller's cache, so MLServes are
    listed only by its informers: when the operator starts, and again after a watch ends with
    410 Gone); ``apply``: a user applies a new MLServe (the reconcile patches it, applies its
    children, writes its status)."""
    verb: str
    path: str
    status: int | None = None
    retry_after: int | None = None
    hang: bool = False


SCENARIOS = [
    Scenario("list-mlserves-429", "startup", "list", r"/mlserves$", status=429, retry_after=5),
    Scenario("list-mlserves-500", "startup", "list", r"/mlserves$", status=500),
    Scenario("list-mlserves-504", "startup", "list", r"/mlserves$", status=504),
    Scenario("create-mlserve-500", "darwin", "create", r"/mlserves$", status=500),
    Scenario("create-mlserve-429", "darwin", "create", r"/mlserves$", status=429, retry_after=5),
    Scenario("patch-mlserve-429", "apply", "patch", r"/mlserves/[^/]+$", status=429, retry_after=5),
    Scenario("patch-mlserve-500", "apply", "patch", r"/mlserves/[^/]+$", status=500),
    Scenario("patch-deployment-500", "apply", "patch", r"/deployments/[^/]+$", status=500),
    Scenario("patch-deployment-429", "apply", "patch", r"/deployments/[^/]+$", status=429, retry_after=5),
    Scenario("status-write-500", "apply", "patch", r"/mlserves/[^/]+/status$", status=500),
    Scenario("status-write-429", "apply", "patch", r"/mlserves/[^/]+/status$", status=429, retry_after=5),
    Scenario("status-write-unanswered", "apply", "patch", r"/mlserves/[^/]+/status$", hang=True),
]


@pytest.fixture(scope="module")
def fault_namespace(kube_client: Client, mlserve_crd: None) -> Iterator[str]:
    yield from module_namespace(kube_client, "api-faults")


@pytest.fixture(scope="module")
def proxied(
    cluster: Any,
    kube_client: Client,
    operator_mariadb: StoppableMariaDB,
    fault_namespace: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxiedOperator]:
    folder = tmp_path_factory.mktemp("api-faults")
    # The operator's client waits 30 s for an answer: an unanswered request costs that much.
    yield from proxied_operator(
        cluster, kube_client, request, operator_mariadb.url, folder, [fault_namespace], name="api-faults"
    )


@pytest.fixture
async def running(proxied: ProxiedOperator, darwin_rows: StoppableMariaDB) -> AsyncIterator[ProxiedOperator]:
    if not proxied.operator.running:
        proxied.operator.start()
    yield proxied
    proxied.proxy.clear()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_the_operator_retries_through_api_errors(
    running: ProxiedOperator, kube_client: Client, fault_namespace: str, scenario: Scenario
) -> None:
    proxy, operator, namespace = running.proxy, running.operator, fault_namespace
    serve, env = unique("af"), unique("prod")
    seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
    pair = Ledger(seed, serve, env, namespace)
    await pair.snapshot()
    starts = operator.starts
    if scenario.flow == "startup":
        operator.stop()
        starts += 1  # this test's own restart, not the operator giving up
    rule = proxy.add(
        Rule(
            scenario.name,
            verb=scenario.verb,
            path=scenario.path,
            status=scenario.status,
            retry_after=scenario.retry_after,
            hang=scenario.hang,
            times=1 if scenario.hang else None,
        )
    )
    began = time.monotonic()
    if scenario.flow == "startup":
        operator.start()
    if scenario.flow in ("darwin", "startup"):
        await pair.darwin_deploy("v1")
        name = names.mlserve_name(serve, env)
    else:
        pair.expected_new = ["v1"]
        name = serve
        apply(kube_client, mlserve(serve, namespace, env, "v1"))
    wait_for(lambda: rule.reached, timeout=90, what=f"the first fault injected ({rule.name})")
    assert rule.first_at is not None
    first = rule.first_at
    # The fault lasts WINDOW seconds: a duration of the fault, not a wait for the operator.
    wait_for(lambda: time.monotonic() - first >= WINDOW, timeout=WINDOW + 5, what="the end of the fault window")
    proxy.remove(rule)
    injected = rule.hits
    took = await pair.converge(
        kube_client, CONVERGE_WITHIN, extra=lambda: ready_at_version(kube_client, name, namespace, "v1")
    )
    converged = time.monotonic() - began
    lost, duplicates, notes = await pair.lost_and_duplicated(kube_client)
    attempts = [
        r.at
        for r in proxy.recorded(scenario.verb, scenario.path, since=began)
        if name in r.path or scenario.verb in ("list", "create")
    ]
    gaps = [b - a for a, b in itertools.pairwise(attempts)][: max(1, injected)]
    honoured = ""
    if scenario.retry_after is not None and gaps:
        kept = min(gaps) >= scenario.retry_after * 0.9
        honoured = f"; Retry-After {scenario.retry_after} s {'honoured' if kept else 'not honoured'}"
    record(
        f"api {scenario.name}",
        injected,
        survived=operator.running and operator.starts == starts and not lost and not duplicates,
        rows_lost=lost,
        duplicates=duplicates,
        converge_seconds=converged,
        note=f"gaps between attempts {[round(g, 1) for g in gaps]} s{honoured}"
        + (f"; {'; '.join(notes)}" if notes else ""),
    )
    assert operator.running, operator.log_tail()
    assert (lost, duplicates) == (0, 0), notes
    assert took <= CONVERGE_WITHIN
    assert injected <= 1 + MAX_RATE * WINDOW, f"{injected} attempts in {WINDOW:g} s: a hot loop ({gaps})"
