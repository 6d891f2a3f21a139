"""The scheduler's I/O half against the real API server: RayJobs created, owned, trimmed.

KubeRay's real controller runs the scheduled RayJobs (``kuberay_operator``) and ends each run:
on kwok's nodes it ends them ``FAILED`` 30 s after their submitter Job, since no Ray head
answers (see tests/cluster/test_kuberay_controller.py). For the scheduler a run that ended is
finished, whichever way it ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient, Client, codecs
from lightkube.generic_resource import create_namespaced_resource
from mlserve_testing import darwin
from mlserve_testing.kuberay import KubeRayController, cron_run, wait_until_kuberay_ends_run

from mlserve.models import EnvConfig, ServeType
from mlserve.models.configs import WorkerNodeConfig
from mlserve.operator.dev.cluster import ClusterHandle
from mlserve.operator.reconcile import schedule
from mlserve.operator.reconcile.apply import Owner
from mlserve.operator.reconcile.errors import TemporaryFailure
from mlserve.operator.reconcile.events import RecordingEvents
from mlserve.operator.reconcile.kube import MLServe, RayJob
from mlserve.operator.reconcile.mlserve import Runtime, reconcile
from mlserve.operator.reconcile.schedule import ScheduleRequest, reconcile_schedule
from mlserve.operator.render import names, render_children
from mlserve.operator.render.settings import RenderSettings
from mlserve.operator.settings import OperatorSettings
from mlserve.operator.spec import EnvironmentContext, MLServeSpec, ServeContext
from mlserve.operator.spec.api import (
    ANNOTATION_SCHEDULED_TIME,
    LABEL_MANAGED_BY,
    MANAGED_BY,
)
from mlserve.operator.spec.api import API_VERSION as MLSERVE_API_VERSION
from mlserve.operator.spec.api import KIND as MLSERVE_KIND
from mlserve.operator.spec.schedule import PlanReason, ScheduleSettings

MANAGER = "mlserve-operator"
#: a RayCronJob as KubeRay 1.6.1's CRD takes it (it has no spec.timeZone)
CRON_SETTINGS = RenderSettings(ray_cron_job=True, schedule_time_zone=None)


@pytest.fixture
async def aclient(cluster: ClusterHandle, mlserve_crd: None) -> AsyncIterator[AsyncClient]:
    client = cluster.async_client(field_manager=MANAGER)
    try:
        yield client
    finally:
        await client.close()


def _context(namespace: str) -> ServeContext:
    config = EnvConfig.parse(
        {"domain_suffix": ".example.com", "cluster_name": "local", "security_group": "sg", "namespace": namespace}
    )
    return ServeContext(
        serve="etl",
        serve_type=ServeType.WORKFLOW,
        environment=EnvironmentContext(name="dev", config=config),
        artifact_version="v1",
        image="registry.example.com/etl:v1",
        deployment_id=7,
        schedule="*/5 * * * *",
        worker_configs=(
            WorkerNodeConfig.parse({"cores_per_pods": 1, "memory_per_pods": 1, "min_pods": 1, "max_pods": 1}),
        ),
    )


async def _mlserve(client: AsyncClient, namespace: str) -> dict[str, Any]:
    body = {
        "apiVersion": MLSERVE_API_VERSION,
        "kind": MLSERVE_KIND,
        "metadata": {"name": "etl-dev", "namespace": namespace},
        "spec": {"serve": "etl", "environment": "dev", "type": "workflow", "artifactVersion": "v1"},
    }
    created = await client.create(MLServe.from_dict(body))
    return created.to_dict()


async def _jobs(client: AsyncClient, namespace: str) -> dict[str, dict[str, Any]]:
    jobs = [job.to_dict() async for job in client.list(RayJob, namespace=namespace)]
    return {j["metadata"]["name"]: j for j in jobs if not j["metadata"].get("deletionTimestamp")}


async def _finish(kube_client: Client, namespace: str, name: str) -> None:
    """Let KubeRay's controller run RayJob ``name`` to its end."""
    status = await asyncio.to_thread(wait_until_kuberay_ends_run, kube_client, name, namespace)
    assert (status["jobDeploymentStatus"], status["jobStatus"]) == ("Failed", "FAILED"), status


async def test_runs_are_created_owned_one_at_a_time_and_trimmed(
    aclient: AsyncClient, kube_client: Client, namespace: str, kuberay_operator: KubeRayController
) -> None:
    body = await _mlserve(aclient, namespace)
    created_at = datetime.fromisoformat(body["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    owner = Owner(MLSERVE_API_VERSION, MLSERVE_KIND, "etl-dev", namespace, body["metadata"]["uid"])
    selector = {**names.selector("etl", "dev"), LABEL_MANAGED_BY: MANAGED_BY}
    ctx = _context(namespace)
    spec = MLServeSpec.from_resource(body)
    settings = ScheduleSettings(history_limit=1, starting_deadline=timedelta(minutes=10))
    events = RecordingEvents()

    def render_run(at: datetime) -> list[dict[str, Any]]:
        return render_children(ctx, spec, RenderSettings(), scheduled_time=at)

    async def tick(now: datetime, status: dict[str, Any]) -> Any:
        current = {**body, "status": status}
        request = ScheduleRequest(current, "*/5 * * * *", render_run, owner, selector, settings, MANAGER)
        return await reconcile_schedule(aclient, request, now, events)

    first_time = (created_at + timedelta(minutes=5)).replace(second=0, microsecond=0)
    first_time -= timedelta(minutes=first_time.minute % 5)
    if first_time <= created_at:
        first_time += timedelta(minutes=5)

    before = await tick(first_time - timedelta(seconds=30), {})
    assert before.plan.reason is PlanReason.NOT_DUE and before.created is None

    first = await tick(first_time + timedelta(seconds=3), {})
    assert first.created == names.scheduled_rayjob_name("etl", "dev", first_time)
    jobs = await _jobs(aclient, namespace)
    assert list(jobs) == [first.created]
    job = jobs[first.created]
    assert job["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert job["metadata"]["annotations"][ANNOTATION_SCHEDULED_TIME] == first_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert first.status["lastScheduledTime"] == first_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert first.status["activeRayJob"] == first.created

    # the same tick again (a lost status write): nothing new
    again = await tick(first_time + timedelta(seconds=4), {})
    assert again.created is None and len(await _jobs(aclient, namespace)) == 1

    # next time comes while the first run still runs: Forbid, it waits
    second_time = first_time + timedelta(minutes=5)
    busy = await tick(second_time + timedelta(seconds=1), first.status)
    assert busy.plan.reason is PlanReason.BUSY and busy.created is None
    assert busy.requeue_after is not None and busy.requeue_after <= 30

    await _finish(kube_client, namespace, first.created)
    second = await tick(second_time + timedelta(seconds=40), first.status)
    assert second.created == names.scheduled_rayjob_name("etl", "dev", second_time)
    await _finish(kube_client, namespace, second.created)

    # downtime of an hour: only the latest time runs, once, and the history keeps one finished run
    late = second_time + timedelta(hours=1, minutes=2)
    caught_up = await tick(late, second.status)
    latest = second_time + timedelta(hours=1)
    assert caught_up.plan.reason is PlanReason.CATCH_UP
    assert caught_up.created == names.scheduled_rayjob_name("etl", "dev", latest)
    assert caught_up.plan.missed == 11
    remaining = await _jobs(aclient, namespace)
    assert set(remaining) == {second.created, caught_up.created}, "history limit 1 keeps one finished run"
    assert [e.reason for e in events.events] == ["ScheduledRun", "ScheduledRun", "ScheduledRun"]


# --- through the MLServe's reconcile (the operator's code path), with an injected clock ----------


async def _seed_workflow(namespace: str, expression: str) -> None:
    """The workflow serve etl in environment dev, scheduled by ``expression`` in the database."""
    seeded = await darwin.seed_api_serve("etl", "dev", namespace, versions=("v1",), serve_type="workflow")
    await darwin.insert(
        "workflow_serve_configs",
        serve_id=seeded.serve,
        environment_id=seeded.environment,
        schedule=expression,
        worker_node_config=[{"cores_per_pods": 1, "memory_per_pods": 1, "min_pods": 1, "max_pods": 1}],
        created_by_id=seeded.user,
        updated_by_id=seeded.user,
        created_at=darwin._now(),
        updated_at=darwin._now(),
    )


async def test_the_reconcile_starts_a_scheduled_workflows_run_when_it_is_due(
    aclient: AsyncClient, namespace: str, sqlite_darwin_db: None
) -> None:
    await _seed_workflow(namespace, "*/5 * * * *")
    body = await _mlserve(aclient, namespace)
    created_at = datetime.fromisoformat(body["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    due = created_at.replace(second=0, microsecond=0) + timedelta(minutes=5 - created_at.minute % 5)
    settings = OperatorSettings(cluster_name="local", render=RenderSettings(), database=None, deploy_user="admin")
    clock = [due - timedelta(minutes=1)]
    runtime = Runtime(settings=settings, client=aclient, events=RecordingEvents(), clock=lambda: clock[0])

    async def reconcile_now() -> Any:
        current = (await aclient.get(MLServe, "etl-dev", namespace=namespace)).to_dict()
        return await reconcile(current, runtime)

    first = await reconcile_now()
    assert first.error is None, first.error
    assert first.recorded_deployment is not None
    assert await _jobs(aclient, namespace) == {}, "no run before its time"
    assert first.requeue_after is not None and 0 < first.requeue_after <= 60

    clock[0] = due + timedelta(seconds=2)
    second = await reconcile_now()
    assert second.error is None, second.error
    jobs = await _jobs(aclient, namespace)
    assert list(jobs) == [names.scheduled_rayjob_name("etl", "dev", due)]
    status = (await aclient.get(MLServe, "etl-dev", namespace=namespace)).to_dict()["status"]
    assert status["lastScheduledTime"] == due.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["nextScheduledTime"] == (due + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["schedule"] == "*/5 * * * *"
    assert status["activeRayJob"] == next(iter(jobs))

    # the children apply of the next reconcile must not prune the scheduled run
    third = await reconcile_now()
    assert third.pruned == []
    assert list(await _jobs(aclient, namespace)) == list(jobs)


# --- a cluster that does not serve RayJobs (KubeRay's CRDs not installed) ------------------------

# The session installs KubeRay's CRDs, cluster-wide, and removing them would delete every RayJob
# (of any cluster the suite is pointed at). So the scheduler is pointed at a RayJob resource in
# a group no API server serves: the real API server answers exactly as it does for ray.io/v1
# RayJob without KubeRay's CRDs (a plain-text 404).
UnservedRayJob = create_namespaced_resource("unserved.ray.io", "v1", "RayJob", "rayjobs")


@pytest.fixture
def no_rayjob_crd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedule, "RayJob", UnservedRayJob)


async def test_a_due_run_without_the_rayjob_crd_says_kind_not_installed(
    aclient: AsyncClient, namespace: str, no_rayjob_crd: None
) -> None:
    body = await _mlserve(aclient, namespace)
    created_at = datetime.fromisoformat(body["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    owner = Owner(MLSERVE_API_VERSION, MLSERVE_KIND, "etl-dev", namespace, body["metadata"]["uid"])
    selector = {**names.selector("etl", "dev"), LABEL_MANAGED_BY: MANAGED_BY}
    ctx = _context(namespace)
    spec = MLServeSpec.from_resource(body)

    def render_run(at: datetime) -> list[dict[str, Any]]:
        return render_children(ctx, spec, RenderSettings(), scheduled_time=at)

    request = ScheduleRequest(body, "* * * * *", render_run, owner, selector, ScheduleSettings(), MANAGER)
    events = RecordingEvents()
    with pytest.raises(TemporaryFailure) as raised:
        await reconcile_schedule(aclient, request, created_at + timedelta(minutes=1, seconds=5), events)
    assert raised.value.reason == "KindNotInstalled", raised.value.message
    assert "RayJob" in raised.value.message and "install KubeRay's CRDs" in raised.value.message
    assert events.events == [], "no Event claims a run started"


async def test_the_reconcile_reports_kind_not_installed_for_a_scheduled_workflow(
    aclient: AsyncClient, namespace: str, sqlite_darwin_db: None, no_rayjob_crd: None
) -> None:
    await _seed_workflow(namespace, "* * * * *")
    body = await _mlserve(aclient, namespace)
    created_at = datetime.fromisoformat(body["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    settings = OperatorSettings(cluster_name="local", render=RenderSettings(), database=None, deploy_user="admin")
    due = created_at + timedelta(minutes=1, seconds=5)
    runtime = Runtime(settings=settings, client=aclient, events=RecordingEvents(), clock=lambda: due)

    report = await reconcile((await aclient.get(MLServe, "etl-dev", namespace=namespace)).to_dict(), runtime)
    assert report.error is not None and report.error.reason == "KindNotInstalled", report.error
    status = (await aclient.get(MLServe, "etl-dev", namespace=namespace)).to_dict()["status"]
    synced = next(c for c in status["conditions"] if c["type"] == "Synced")
    assert (synced["status"], synced["reason"]) == ("False", "KindNotInstalled")
    assert "install KubeRay's CRDs" in synced["message"]


# --- a RayCronJob's second RayJob of one cron time (KubeRay 1.6.1; docs/kuberay.md) -----------


async def test_a_second_rayjob_of_one_cron_time_is_deleted_soon_after_the_time(
    aclient: AsyncClient, kube_client: Client, namespace: str, kuberay_installed: Path | None
) -> None:
    """The I/O half of the protection against KubeRay 1.6.1's duplicate RayJobs, on KubeRay's
    CRDs without its controller (so the RayJobs have no finalizer and go at once): which are
    deleted, when the reconcile looks, and when it asks to look again."""
    (cron_manifest,) = render_children(
        _context(namespace), MLServeSpec.from_resource(await _mlserve(aclient, namespace)), CRON_SETTINGS
    )
    cron_job = (await aclient.create(codecs.from_dict(cron_manifest))).to_dict()
    last = datetime(2026, 1, 1, 10, 5, tzinfo=UTC)
    cron_job["status"] = {"lastScheduleTime": "2026-01-01T10:05:00Z"}
    stamp, earlier = "2026-01-01T10:05:00Z", "2026-01-01T10:00:00Z"
    runs = [
        cron_run(cron_job, "etl-dev-bbbbb", stamp),
        cron_run(cron_job, "etl-dev-zzzzz", stamp),  # made second (the same second: the name decides)
        cron_run(cron_job, "etl-dev-ccccc", earlier),
    ]
    for run in runs:
        await aclient.create(codecs.from_dict(run))
    body = {"metadata": {"name": "etl-dev", "namespace": namespace}}
    events = RecordingEvents()

    async def live() -> list[str]:
        return sorted([j.metadata.name async for j in aclient.list(RayJob, namespace=namespace)])

    # a reconcile a second after the time: the second run goes, the next look is 4 s later
    again = await schedule.remove_duplicate_cron_runs(aclient, body, cron_job, last + timedelta(seconds=1), events)
    assert again == 4.0
    assert await live() == ["etl-dev-bbbbb", "etl-dev-ccccc"]
    (event,) = events.events
    assert (event.type, event.reason) == ("Warning", "DuplicateRunDeleted")
    assert "deleted etl-dev-zzzzz, kept etl-dev-bbbbb" in event.message and stamp in event.message

    # that later look finds nothing more and asks for none
    assert (
        await schedule.remove_duplicate_cron_runs(aclient, body, cron_job, last + timedelta(seconds=6), events) is None
    )
    assert len(events.events) == 1

    # long after the time nothing is listed, so nothing is deleted
    await aclient.create(codecs.from_dict(cron_run(cron_job, "etl-dev-fffff", stamp)))
    late = last + schedule.DUPLICATE_CHECK_WINDOW + timedelta(seconds=1)
    assert await schedule.remove_duplicate_cron_runs(aclient, body, cron_job, late, events) is None
    assert "etl-dev-fffff" in await live()

    # and a RayCronJob that never ran has nothing to look at
    assert await schedule.remove_duplicate_cron_runs(aclient, body, {**cron_job, "status": {}}, last, events) is None
