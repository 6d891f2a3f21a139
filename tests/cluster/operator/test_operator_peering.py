"""Two replicas of the operator sharing a kopf peering object: only one of them acts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import ApiError, Client
from mlserve_testing import darwin
from mlserve_testing.mlserves import get, ready_at_v1, unique
from mlserve_testing.operator import (
    KopfPeering,
    OperatorProcess,
    StoppableMariaDB,
    _free_port,
    namespace_with_peering,
    operator_env,
)
from mlserve_testing.wait import wait_for

from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster, pytest.mark.mariadb]


@pytest.fixture
def peered_namespace(kube_client: Client, mlserve_crd: None) -> Iterator[str]:
    """A namespace outside the session operator's watch, with a KopfPeering object in it."""
    yield from namespace_with_peering(kube_client, "ha")


@pytest.fixture
def two_replicas(
    cluster: object, operator_mariadb: StoppableMariaDB, peered_namespace: str, kube_client: Client, tmp_path: Path
) -> Iterator[list[OperatorProcess]]:
    replicas = []
    for index, priority in enumerate((10, 20)):
        port = _free_port()
        env = operator_env(
            cluster.kubeconfig,  # type: ignore[attr-defined]
            operator_mariadb.url,
            port,
            MLSERVE_NAMESPACES=peered_namespace,
            MLSERVE_PEERING_NAME="mlserve",
            MLSERVE_PEERING_PRIORITY=str(priority),
        )
        replicas.append(OperatorProcess(env, tmp_path / f"replica-{index}.log", port))
    try:
        # The higher priority first: the lower one then pauses as soon as it reads the peering.
        for replica in reversed(replicas):
            replica.start()

        def both_peered() -> bool:
            peering = kube_client.get(KopfPeering, "mlserve", namespace=peered_namespace)
            return len(peering.get("status") or {}) >= 2

        wait_for(both_peered, timeout=30, what="both replicas in the peering object")
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


async def test_only_the_highest_priority_replica_acts(
    darwin_rows: StoppableMariaDB, two_replicas: list[OperatorProcess], kube_client: Client, peered_namespace: str
) -> None:
    namespace = peered_namespace
    serve, _env, _ = await ready_at_v1(kube_client, namespace)
    pattern = re.compile(rf"reconciled {re.escape(namespace)}/{re.escape(serve)}:")
    low, high = two_replicas
    assert pattern.search(high.log_text()), high.log_tail()
    assert not pattern.search(low.log_text()), low.log_tail()
    assert low.running and high.running


SYNC_PASS = "database sync pass:"
SYNC_WAITS = "database sync waits: this replica is not the active one"


async def test_only_the_active_replica_syncs_the_database(
    darwin_rows: StoppableMariaDB, two_replicas: list[OperatorProcess], kube_client: Client, peered_namespace: str
) -> None:
    namespace = peered_namespace
    low, high = two_replicas
    serve, env = unique("churn"), unique("prod")
    seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
    await darwin.deploy(seed, "v1")
    name = names.mlserve_name(serve, env)
    wait_for(
        lambda: get(kube_client, name, namespace),
        timeout=60,
        what=f"the sync to create MLServe {namespace}/{name}",
        ignore=(ApiError,),
    )
    assert f"created MLServe {namespace}/{name}" in high.log_text(), high.log_tail()
    assert SYNC_PASS in high.log_text(), high.log_tail()
    # The paused replica never read the database for the sync, nor touched the MLServe.
    assert SYNC_WAITS in low.log_text(), low.log_tail()
    assert SYNC_PASS not in low.log_text(), low.log_tail()
    assert name not in low.log_text(), low.log_tail()

    # When the active replica goes, the other one takes over the sync.
    high.stop()
    serve2 = unique("churn")
    seed2 = await darwin.seed_api_serve(serve2, env, namespace, min_replicas=1, max_replicas=1)
    await darwin.deploy(seed2, "v1")
    name2 = names.mlserve_name(serve2, env)
    wait_for(
        lambda: get(kube_client, name2, namespace),
        timeout=90,
        what=f"the other replica to create {namespace}/{name2}",
        ignore=(ApiError,),
    )
    assert f"created MLServe {namespace}/{name2}" in low.log_text(), low.log_tail()
