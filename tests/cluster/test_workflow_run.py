"""An unscheduled workflow runs once per deployment: a finished RayJob is done, not drift.

KubeRay's real controller runs the RayJob (``kuberay_operator``): on kwok's nodes it gets the
RayCluster and the submitter Job, and ends the run ``FAILED`` 30 s after the submitter, since no
Ray head answers (see tests/cluster/test_kuberay_controller.py). Deleting the finished RayJob
afterwards (by hand, or KubeRay's ``ttlSecondsAfterFinished``) must not create it again, which
would run the batch again; a new deployment runs anew.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient, Client
from mlserve_testing import darwin
from mlserve_testing.kuberay import KubeRayController, wait_until_kuberay_ends_run
from mlserve_testing.wait import async_wait_for

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


async def _gone(client: AsyncClient, name: str, namespace: str) -> bool:
    try:
        await client.get(RayJob, name, namespace=namespace)
    except ApiError as exc:
        return exc.status.code == 404
    return False


async def _rayjobs(client: AsyncClient, namespace: str) -> set[str]:
    return {job.metadata.name async for job in client.list(RayJob, namespace=namespace)}


async def test_a_finished_run_deleted_is_not_run_again_and_a_new_deployment_runs(
    darwin_db: None, aclient: AsyncClient, kube_client: Client, namespace: str, kuberay_operator: KubeRayController
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

    ended = await asyncio.to_thread(wait_until_kuberay_ends_run, kube_client, job, namespace)
    assert (ended["jobDeploymentStatus"], ended["jobStatus"]) == ("Failed", "FAILED"), ended
    await _reconcile(aclient, namespace, name)  # the status records the finished run
    status = (await aclient.get(MLServe, name, namespace=namespace)).to_dict()["status"]
    assert (status["activeRayJob"], status["lastRunStatus"], status["phase"]) == (job, "FAILED", "Failed")

    await aclient.delete(RayJob, job, namespace=namespace)  # KubeRay removes its finalizer
    await async_wait_for(lambda: _gone(aclient, job, namespace), 60, f"RayJob {job} to be deleted")
    for _ in range(2):  # a drift check, and one more
        report = await _reconcile(aclient, namespace, name)
        assert report.error is None, report.error
        assert await _rayjobs(aclient, namespace) == set(), "the finished batch was run again"
    status = (await aclient.get(MLServe, name, namespace=namespace)).to_dict()["status"]
    assert (status["activeRayJob"], status["lastRunStatus"], status["phase"]) == (job, "FAILED", "Failed")

    second = await darwin.deploy(seed, "v2")
    await sync.sync_once(aclient, "local", SyncState())
    report = await _reconcile(aclient, namespace, name)
    assert report.error is None, report.error
    assert await _rayjobs(aclient, namespace) == {names.rayjob_name("etl", "prod", second)}
