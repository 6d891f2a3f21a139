"""KubeRay's real controller acting on the RayJobs and RayCronJobs the operator renders.

The controller is KubeRay's own (``kuberay-operator``, built from KubeRay's Go module at the
version of ``deploy/local-cluster/versions.json``), running beside the local control plane as
the user bound to KubeRay's own ClusterRole and watching only the test's namespace. Its pods
run on kwok's fake nodes, which mark them Running and Ready and complete a Job's pods, but run
nothing: so KubeRay gets as far as a real cluster gets before Ray itself answers, and no further.

What it does with our RayJob (K8sJobMode):

1. ``Initializing``: adds its finalizer, names the job and the RayCluster, creates the RayCluster
   from our ``rayClusterSpec`` (our head group, our worker groups, owned by the RayJob).
2. The RayCluster controller makes the head and worker pods and the head Service; on kwok they
   are Running and Ready, so the RayCluster's state is ``ready``.
3. ``Running``: it creates the submitter Job (``ray job submit`` in our head image) and sets the
   dashboard URL. From here it polls the Ray dashboard over HTTP for the job's state; nothing
   answers (no Ray head runs in a kwok pod), so ``jobStatus`` stays unset.
4. kwok completes the submitter's pod, so the Job is Complete; 30 s later
   (``DefaultSubmitterFinishedTimeout``) KubeRay gives up waiting for Ray's answer: ``Failed``,
   reason ``JobDeploymentStatusTransitionGracePeriodExceeded``, ``jobStatus: FAILED``.

``SUCCEEDED`` needs a Ray head that answers: it is never reached here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient, Client, codecs
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod, Service
from mlserve_testing import darwin
from mlserve_testing.kuberay import (
    RAYJOB_FINALIZER,
    SUBMITTER_FINISHED_TIMEOUT,
    KubeRayController,
    RayCluster,
    cron_run,
    wait_until_kuberay_ends_run,
)
from mlserve_testing.wait import wait_for

from mlserve.operator.dev.cluster import ClusterHandle
from mlserve.operator.reconcile import sync
from mlserve.operator.reconcile.events import RecordingEvents
from mlserve.operator.reconcile.kube import MLServe, RayCronJob, RayJob
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


def _runtime(client: AsyncClient, events: RecordingEvents, **render: Any) -> Runtime:
    settings = OperatorSettings(cluster_name="local", render=RenderSettings(**render), database=None)
    return Runtime(settings=settings, client=client, events=events)


async def _reconcile(client: AsyncClient, namespace: str, name: str, runtime: Runtime) -> Any:
    return await reconcile((await client.get(MLServe, name, namespace=namespace)).to_dict(), runtime)


def _status(client: Client, name: str, namespace: str) -> dict[str, Any]:
    return dict(client.get(RayJob, name, namespace=namespace).to_dict().get("status") or {})


def _container(template: dict[str, Any]) -> dict[str, Any]:
    (container,) = template["spec"]["containers"]
    return dict(container)


def _assert_only_kuberay_touched(live: dict[str, Any], ours: dict[str, Any]) -> None:
    """The RayJob's spec is ours, but for what KubeRay's own update wrote: adding its finalizer,
    it sends the whole RayJob back through its Go types, which write ``scaleStrategy: {}`` in
    each worker group (a struct is never omitted as empty). That bumps the generation to 2; the
    operator does not count it as drift, and the RayJob is never applied again."""
    managers = [(f["manager"], f["operation"], f.get("subresource")) for f in live["metadata"]["managedFields"]]
    assert managers == [
        ("mlserve-operator", "Apply", None),
        ("kuberay-operator", "Update", None),
        ("kuberay-operator", "Update", "status"),
    ], managers
    # (``ours`` was read after the apply, which KubeRay may already have answered)
    live_spec, our_spec = copy.deepcopy(live["spec"]), copy.deepcopy(ours["spec"])
    live_spec["rayClusterSpec"] = _without_scale_strategy(live_spec["rayClusterSpec"])
    our_spec["rayClusterSpec"] = _without_scale_strategy(our_spec["rayClusterSpec"])
    assert _differences(live_spec, our_spec) == []
    assert live["metadata"]["generation"] == 2


def _without_scale_strategy(ray_cluster_spec: dict[str, Any]) -> dict[str, Any]:
    """A rayClusterSpec without the ``scaleStrategy: {}`` KubeRay's Go types write back."""
    spec = copy.deepcopy(ray_cluster_spec)
    for group in spec["workerGroupSpecs"]:
        assert group.pop("scaleStrategy", {}) == {}, group
    return spec


def _differences(a: Any, b: Any, path: str = "spec") -> list[str]:
    """The paths where ``a`` and ``b`` differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted({*a, *b}) for d in _differences(a.get(key), b.get(key), f"{path}.{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} (live) != {b!r} (applied)"]


def _job_complete(client: Client, name: str, namespace: str) -> bool:
    job = client.get(Job, name, namespace=namespace)
    conditions = (job.status.conditions if job.status else None) or []
    return any(c.type == "Complete" and c.status == "True" for c in conditions)


def _pods(client: Client, namespace: str, cluster: str, node_type: str) -> list[Pod]:
    labels = {"ray.io/cluster": cluster, "ray.io/node-type": node_type}
    return list(client.list(Pod, namespace=namespace, labels=labels))


async def test_kuberay_runs_our_rayjob_until_ray_itself_must_answer(
    sqlite_darwin_db: None,
    aclient: AsyncClient,
    kube_client: Client,
    namespace: str,
    kuberay_operator: KubeRayController,
) -> None:
    seed = await darwin.seed_workflow_serve("etl", "prod", namespace)
    deployment = await darwin.deploy(seed, "v1")
    await sync.sync_once(aclient, "local", SyncState())
    name = names.mlserve_name("etl", "prod")
    job_name = names.rayjob_name("etl", "prod", deployment)
    events = RecordingEvents()
    runtime = _runtime(aclient, events)

    report = await _reconcile(aclient, namespace, name, runtime)
    assert report.error is None, report.error
    ours = kube_client.get(RayJob, job_name, namespace=namespace).to_dict()
    rendered = ours["spec"]["rayClusterSpec"]

    # 1. KubeRay takes the RayJob: its finalizer, Initializing, then the RayCluster of our spec
    seen: list[str] = []

    def deployment_status(*wanted: str) -> dict[str, Any] | None:
        status = _status(kube_client, job_name, namespace)
        current = status.get("jobDeploymentStatus")
        if current and (not seen or seen[-1] != current):
            seen.append(current)
        return status if current in wanted else None

    status = wait_for(lambda: deployment_status("Initializing", "Running"), 60, "KubeRay to take the RayJob")
    cluster_name = status["rayClusterName"]
    assert cluster_name.startswith(job_name), cluster_name
    assert RAYJOB_FINALIZER in (kube_client.get(RayJob, job_name, namespace=namespace).metadata.finalizers or [])
    ray_cluster = wait_for(
        lambda: kube_client.get(RayCluster, cluster_name, namespace=namespace).to_dict(),
        30,
        f"RayCluster {cluster_name}",
        ignore=(Exception,),
    )
    owner = ray_cluster["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner.get("controller")) == ("RayJob", job_name, True)
    spec = ray_cluster["spec"]
    head = _container(spec["headGroupSpec"]["template"])
    rendered_head = _container(rendered["headGroupSpec"]["template"])
    assert (head["name"], head["image"], head["resources"]) == (
        rendered_head["name"],
        rendered_head["image"],
        rendered_head["resources"],
    )
    assert head["image"] == "registry.example.com/etl:v1"
    groups = [(g["groupName"], g["replicas"], g["minReplicas"], g["maxReplicas"]) for g in spec["workerGroupSpecs"]]
    assert groups == [
        (g["groupName"], g["replicas"], g["minReplicas"], g["maxReplicas"]) for g in rendered["workerGroupSpecs"]
    ]
    assert groups == [("wg-0", 1, 1, 2)]
    worker = _container(spec["workerGroupSpecs"][0]["template"])
    assert worker["resources"] == _container(rendered["workerGroupSpecs"][0]["template"])["resources"]

    # 2. the RayCluster controller's pods, on kwok's nodes: Running, so the cluster is ready
    ready = wait_for(
        lambda: (
            (kube_client.get(RayCluster, cluster_name, namespace=namespace).to_dict().get("status") or {}).get("state")
            == "ready"
        ),
        60,
        f"RayCluster {cluster_name} to be ready",
    )
    assert ready
    (head_pod,) = _pods(kube_client, namespace, cluster_name, "head")
    workers = _pods(kube_client, namespace, cluster_name, "worker")
    assert len(workers) == 1 and workers[0].metadata.labels["ray.io/group"] == "wg-0"
    for pod in (head_pod, *workers):
        assert pod.status is not None and pod.status.phase == "Running", pod.metadata.name
        assert pod.spec is not None and pod.spec.containers[0].image == "registry.example.com/etl:v1"
    assert head_pod.spec is not None and head_pod.spec.containers[0].resources is not None
    assert head_pod.spec.containers[0].resources.to_dict() == rendered_head["resources"]
    services = [s.metadata.name for s in kube_client.list(Service, namespace=namespace)]
    assert any(s.startswith(cluster_name) and s.endswith("head-svc") for s in services), services

    # 3. Running: the submitter Job, `ray job submit` of our entrypoint in our head image
    status = wait_for(lambda: deployment_status("Running"), 60, "KubeRay to submit the job (Running)")
    assert status["dashboardURL"].endswith(":8265") and cluster_name in status["dashboardURL"]
    assert status["jobId"].startswith(job_name)
    assert not status.get("jobStatus"), "no Ray head answered: KubeRay cannot know the job's state"
    submitter = kube_client.get(Job, job_name, namespace=namespace)
    assert submitter.metadata is not None and submitter.metadata.labels is not None
    assert submitter.metadata.labels["app.kubernetes.io/created-by"] == "kuberay-operator"
    assert submitter.spec is not None and submitter.spec.template.spec is not None
    (submit,) = submitter.spec.template.spec.containers
    assert submit.image == "registry.example.com/etl:v1"
    command = " ".join([*(submit.command or []), *(submit.args or [])])
    assert "ray job submit" in command and ours["spec"]["entrypoint"] in command, command

    # the operator, meanwhile: the run is submitted, KubeRay's writes are not drift
    report = await _reconcile(aclient, namespace, name, runtime)
    assert report.error is None, report.error
    mlserve = (await aclient.get(MLServe, name, namespace=namespace)).to_dict()["status"]
    assert (mlserve["phase"], mlserve["activeRayJob"]) == ("Ready", job_name)
    assert report.applied == [], report.applied
    assert "DriftRepaired" not in [e.reason for e in events.events]
    _assert_only_kuberay_touched(kube_client.get(RayJob, job_name, namespace=namespace).to_dict(), ours)

    # 4. kwok completes the submitter's pod; KubeRay waits 30 s for Ray's answer, then fails the run
    wait_for(lambda: _job_complete(kube_client, job_name, namespace), 60, "the submitter Job to complete")
    completed = time.monotonic()
    status = wait_until_kuberay_ends_run(kube_client, job_name, namespace)
    deployment_status("Failed")
    assert time.monotonic() - completed >= SUBMITTER_FINISHED_TIMEOUT - 5
    assert (status["jobDeploymentStatus"], status["jobStatus"], status["reason"]) == (
        "Failed",
        "FAILED",
        "JobDeploymentStatusTransitionGracePeriodExceeded",
    ), status
    assert seen[-2:] == ["Running", "Failed"], seen

    # the operator records the run KubeRay ended, and still changes nothing of the RayJob
    report = await _reconcile(aclient, namespace, name, runtime)
    assert report.error is None, report.error
    mlserve = (await aclient.get(MLServe, name, namespace=namespace)).to_dict()["status"]
    assert (mlserve["phase"], mlserve["activeRayJob"], mlserve["lastRunStatus"]) == ("Failed", job_name, "FAILED")
    assert report.applied == [], report.applied
    assert "DriftRepaired" not in [e.reason for e in events.events]
    _assert_only_kuberay_touched(kube_client.get(RayJob, job_name, namespace=namespace).to_dict(), ours)


async def test_kuberay_runs_our_raycronjob_on_its_schedule(
    sqlite_darwin_db: None,
    aclient: AsyncClient,
    kube_client: Client,
    namespace: str,
    kuberay_operator: KubeRayController,
) -> None:
    """With ``MLSERVE_RAY_CRON_JOB=true`` the operator renders one RayCronJob; KubeRay's
    RayCronJob controller (behind its feature gate, on in our runs) makes a RayJob of its
    ``jobTemplate`` at each cron time, and that RayJob gets its RayCluster like any other.
    Up to a minute passes before the first cron time."""
    seed = await darwin.seed_workflow_serve("etl", "prod", namespace, schedule="* * * * *")
    await darwin.deploy(seed, "v1")
    await sync.sync_once(aclient, "local", SyncState())
    name = names.mlserve_name("etl", "prod")
    cron_name = names.raycronjob_name("etl", "prod")
    events = RecordingEvents()

    # KubeRay 1.6.1's RayCronJob has no spec.timeZone, which the default settings render
    refused = await _reconcile(aclient, namespace, name, _runtime(aclient, events, ray_cron_job=True))
    assert refused.error is not None and ".spec.timeZone: field not declared in schema" in refused.error.message

    # so with 1.6.1 the operator runs with MLSERVE_SCHEDULE_TIME_ZONE=none, as the README says
    runtime = _runtime(aclient, events, ray_cron_job=True, schedule_time_zone=None)
    report = await _reconcile(aclient, namespace, name, runtime)
    assert report.error is None, report.error
    cron_job = kube_client.get(RayCronJob, cron_name, namespace=namespace).to_dict()
    assert cron_job["spec"]["schedule"] == "* * * * *"
    template = cron_job["spec"]["jobTemplate"]

    # the next minute: KubeRay's RayJob, of our template, owned by our RayCronJob
    def kuberay_jobs() -> list[dict[str, Any]]:
        selected = kube_client.list(RayJob, namespace=namespace, labels={"ray.io/cronjob-name": cron_name})
        return [j.to_dict() for j in selected]

    jobs = wait_for(kuberay_jobs, 90, f"KubeRay's first RayJob of RayCronJob {cron_name} (every minute)")
    # One cron time. KubeRay 1.6.1 may make two RayJobs for it (docs/kuberay.md; the operator
    # deletes the second, below): every RayJob must be of that one time.
    stamps = {j["metadata"]["annotations"]["ray.io/cronjob-scheduled-timestamp"] for j in jobs}
    assert len(stamps) == 1, stamps
    job = min(jobs, key=lambda j: str(j["metadata"]["creationTimestamp"]))
    job_name = job["metadata"]["name"]
    assert job_name.startswith(f"{cron_name}-") and len(job_name) == len(cron_name) + 6, job_name
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("RayCronJob", cron_name)
    assert job["metadata"]["annotations"]["ray.io/cronjob-scheduled-timestamp"].endswith(":00Z")
    assert job["spec"]["entrypoint"] == template["entrypoint"]
    # KubeRay writes the template through its Go types: `scaleStrategy: {}` appears, nothing else
    assert _differences(_without_scale_strategy(job["spec"]["rayClusterSpec"]), template["rayClusterSpec"]) == []
    last = wait_for(
        lambda: (kube_client.get(RayCronJob, cron_name, namespace=namespace).to_dict().get("status") or {}).get(
            "lastScheduleTime"
        ),
        30,
        "the RayCronJob's lastScheduleTime",
    )

    # and the RayJob runs as any other: a RayCluster of our groups
    status = wait_for(
        lambda: _status(kube_client, job_name, namespace).get("rayClusterName"), 60, "KubeRay to take the RayJob"
    )
    ray_cluster = wait_for(
        lambda: kube_client.get(RayCluster, status, namespace=namespace).to_dict(),
        30,
        f"RayCluster {status}",
        ignore=(Exception,),
    )
    groups = [g["groupName"] for g in ray_cluster["spec"]["workerGroupSpecs"]]
    assert groups == [g["groupName"] for g in template["rayClusterSpec"]["workerGroupSpecs"]]

    # the operator reads the schedule back from KubeRay's status, and changes nothing it wrote
    report = await _reconcile(aclient, namespace, name, runtime)
    assert report.error is None, report.error
    mlserve = (await aclient.get(MLServe, name, namespace=namespace)).to_dict()["status"]
    assert mlserve["phase"] == "Scheduled"
    assert mlserve["lastScheduledTime"] == last
    assert "DriftRepaired" not in [e.reason for e in events.events]
    assert kube_client.get(RayCronJob, cron_name, namespace=namespace).metadata.generation == 1

    # KubeRay 1.6.1 can make a second RayJob for one cron time (its next reconcile, triggered by
    # the first RayJob, reads the RayCronJob from a cache that lacks the lastScheduleTime it just
    # wrote; docs/kuberay.md). It does so by chance, so the test makes one as KubeRay's
    # constructRayJob does: the operator's next reconcile deletes it and keeps the first.
    stamp = job["metadata"]["annotations"]["ray.io/cronjob-scheduled-timestamp"]
    # ``zzzzz`` sorts after any name KubeRay picks: the one to go even when both share a second.
    duplicate = cron_run(
        kube_client.get(RayCronJob, cron_name, namespace=namespace).to_dict(), f"{cron_name}-zzzzz", stamp
    )
    kube_client.create(codecs.from_dict(duplicate))
    report = await _reconcile(aclient, namespace, name, runtime)
    assert report.error is None, report.error
    duplicate_name = duplicate["metadata"]["name"]
    assert any(
        e.reason == "DuplicateRunDeleted" and duplicate_name in e.message and job_name in e.message
        for e in events.events
    ), events.events
    wait_for(
        lambda: _gone_or_deleting(kube_client, duplicate_name, namespace),
        30,
        f"the operator to delete RayJob {duplicate_name}",
    )
    kept = kube_client.get(RayJob, job_name, namespace=namespace)
    assert kept.metadata.deletionTimestamp is None
    live = [j for j in kuberay_jobs() if not j["metadata"].get("deletionTimestamp")]
    assert [j["metadata"]["annotations"]["ray.io/cronjob-scheduled-timestamp"] for j in live].count(stamp) == 1


def _gone_or_deleting(client: Client, name: str, namespace: str) -> bool:
    """Deleted by the operator: gone, or waiting for KubeRay to remove its finalizer."""
    try:
        return client.get(RayJob, name, namespace=namespace).metadata.deletionTimestamp is not None
    except ApiError as exc:
        if exc.status.code == 404:
            return True
        raise
