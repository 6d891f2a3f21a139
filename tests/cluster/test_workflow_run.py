"""An unscheduled workflow runs once per deployment: a finished RayJob is done, not drift.

No KubeRay operator runs here, so the run is finished by writing the RayJob's status as
KubeRay would. Deleting the finished RayJob afterwards (by hand, or KubeRay's
``ttlSecondsAfterFinished``) must not create it again, which would run the batch again; a
new deployment runs anew.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType
from mlserve_testing import darwin

from mlserve.operator.dev.cluster import ClusterHandle
from mlserve.operator.reconcile import sync
from mlserve.operator.reconcile.events import RecordingEvents
from mlserve.operator.reconcile.kube import MLServe, RayJob
from mlserve.operator.reconcile.mlserve import Runtime, reconcile
from mlserve.operator.reconcile.sync import SyncState
from mlserve.operator.render import names
from mlserve.operator.render.settings import RenderSettings
from mlserve.operator.settings import OperatorSettings


@pytest.fixture
async def aclient(cluster: ClusterHandle, mlserve_crd: None) -> AsyncIterator[AsyncClient]:
    client = cluster.async_client(field_manager="mlserve-operator")
    try:
        yield client
    finally:
        await client.close()


async def _reconcile(client: AsyncClient, namespace: str, name: str) -> Any:
    body = (await client.get(MLServe, name, namespace=namespace)).to_dict()
    settings = OperatorSettings(cluster_name="local", render=RenderSettings(), database=None)
    return await reconcile(body, Runtime(settings=settings, client=client, events=RecordingEvents()))


async def _rayjobs(client: AsyncClient, namespace: str) -> set[str]:
    return {job.metadata.name async for job in client.list(RayJob, namespace=namespace)}


async def test_a_finished_run_deleted_is_not_run_again_and_a_new_deployment_runs(
    darwin_db: None, aclient: AsyncClient, namespace: str
) -> None:
    seed = await darwin.seed_api_serve("etl", "prod", namespace, versions=("v1", "v2"), serve_type="workflow")
    await darwin.insert(
        "workflow_serve_configs",
        serve_id=seed.serve,
        environment_id=seed.environment,
        schedule="",
        worker_node_config=[{"cores_per_pods": 1, "memory_per_pods": 2, "min_pods": 1, "max_pods": 2}],
        created_by_id=seed.user,
        updated_by_id=seed.user,
        created_at=darwin._now(),
        updated_at=darwin._now(),
    )
    first = await darwin.deploy(seed, "v1")
    await sync.sync_once(aclient, "local", SyncState())
    name = names.mlserve_name("etl", "prod")
    job = names.rayjob_name("etl", "prod", first)

    report = await _reconcile(aclient, namespace, name)
    assert report.error is None, report.error
    assert await _rayjobs(aclient, namespace) == {job}

    await aclient.patch(
        RayJob.Status,
        job,
        {"status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    await _reconcile(aclient, namespace, name)  # the status records the finished run
    status = (await aclient.get(MLServe, name, namespace=namespace)).to_dict()["status"]
    assert (status["activeRayJob"], status["lastRunStatus"], status["phase"]) == (job, "SUCCEEDED", "Succeeded")

    await aclient.delete(RayJob, job, namespace=namespace)
    with pytest.raises(ApiError):
        await aclient.get(RayJob, job, namespace=namespace)
    for _ in range(2):  # a drift check, and one more
        report = await _reconcile(aclient, namespace, name)
        assert report.error is None, report.error
        assert await _rayjobs(aclient, namespace) == set(), "the finished batch was run again"
    status = (await aclient.get(MLServe, name, namespace=namespace)).to_dict()["status"]
    assert (status["activeRayJob"], status["lastRunStatus"], status["phase"]) == (job, "SUCCEEDED", "Succeeded")

    second = await darwin.deploy(seed, "v2")
    await sync.sync_once(aclient, "local", SyncState())
    report = await _reconcile(aclient, namespace, name)
    assert report.error is None, report.error
    assert await _rayjobs(aclient, namespace) == {names.rayjob_name("etl", "prod", second)}
