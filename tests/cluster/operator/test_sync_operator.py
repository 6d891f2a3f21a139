"""Database → cluster through the operator as it runs (``mlserve run``, its sync loop inside):
rows inserted as Darwin writes them become Ready MLServes with children, follow new versions,
and go away on undeploy; a scheduled workflow gets its RayJob at the cron time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace
from mlserve_testing import darwin
from mlserve_testing.kuberay import KubeRayController
from mlserve_testing.mlserves import apply, children, get, gone, mlserve, unique, wait_condition
from mlserve_testing.operator import OperatorProcess
from mlserve_testing.wait import wait_for

from mlserve.operator.reconcile.kube import MLServe, RayJob
from mlserve.operator.render import names
from mlserve.operator.spec.api import ANNOTATION_DEPLOYMENT_ID, ANNOTATION_SCHEDULED_TIME

pytestmark = [pytest.mark.cluster]


async def _undeploy(seed: darwin.Seed) -> None:
    now = darwin._now()
    for pointer in await darwin.active_rows(seed.serve, seed.environment):
        await darwin.query(
            "UPDATE deployments SET status = 'ENDED', ended_at = ? WHERE id = ?", now, int(pointer["deployment_id"])
        )
    await darwin.query(
        "DELETE FROM active_deployments WHERE serve_id = ? AND environment_id = ?", seed.serve, seed.environment
    )


async def test_a_darwin_deploy_appears_follows_new_versions_and_goes_on_undeploy(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env = unique("churn"), unique("dev")
    seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
    first = await darwin.deploy(seed, "v1")
    name = names.mlserve_name(serve, env)

    body = wait_condition(kube_client, name, namespace, "Ready", timeout=90)
    assert body["spec"]["artifactVersion"] == "v1"
    assert body["metadata"]["annotations"][ANNOTATION_DEPLOYMENT_ID] == str(first)
    assert body["status"]["deploymentId"] == first
    assert kube_client.get(Deployment, names.child_name(serve, env), namespace=namespace)

    second = await darwin.deploy(seed, "v2")

    def on_v2() -> dict[str, object] | None:
        current = get(kube_client, name, namespace)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in current.get("status", {}).get("conditions", [])
        )
        return current if current["status"].get("deploymentId") == second and ready else None

    body = wait_for(on_v2, timeout=90, what=f"{name} at deployment {second} and Ready")
    assert body["spec"]["artifactVersion"] == "v2"
    rows = await darwin.deployments(seed.serve, seed.environment)
    assert [r["id"] for r in rows] == [first, second], "the sync's spec change was recorded again"

    await _undeploy(seed)
    wait_for(lambda: gone(kube_client, MLServe, name, namespace), timeout=90, what=f"{name} deleted")
    wait_for(lambda: not children(kube_client, namespace), timeout=90, what="its children deleted")


async def test_a_kubectl_apply_is_not_undone_by_the_sync(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env = unique("churn"), unique("dev")
    seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
    await darwin.deploy(seed, "v1")
    name = names.mlserve_name(serve, env)
    wait_condition(kube_client, name, namespace, "Ready", timeout=90)

    apply(kube_client, mlserve(name, namespace, env, "v2", serve=serve))

    def recorded() -> dict[str, object] | None:
        current = get(kube_client, name, namespace)
        status = current.get("status", {})
        return (
            current
            if status.get("artifactVersion") == "v2"
            and status.get("observedGeneration") == current["metadata"]["generation"]
            else None
        )

    wait_for(recorded, timeout=90, what=f"{name} recorded at v2")
    rows = await darwin.deployments(seed.serve, seed.environment)
    assert [r["status"] for r in rows] == ["ENDED", "ACTIVE"]
    assert rows[-1]["artifact_id"] == seed.artifacts["v2"]
    # absence over a window: let a few sync ticks (2 s apart) pass, then nothing may have moved
    first_seen = datetime.now(UTC)
    wait_for(lambda: (datetime.now(UTC) - first_seen).total_seconds() > 6 or None, timeout=10, what="three sync ticks")
    assert get(kube_client, name, namespace)["spec"]["artifactVersion"] == "v2"
    assert len(await darwin.deployments(seed.serve, seed.environment)) == 2


async def test_an_mlserve_of_the_pair_in_another_namespace_does_not_block_the_syncs(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    """Squatting, as a new user met it: an MLServe for the pair left in a scratch namespace
    (older, so it won the claim anywhere) kept the one the sync created ``PairClaimed``."""
    serve, env = unique("churn"), unique("dev")
    scratch = f"{namespace[:50]}-scratch"
    kube_client.create(Namespace(metadata=ObjectMeta(name=scratch)))
    try:
        seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
        apply(kube_client, mlserve(serve, scratch, env, "v2"))
        wait_condition(kube_client, serve, scratch, "ArtifactResolved", "False", reason="WrongNamespace")
        first = await darwin.deploy(seed, "v1")
        name = names.mlserve_name(serve, env)
        body = wait_condition(kube_client, name, namespace, "Ready", timeout=90)
        assert body["status"]["deploymentId"] == first
        rows = await darwin.deployments(seed.serve, seed.environment)
        assert [(r["artifact_id"], r["status"]) for r in rows] == [(seed.artifacts["v1"], "ACTIVE")]
        assert children(kube_client, scratch) == {}
        kube_client.delete(MLServe, serve, namespace=scratch)
        wait_for(lambda: gone(kube_client, MLServe, serve, scratch), timeout=60, what="the scratch MLServe deleted")
        rows = await darwin.deployments(seed.serve, seed.environment)
        assert [r["status"] for r in rows] == ["ACTIVE"], "deleting the squatter undeployed the pair"
    finally:
        kube_client.delete(Namespace, scratch)


async def test_a_scheduled_workflow_gets_its_rayjob_at_the_cron_time(
    operator_db: OperatorProcess, kube_client: Client, namespace: str, kuberay_operator: KubeRayController
) -> None:
    """The run of the cron time, which KubeRay's real controller takes (the end of a run, and
    the next one waiting for it, are in tests/cluster/test_schedule_cluster.py)."""
    serve, env = unique("etl"), unique("dev")
    seed = await darwin.seed_api_serve(serve, env, namespace, versions=("v1",), serve_type="workflow")
    await darwin.insert(
        "workflow_serve_configs",
        serve_id=seed.serve,
        environment_id=seed.environment,
        schedule="* * * * *",
        worker_node_config=[{"cores_per_pods": 1, "memory_per_pods": 1, "min_pods": 1, "max_pods": 1}],
        created_by_id=seed.user,
        updated_by_id=seed.user,
        created_at=darwin._now(),
        updated_at=darwin._now(),
    )
    await darwin.deploy(seed, "v1")
    name = names.mlserve_name(serve, env)

    def scheduled_jobs() -> list[dict[str, object]]:
        jobs = [j.to_dict() for j in kube_client.list(RayJob, namespace=namespace)]
        return [j for j in jobs if ANNOTATION_SCHEDULED_TIME in (j["metadata"].get("annotations") or {})]

    jobs = wait_for(scheduled_jobs, timeout=100, what="the first scheduled RayJob (every minute)")
    assert len(jobs) == 1
    stamp = jobs[0]["metadata"]["annotations"][ANNOTATION_SCHEDULED_TIME]
    status = wait_for(
        lambda: (
            get(kube_client, name, namespace).get("status", {}).get("lastScheduledTime") == stamp
            and get(kube_client, name, namespace)["status"]
        ),
        timeout=30,
        what="status.lastScheduledTime of the run",
    )
    assert status["activeRayJob"] == jobs[0]["metadata"]["name"]
    assert jobs[0]["metadata"]["ownerReferences"][0]["name"] == name

    first = jobs[0]["metadata"]["name"]
    taken = wait_for(
        lambda: kube_client.get(RayJob, first, namespace=namespace).to_dict().get("status", {}).get("rayClusterName"),
        timeout=60,
        what=f"KubeRay's controller to take RayJob {first}",
    )
    assert taken.startswith(first)
