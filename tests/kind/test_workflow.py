"""A workflow serve on kind, through KubeRay's real controller running in the cluster: Darwin's
deploy of a workflow whose artifact is the suite's Ray image (Ray from PyPI's wheel) becomes
the operator's RayJob; KubeRay makes its RayCluster (our head group and worker group, real Ray
pods) and its submitter Job, which submits our entrypoint to the head; the Ray job runs one
task and KubeRay ends the RayJob ``Complete``/``SUCCEEDED``, which the MLServe's status shows."""

from __future__ import annotations

from typing import Any

from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace
from mlserve_testing import darwin
from mlserve_testing.cluster import NAMESPACE_LABEL
from mlserve_testing.kind import pod_logs, seed_ray_workflow
from mlserve_testing.mlserves import condition, get, unique
from mlserve_testing.wait import wait_for

from mlserve.models.settings import DatabaseSettings
from mlserve.operator.reconcile.kube import RayJob
from mlserve.operator.render import names

RayCluster = create_namespaced_resource("ray.io", "v1", "RayCluster", "rayclusters")
NAMESPACES_GONE_TIMEOUT = 180.0
#: from the deploy to KubeRay's RayCluster (the operator's sync tick and reconcile, KubeRay's)
CLUSTER_TIMEOUT = 120.0
#: from the RayCluster to the end of the run: Ray pods start on a small share of one node
#: (image already loaded), the submitter waits for the dashboard, the job runs one task
RUN_TIMEOUT = 480.0
#: what the workflow of the Ray image prints (deploy/kind/ray/main.py)
WORKFLOW_OUTPUT = "mlserve-workflow: square(7) = 49"


def _status(client: Client, kind: Any, name: str, namespace: str) -> dict[str, Any]:
    try:
        return dict(client.get(kind, name, namespace=namespace).to_dict().get("status") or {})
    except ApiError:
        return {}


def _owned_by(obj: Any, kind: str, name: str) -> bool:
    return any(ref.kind == kind and ref.name == name for ref in obj.metadata.ownerReferences or [])


def _diagnose(client: Client, namespace: str, job: str, cluster: str | None) -> str:
    """The RayJob's status and the logs of the Ray head and the submitter, for a failure."""
    parts = [f"RayJob status: {_status(client, RayJob, job, namespace)}"]
    if cluster:
        parts.append(f"RayCluster {cluster} status: {_status(client, RayCluster, cluster, namespace)}")
        parts.append(pod_logs(client, namespace, {"ray.io/cluster": cluster, "ray.io/node-type": "head"}))
    parts.append(pod_logs(client, namespace, {"batch.kubernetes.io/job-name": job}))
    return "\n".join(parts)


async def test_a_workflow_deploy_runs_its_rayjob_through_kuberay_to_succeeded(
    darwin_db: DatabaseSettings, kube_client: Client, namespace: str, kind_images: dict[str, str]
) -> None:
    # the Ray pods need the node's free share: the earlier tests' serves go first
    def alone() -> bool:
        others = kube_client.list(Namespace, labels={NAMESPACE_LABEL: "true"})
        return not [n.metadata.name for n in others if n.metadata.name != namespace]

    wait_for(alone, timeout=NAMESPACES_GONE_TIMEOUT, what="the earlier tests' namespaces to be deleted")
    serve, env = unique("etl"), unique("batch")
    seed = await seed_ray_workflow(serve, env, namespace, kind_images)
    deployment = await darwin.deploy(seed, "v1")
    mls, job = names.mlserve_name(serve, env), names.rayjob_name(serve, env, deployment)

    # The operator's RayJob, and the RayCluster KubeRay makes of it: our groups, our image.
    # (KubeRay names the cluster in the RayJob's status a moment before it creates it.)
    def raycluster_of_job() -> Any:
        name = _status(kube_client, RayJob, job, namespace).get("rayClusterName")
        return kube_client.get(RayCluster, name, namespace=namespace) if name else None

    found = wait_for(
        raycluster_of_job, timeout=CLUSTER_TIMEOUT, what=f"KubeRay's RayCluster for RayJob {job}", ignore=(ApiError,)
    )
    cluster = str(found.metadata.name)
    assert _owned_by(found, "RayJob", job)
    raycluster = found.to_dict()
    spec = raycluster["spec"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert (head["name"], head["image"]) == (names.RAY_HEAD_CONTAINER, kind_images["ray"])
    assert head["resources"]["limits"] == {"cpu": "250m", "memory": "2G"}
    assert [(g["groupName"], g["replicas"]) for g in spec["workerGroupSpecs"]] == [("wg-0", 1)]
    worker = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert (worker["name"], worker["image"]) == (names.RAY_WORKER_CONTAINER, kind_images["ray"])

    # The run, to its end: KubeRay's RayJob status, with the Ray pods' logs when it fails.
    seen: dict[str, Any] = {}

    def ended() -> dict[str, Any] | None:
        if "cluster" not in seen:  # the RayCluster's status once it is up, sampled during the run
            cluster_status = _status(kube_client, RayCluster, cluster, namespace)
            if cluster_status.get("state") == "ready":
                seen["cluster"] = cluster_status
        status = _status(kube_client, RayJob, job, namespace)
        return status if status.get("jobDeploymentStatus") in ("Complete", "Failed") else None

    try:
        status = wait_for(ended, timeout=RUN_TIMEOUT, what=f"KubeRay to end RayJob {job}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnose(kube_client, namespace, job, cluster)}") from None
    assert (status["jobDeploymentStatus"], status["jobStatus"]) == ("Complete", "SUCCEEDED"), _diagnose(
        kube_client, namespace, job, cluster
    )
    assert status.get("succeeded") == 1 and status["jobId"], status
    # the cluster was up for the run: its head and its worker ready
    assert seen.get("cluster", {}).get("state") == "ready", seen
    assert seen["cluster"].get("readyWorkerReplicas") == 1, seen

    # The submitter Job (K8sJobMode) completed, and its logs are the job's: our task's answer.
    (submitter,) = [j for j in kube_client.list(Job, namespace=namespace) if _owned_by(j, "RayJob", job)]
    assert submitter.status is not None and submitter.status.succeeded == 1, submitter.status
    logs = pod_logs(kube_client, namespace, {"batch.kubernetes.io/job-name": submitter.metadata.name}, tail=200)
    assert WORKFLOW_OUTPUT in logs, logs

    # The operator follows: the MLServe shows the run succeeded.
    def recorded() -> dict[str, Any] | None:
        body = get(kube_client, mls, namespace)
        status = body.get("status") or {}
        return body if status.get("lastRunStatus") == "SUCCEEDED" and status.get("phase") == "Succeeded" else None

    body = wait_for(recorded, timeout=60, what=f"MLServe {mls} to record the run", ignore=(ApiError,))
    assert body["status"]["activeRayJob"] == job
    ready = condition(body, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "JobSucceeded"), ready
