"""The artifact builder (``reconcile/builder.py``) in-process, against the local control plane
and a database (SQLite and MariaDB): build jobs leased, built as Kubernetes Jobs that kwok
completes or fails on demand (the pod label ``kwok.mlserve.dev/outcome``), and recorded as
Darwin's poller records them. The whole operator with the builder on is in
``cluster/operator/test_operator_builder.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lightkube import AsyncClient, Client
from lightkube.resources.batch_v1 import Job
from mlserve_testing import darwin
from mlserve_testing.cluster import ClusterHandle
from mlserve_testing.wait import async_wait_for

from mlserve.operator.dev.cluster.kwok_stages import OUTCOME_LABEL
from mlserve.operator.reconcile.builder import LABEL_BUILD_JOB, Builder, job_name
from mlserve.operator.settings import BuilderSettings

pytestmark = [pytest.mark.cluster]

IMAGE_URL = "registry.example.com/serves:{serve}_{version}"


@pytest.fixture
async def client(cluster: ClusterHandle) -> AsyncIterator[AsyncClient]:
    client = cluster.async_client(field_manager="mlserve-operator")
    try:
        yield client
    finally:
        await client.close()


def settings(namespace: str, **changes: Any) -> BuilderSettings:
    base = BuilderSettings(
        enabled=True, image="registry.example.com/builder:1", image_url=IMAGE_URL, namespace=namespace, lease=4.0
    )
    return replace(base, **changes)


async def lapse_leases() -> None:
    """Every job's ``last_picked_at`` a minute back, as a job waiting since then has it."""
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    await darwin.query("UPDATE artifact_builder_job SET last_picked_at = ?", past)


async def job_row(job: int) -> dict[str, Any]:
    (row,) = await darwin.query("SELECT status, task_id, last_picked_at FROM artifact_builder_job WHERE id = ?", job)
    return row


async def run_until_done(builder: Builder, job: int, timeout: float = 60) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        await builder.tick()
        row = await job_row(job)
        return row if row["status"] != "PENDING" else None

    return await async_wait_for(done, timeout=timeout, what=f"build job {job} to finish", interval=0.5)


async def test_a_pending_job_is_built_as_a_kubernetes_job_and_recorded_successful(
    darwin_db: None, client: AsyncClient, kube_client: Client, namespace: str
) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", namespace, versions=("v1",))
    job = await darwin.build_job(seed, "v2", repository="https://git.example.com/ml/fraud.git")
    builder = Builder(settings(namespace, args=("--destination=$(BUILD_IMAGE)",)), client)

    row = await run_until_done(builder, job)

    assert row["status"] == "SUCCESSFUL"
    assert row["task_id"] == f"kubernetes job {namespace}/{job_name(job)}"
    (artifact,) = await darwin.query(
        "SELECT image_url, artifact_job_id, github_repo_url FROM artifacts WHERE serve_id = ? AND version = ?",
        seed.serve,
        "v2",
    )
    assert artifact == {
        "image_url": "registry.example.com/serves:fraud_v2",
        "artifact_job_id": job,
        "github_repo_url": "https://git.example.com/ml/fraud.git",
    }
    built = kube_client.get(Job, job_name(job), namespace=namespace)
    assert built.metadata.labels[LABEL_BUILD_JOB] == str(job)
    container = built.spec.template.spec.containers[0]
    assert container.image == "registry.example.com/builder:1"
    assert container.args == ["--destination=$(BUILD_IMAGE)"]
    env = {var.name: var.value for var in container.env}
    assert env["BUILD_IMAGE"] == "registry.example.com/serves:fraud_v2"
    assert env["BUILD_GIT_CONTEXT"] == "git://git.example.com/ml/fraud.git#refs/heads/main"
    assert built.spec.backoffLimit == 2 and built.spec.activeDeadlineSeconds == 1800
    assert not builder.held


async def test_a_build_whose_pods_fail_is_recorded_failed_with_the_reason_after_its_retries(
    darwin_db: None, client: AsyncClient, kube_client: Client, namespace: str
) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", namespace, versions=("v1",))
    job = await darwin.build_job(seed, "v2")
    builder = Builder(settings(namespace, max_retries=1, pod_labels=((OUTCOME_LABEL, "fail"),)), client)

    row = await run_until_done(builder, job, timeout=90)

    assert row["status"] == "FAILED"
    assert row["task_id"].startswith(f"kubernetes job {namespace}/{job_name(job)} failed: BackoffLimitExceeded")
    assert await darwin.query("SELECT id FROM artifacts WHERE serve_id = ? AND version = ?", seed.serve, "v2") == []
    built = kube_client.get(Job, job_name(job), namespace=namespace)
    assert built.status.failed == 2  # the first attempt and one retry: bounded


async def test_a_build_that_runs_past_its_timeout_is_recorded_failed(
    darwin_db: None, client: AsyncClient, namespace: str
) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", namespace, versions=("v1",))
    job = await darwin.build_job(seed, "v2")
    builder = Builder(settings(namespace, timeout=3.0, pod_labels=((OUTCOME_LABEL, "hang"),)), client)

    row = await run_until_done(builder, job, timeout=60)

    assert row["status"] == "FAILED"
    assert "DeadlineExceeded" in row["task_id"]


async def test_two_builders_started_at_once_build_a_job_once(
    darwin_db: None, client: AsyncClient, kube_client: Client, namespace: str, second_namespace: str
) -> None:
    """Each builder runs its Jobs in a namespace of its own, so a job built twice would show
    as two Kubernetes Jobs."""
    seed = await darwin.seed_api_serve("fraud", "prod", namespace, versions=("v1",))
    jobs = [await darwin.build_job(seed, version) for version in ("v2", "v3", "v4")]
    await lapse_leases()  # Darwin writes a job with last_picked_at = now: due once that lapsed
    first = Builder(settings(namespace, concurrency=3), client)
    second = Builder(settings(second_namespace, concurrency=3), client)

    for _ in range(3):
        await asyncio.gather(first.tick(), second.tick())
    assert set(first.held).isdisjoint(second.held)
    assert set(first.held) | set(second.held) == set(jobs)

    async def all_done() -> bool:
        await asyncio.gather(first.tick(), second.tick())
        rows = [await job_row(job) for job in jobs]
        return all(r["status"] == "SUCCESSFUL" for r in rows)

    await async_wait_for(all_done, timeout=90, what="the three builds", interval=0.5)
    built = [
        int(j.metadata.labels[LABEL_BUILD_JOB])
        for ns in (namespace, second_namespace)
        for j in kube_client.list(Job, namespace=ns)
    ]
    assert sorted(built) == sorted(jobs)
    artifacts = await darwin.query("SELECT version FROM artifacts WHERE serve_id = ? ORDER BY version", seed.serve)
    assert [a["version"] for a in artifacts] == ["v1", "v2", "v3", "v4"]


async def test_a_lapsed_lease_is_taken_over_and_the_running_job_adopted(
    darwin_db: None, client: AsyncClient, kube_client: Client, namespace: str
) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", namespace, versions=("v1",))
    job = await darwin.build_job(seed, "v2")
    await lapse_leases()
    hanging = settings(namespace, lease=2.0, pod_labels=((OUTCOME_LABEL, "hang"),))
    crashed = Builder(hanging, client)
    await crashed.tick()
    assert list(crashed.held) == [job]
    taken_at = crashed.held[job].token

    # The first holder stops renewing (it crashed). Within the lease nobody takes the job ...
    successor = Builder(hanging, client)
    await successor.tick()
    assert not successor.held

    # ... after it, the successor does, and adopts the Job already running instead of a second one.
    async def taken() -> bool:
        await successor.tick()
        return job in successor.held

    await async_wait_for(taken, timeout=20, what="the successor to take the lapsed lease", interval=0.5)
    assert successor.held[job].token > taken_at
    assert len(list(kube_client.list(Job, namespace=namespace))) == 1
    # The crashed holder, back, finds its lease gone and lets the job go without writing.
    await crashed.tick()
    assert job not in crashed.held
    assert (await job_row(job))["status"] == "PENDING"
