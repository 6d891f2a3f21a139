"""Two replicas overlapping during a handover (a rolling update of the operator's Deployment):
the old replica runs and acts; the new one, of a higher priority, starts while Darwin
deploys; then the new one goes and the old one takes over again. Each replica reaches the
API server through a fault proxy of its own, which records what it wrote, so the test can
say which replica wrote what and when.

Only one writes: once the new replica has written anything, the old one starts no more work:
what it writes after that (MLServes, their status, children, Events) can only be the end of a
reconcile it was running when it paused (kopf's peering has no fencing), so it stops within
OVERLAP seconds; the count and the window are printed. Then nothing until the new one is gone.
And the database: each deploy's MLServe follows it, nothing lost, nothing duplicated, no
deployment recorded twice (its writes are compare-and-swap).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from mlserve_testing import darwin
from mlserve_testing.faultproxy import FaultProxy
from mlserve_testing.faults import Ledger, ProxiedOperator, proxied_operator, ready_with_deployment, record
from mlserve_testing.mlserves import unique
from mlserve_testing.operator import StoppableMariaDB, namespace_with_peering
from mlserve_testing.wait import wait_for

from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster, pytest.mark.mariadb]

PAIRS = 3
CONVERGE_WITHIN = 90.0
VERSIONS = ("v1", "v2", "v3", "v4")
DEPLOY_EVERY = 0.5
ROUNDS_AFTER = 6
OVERLAP = 1.0
"""Seconds the old replica may go on writing after the new one's first write: the end of a
reconcile it had started (one reconcile's writes take well under a second here)."""
WRITES = frozenset({"create", "patch", "update", "delete"})


@pytest.fixture
def peered(kube_client: Client, mlserve_crd: None) -> Iterator[str]:
    yield from namespace_with_peering(kube_client, "op-handover")


def _replica(
    cluster: Any,
    kube_client: Client,
    request: pytest.FixtureRequest,
    url: str,
    folder: Path,
    namespace: str,
    priority: int,
) -> Iterator[ProxiedOperator]:
    return proxied_operator(
        cluster,
        kube_client,
        request,
        url,
        folder,
        [namespace],
        name=f"replica-{priority}",
        admin=True,
        MLSERVE_PEERING_NAME="mlserve",
        MLSERVE_PEERING_PRIORITY=str(priority),
    )


@pytest.fixture
def replicas(
    cluster: Any,
    kube_client: Client,
    operator_mariadb: StoppableMariaDB,
    peered: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> Iterator[tuple[ProxiedOperator, ProxiedOperator]]:
    old_gen = _replica(cluster, kube_client, request, operator_mariadb.url, tmp_path, peered, 10)
    new_gen = _replica(cluster, kube_client, request, operator_mariadb.url, tmp_path, peered, 20)
    old, new = next(old_gen), next(new_gen)
    try:
        yield old, new
    finally:
        for gen in (new_gen, old_gen):
            for _ in gen:  # runs the generator's clean-up
                pass


def _writes(proxy: FaultProxy, since: float = 0.0) -> list[tuple[float, str, str]]:
    """(time, verb, path) of the replica's writes, its peering keep-alives left out."""
    return [
        (r.at, r.verb, r.path)
        for r in proxy.recorded(since=since)
        if r.verb in WRITES and "/kopfpeerings/" not in r.path
    ]


@pytest.fixture
async def rows(darwin_rows: StoppableMariaDB) -> AsyncIterator[None]:
    yield


async def _deploy_all(pairs: list[Ledger], version: str) -> dict[str, int]:
    return {p.serve: await p.darwin_deploy(version) for p in pairs}


async def _converge_all(client: Client, pairs: list[Ledger], deployed: dict[str, int]) -> float:
    began = time.monotonic()
    for p in pairs:
        name = names.mlserve_name(p.serve, p.environment)
        await p.converge(
            client,
            CONVERGE_WITHIN,
            extra=lambda n=name, d=deployed[p.serve], ns=p.namespace: ready_with_deployment(client, n, ns, d),
        )
    return time.monotonic() - began


async def test_only_one_replica_writes_during_a_handover(
    rows: None, replicas: tuple[ProxiedOperator, ProxiedOperator], kube_client: Client, peered: str
) -> None:
    old, new = replicas
    old.operator.start()
    pairs = []
    for _ in range(PAIRS):
        serve, env = unique("ho"), unique("prod")
        seed = await darwin.seed_api_serve(
            serve, env, peered, versions=(*VERSIONS, "v9"), min_replicas=1, max_replicas=1
        )
        pairs.append(Ledger(seed, serve, env, peered))
    await _converge_all(kube_client, pairs, await _deploy_all(pairs, "v1"))
    for p in pairs:
        await p.snapshot()

    # The rolling update: the new replica starts while Darwin keeps deploying (a round of
    # deploys every DEPLOY_EVERY seconds until ROUNDS_AFTER rounds after the new one is live),
    # so both replicas have work during the handover.
    handover = time.monotonic()
    starting = asyncio.create_task(asyncio.to_thread(new.operator.start))
    rounds = after = 0
    deployed: dict[str, int] = {}
    while after < ROUNDS_AFTER:
        rounds += 1
        deployed = await _deploy_all(pairs, VERSIONS[rounds % len(VERSIONS)])
        after += starting.done()
        await asyncio.sleep(DEPLOY_EVERY)  # the pace of the load, not a wait for the operator
    await starting
    to_new = await _converge_all(kube_client, pairs, deployed)
    wait_for(lambda: _writes(new.proxy), timeout=60, what="the new replica to write")
    first_new = _writes(new.proxy)[0][0]
    late = [w for w in _writes(old.proxy) if w[0] >= first_new]
    wrote_old = [w for w in _writes(old.proxy, since=handover) if w[0] < first_new]

    # The new replica goes: the old one takes over again, and follows the next deploy.
    new.operator.stop()
    stopped = time.monotonic()
    deployed = await _deploy_all(pairs, "v9")
    back = await _converge_all(kube_client, pairs, deployed)
    late_new = [w for w in _writes(new.proxy) if w[0] > stopped]

    lost = duplicates = 0
    notes: list[str] = []
    for p in pairs:
        got = await p.lost_and_duplicated(kube_client)
        lost, duplicates, notes = lost + got[0], duplicates + got[1], notes + got[2]
    window = (late[-1][0] - first_new) if late else 0.0
    record(
        "handover: two replicas overlapping",
        2,
        survived=window <= OVERLAP and not late_new and not lost and not duplicates,
        rows_lost=lost,
        duplicates=duplicates,
        converge_seconds=max(to_new, back),
        note=(
            f"{rounds} rounds of deploys during the handover; old replica's writes after the new one's "
            f"first: {len(late)} within {window:.2f} s, before it {len(wrote_old)}; back to the old in {back:.1f} s"
            + (f"; {'; '.join(notes)}" if notes else "")
        ),
    )
    assert window <= OVERLAP, f"the old replica went on writing for {window:.2f} s after the new one: {late}"
    assert not late_new
    assert (lost, duplicates) == (0, 0), notes
    assert old.operator.running
