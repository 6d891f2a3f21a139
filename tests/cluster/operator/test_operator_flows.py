"""The operator end to end: ``mlserve run`` against the local control plane and a database
seeded as Darwin writes it. Each test waits on conditions with deadlines, never sleeps."""

from __future__ import annotations

import asyncio

import pytest
from lightkube import Client
from lightkube.resources.apps_v1 import Deployment
from mlserve_testing import darwin
from mlserve_testing.kuberay import KubeRayController, wait_until_kuberay_ends_run
from mlserve_testing.mlserves import (
    MLServe,
    apply,
    children,
    condition,
    events,
    gone,
    mlserve,
    ready_at_v1,
    unique,
    wait_condition,
)
from mlserve_testing.operator import OperatorProcess
from mlserve_testing.wait import async_wait_for, wait_for

from mlserve.operator.reconcile.kube import RayJob

pytestmark = [pytest.mark.cluster]


async def test_apply_records_a_deployment_and_children_become_ready(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env = unique("fraud"), unique("prod")
    seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=2, max_replicas=4)
    apply(kube_client, mlserve(serve, namespace, env, "v1"))

    body = wait_condition(kube_client, serve, namespace, "Ready", timeout=90)
    rows = await darwin.deployments(seed.serve, seed.environment)
    assert [(r["artifact_id"], r["status"]) for r in rows] == [(seed.artifacts["v1"], "ACTIVE")]
    status = body["status"]
    assert status["phase"] == "Ready"
    assert status["deploymentId"] == rows[0]["id"]
    assert status["image"] == f"registry.example.com/{serve}:v1"
    assert status["readyReplicas"] == 2 and status["ready"] == "2/2"
    assert status["observedGeneration"] == body["metadata"]["generation"]
    kinds = sorted(key.split("/")[0] for key in children(kube_client, namespace))
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "Ingress", "PodDisruptionBudget", "Service"]
    deployment = kube_client.get(Deployment, f"{serve}-{env}", namespace=namespace)
    refs = deployment.metadata.ownerReferences
    assert refs and refs[0].kind == "MLServe" and refs[0].controller and refs[0].blockOwnerDeletion
    assert any(e.reason == "Deployed" for e in events(kube_client, namespace, serve))


async def test_new_version_replaces_the_old_and_deleting_undeploys(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env, seed = await ready_at_v1(kube_client, namespace)
    kinds = sorted(key.split("/")[0] for key in children(kube_client, namespace))
    assert kinds == ["Deployment", "Ingress", "Service"]  # min = max: no HPA, one pod: no PDB

    apply(kube_client, mlserve(serve, namespace, env, "v2"))

    async def v2_active() -> list[dict[str, object]] | None:
        rows = await darwin.deployments(seed.serve, seed.environment)
        return rows if [r["status"] for r in rows] == ["ENDED", "ACTIVE"] else None

    rows = await async_wait_for(v2_active, timeout=60, what="v2 recorded as the active deployment")
    assert rows[1]["artifact_id"] == seed.artifacts["v2"]
    assert await darwin.active_rows(seed.serve, seed.environment) == [
        {"deployment_id": rows[1]["id"], "previous_deployment_id": rows[0]["id"]}
    ]
    wait_for(
        lambda: (
            kube_client.get(Deployment, f"{serve}-{env}", namespace=namespace)
            .spec.template.spec.containers[0]
            .image.endswith(":v2")
        ),
        timeout=30,
        what="the Deployment running v2",
    )

    kube_client.delete(MLServe, serve, namespace=namespace)
    wait_for(lambda: gone(kube_client, MLServe, serve, namespace), timeout=60, what="the MLServe deleted")

    async def ended() -> bool:
        rows = await darwin.deployments(seed.serve, seed.environment)
        return all(r["status"] == "ENDED" for r in rows) and not await darwin.active_rows(seed.serve, seed.environment)

    await async_wait_for(ended, timeout=30, what="every deployment ENDED and no active row")


@pytest.mark.parametrize(
    ("reason", "change"),
    [
        ("UnknownServe", {"serve": "no-such-serve"}),
        ("UnknownEnvironment", {"environment": "no-such-env"}),
        ("UnknownArtifact", {"artifactVersion": "v404"}),
        ("ServeTypeMismatch", {"type": "workflow"}),
    ],
)
async def test_bad_input_gives_a_condition_and_an_event_and_writes_nothing(
    operator_db: OperatorProcess, kube_client: Client, namespace: str, reason: str, change: dict[str, str]
) -> None:
    serve, env = unique("fraud"), unique("prod")
    await darwin.seed_api_serve(serve, env, namespace)
    body = mlserve(serve, namespace, env, "v1")
    body["spec"].update(change)
    apply(kube_client, body)
    got = wait_condition(kube_client, serve, namespace, "ArtifactResolved", "False", reason=reason)
    assert got["status"]["phase"] == "Invalid"
    wait_for(
        lambda: any(e.reason == reason and e.type == "Warning" for e in events(kube_client, namespace, serve)),
        timeout=30,
        what=f"a Warning Event {reason}",
    )
    assert children(kube_client, namespace) == {}
    assert (
        await darwin.query("SELECT d.id FROM deployments d JOIN serves s ON s.id = d.serve_id WHERE s.name = ?", serve)
        == []
    )
    assert operator_db.running


async def test_invalid_env_configs_in_the_database(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env = unique("fraud"), unique("prod")
    await darwin.seed_api_serve(serve, env, namespace, env_config={"cluster_name": "local", "namespace": 42})
    apply(kube_client, mlserve(serve, namespace, env, "v1"))
    got = wait_condition(kube_client, serve, namespace, "ArtifactResolved", "False", reason="InvalidEnvConfig")
    assert "env_configs" in condition(got, "ArtifactResolved")["message"]  # type: ignore[index]
    assert children(kube_client, namespace) == {}


async def test_a_workflow_serve_runs_one_rayjob_per_deployment(
    operator_db: OperatorProcess, kube_client: Client, namespace: str, kuberay_operator: KubeRayController
) -> None:
    """The operator's RayJob, run by KubeRay's real controller: the operator follows the status
    KubeRay writes (submitted, then the run's end, FAILED on kwok where no Ray head answers)
    through its watch, and leaves the RayJob as it is."""
    serve, env = unique("batch"), unique("prod")
    seed = await darwin.seed_workflow_serve(serve, env, namespace)
    body = mlserve(serve, namespace, env, "v1")
    body["spec"]["type"] = "workflow"
    apply(kube_client, body)
    got = wait_condition(kube_client, serve, namespace, "Ready", timeout=60)
    rows = await darwin.deployments(seed.serve, seed.environment)
    assert len(rows) == 1
    name = f"{serve}-{env}-d{rows[0]['id']}"
    assert got["status"]["activeRayJob"] == name
    job = kube_client.get(RayJob, name, namespace=namespace)
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["metadata"]["ownerReferences"][0]["uid"] == got["metadata"]["uid"]
    assert children(kube_client, namespace) == {}  # no API children for a workflow
    assert condition(got, "Ready")["reason"] == "JobSubmitted"  # type: ignore[index]

    ended = await asyncio.to_thread(wait_until_kuberay_ends_run, kube_client, name, namespace)
    assert ended["jobStatus"] == "FAILED", ended
    got = wait_condition(kube_client, serve, namespace, "Ready", "False", reason="JobFailed", timeout=60)
    assert (got["status"]["phase"], got["status"]["lastRunStatus"]) == ("Failed", "FAILED")
    live = kube_client.get(RayJob, name, namespace=namespace)
    applied = [f for f in live.metadata.managedFields or [] if f.manager != "kuberay-operator"]
    assert [(f.operation, f.subresource) for f in applied] == [("Apply", None)], "applied once, never again"
