"""The API server and etcd stopped and started again under a running operator (the session's
local control plane: the real programs, same flags, same data).

Each outage: Darwin deploys a new version while the program is down (the sync cannot write
it), the outage lasts until the operator has noticed it (a warning in its log), then the
program starts again. The operator must resume its watches and converge: the MLServe and
its Deployment follow the database, the sync protocol's invariants hold, no row lost, none
duplicated; then a user's apply (seen only through a resumed watch) is recorded once.
Figures: seconds from the restart to convergence.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from mlserve_testing import darwin
from mlserve_testing.faults import (
    API_SERVER_STARTS,
    Ledger,
    direct_operator,
    ready_at_version,
    ready_with_deployment,
    record,
    warnings_in,
)
from mlserve_testing.mlserves import MLServe, apply, mlserve, unique
from mlserve_testing.operator import OperatorProcess, StoppableMariaDB
from mlserve_testing.wait import wait_for

from mlserve.operator.dev.cluster import LocalCluster
from mlserve.operator.dev.cluster import names as cluster_names
from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster, pytest.mark.mariadb]

CONVERGE_WITHIN = 120.0
"""Seconds the operator may take after a restart (the API server's own start included)."""

OUTAGES = {
    "apiserver": (cluster_names.APISERVER,),
    "etcd": (cluster_names.ETCD,),
    "etcd-and-apiserver": (cluster_names.ETCD, cluster_names.APISERVER),
}


@pytest.fixture
def operator(
    cluster: Any,
    mlserve_crd: None,
    request: pytest.FixtureRequest,
    darwin_rows: StoppableMariaDB,
    namespace: str,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    process = direct_operator(cluster, request, darwin_rows.url, tmp_path, [namespace])
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _api_ready(client: Client, namespace: str) -> bool:
    """The API server answers for MLServes (the last paths it installs after a start)."""
    list(client.list(MLServe, namespace=namespace))
    return True


def _restart(
    local: LocalCluster, client: Client, programs: tuple[str, ...], operator: OperatorProcess, namespace: str
) -> float:
    """Stop ``programs`` (the API server before etcd), wait until the operator notices, start
    them again (etcd first); returns the monotonic time of the restart."""
    noticed = warnings_in(operator)
    for name in sorted(programs, key=lambda n: n != cluster_names.APISERVER):
        local.processes[name].stop()
    wait_for(lambda: warnings_in(operator) > noticed, timeout=60, what="the operator to notice the outage")
    assert operator.running, "an outage of the control plane is no reason for the operator to exit"
    restarted = time.monotonic()
    API_SERVER_STARTS.append(time.time())
    for name in sorted(programs, key=lambda n: n != cluster_names.ETCD):
        local.processes[name].start()
    # The client's pooled connections died with the server: new ones once it answers.
    wait_for(
        lambda: _api_ready(client, namespace), timeout=90, what="the API server answering again", ignore=(Exception,)
    )
    return restarted


@pytest.fixture
async def pair(darwin_rows: StoppableMariaDB, namespace: str) -> AsyncIterator[Ledger]:
    serve, env = unique("cp"), unique("prod")
    versions = tuple(f"v{n}" for n in range(1, 9))
    seed = await darwin.seed_api_serve(serve, env, namespace, versions=versions, min_replicas=1, max_replicas=1)
    yield Ledger(seed, serve, env, namespace)


async def test_the_operator_survives_api_server_and_etcd_restarts(
    local_cluster: LocalCluster | None,
    kube_client: Client,
    operator: OperatorProcess,
    pair: Ledger,
    namespace: str,
) -> None:
    if local_cluster is None:
        pytest.skip("the cluster of $KUBECONFIG is not this session's to stop and start")
    name = names.mlserve_name(pair.serve, pair.environment)
    first = await pair.darwin_deploy("v1")
    await pair.converge(kube_client, 90, extra=lambda: ready_with_deployment(kube_client, name, namespace, first))
    version = 1
    for outage, programs in OUTAGES.items():
        await pair.snapshot()
        version += 1
        # Darwin deploys while the program is down: only the database has it.
        new = await pair.darwin_deploy(f"v{version}")
        restarted = _restart(local_cluster, kube_client, programs, operator, namespace)
        await pair.converge(
            kube_client, CONVERGE_WITHIN, extra=lambda new=new: ready_with_deployment(kube_client, name, namespace, new)
        )
        converged = time.monotonic() - restarted
        # A user's apply after the restart reaches the operator only through a resumed watch.
        version += 1
        asked = f"v{version}"
        pair.expected_new = [asked]
        began = time.monotonic()
        apply(kube_client, mlserve(name, namespace, pair.environment, asked, serve=pair.serve))
        await pair.converge(
            kube_client, CONVERGE_WITHIN, extra=lambda a=asked: ready_at_version(kube_client, name, namespace, a)
        )
        recorded = time.monotonic() - began
        lost, duplicates, notes = await pair.lost_and_duplicated(kube_client)
        record(
            f"restart {outage}",
            1,
            survived=operator.running and not lost and not duplicates,
            rows_lost=lost,
            duplicates=duplicates,
            converge_seconds=converged,
            note=f"apply after restart recorded in {recorded:.1f} s" + (f"; {'; '.join(notes)}" if notes else ""),
        )
        assert (lost, duplicates) == (0, 0), notes
        assert operator.running
        assert operator.starts == 1, "the operator was restarted"
