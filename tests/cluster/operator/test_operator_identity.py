"""Identity rules end to end: one holder per (serve, environment), the environment's namespace
and cluster, host names, and two environments side by side."""

from __future__ import annotations

import pytest
from lightkube import Client
from lightkube.resources.networking_v1 import Ingress
from mlserve_testing import darwin
from mlserve_testing.mlserves import MLServe, apply, children, get, gone, mlserve, unique, wait_condition
from mlserve_testing.operator import OperatorProcess
from mlserve_testing.wait import async_wait_for, wait_for

pytestmark = [pytest.mark.cluster]


async def test_a_second_mlserve_for_the_same_pair_gets_conflict_and_takes_over_later(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env = unique("fraud"), unique("prod")
    seed = await darwin.seed_api_serve(serve, env, namespace)
    apply(kube_client, mlserve(serve, namespace, env, "v1"))
    wait_condition(kube_client, serve, namespace, "Ready", timeout=90)

    apply(kube_client, mlserve("second", namespace, env, "v2", serve=serve))
    body = wait_condition(kube_client, "second", namespace, "Conflict", "True", reason="PairClaimed")
    assert body["status"]["phase"] == "Conflict"
    assert f"{namespace}/{serve}" in body["status"]["message"]
    rows = await darwin.deployments(seed.serve, seed.environment)
    assert [(r["artifact_id"], r["status"]) for r in rows] == [(seed.artifacts["v1"], "ACTIVE")]

    # Deleting the holder undeploys; the other MLServe then holds the pair and deploys v2.
    kube_client.delete(MLServe, serve, namespace=namespace)
    wait_condition(kube_client, "second", namespace, "Ready", timeout=90)

    async def v2_active() -> bool:
        rows = await darwin.deployments(seed.serve, seed.environment)
        return [(r["artifact_id"], r["status"]) for r in rows][-1] == (seed.artifacts["v2"], "ACTIVE")

    await async_wait_for(v2_active, timeout=30, what="v2 active for the new holder")


async def test_an_mlserve_outside_its_environments_namespace_changes_nothing(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env = unique("fraud"), unique("prod")
    await darwin.seed_api_serve(serve, env, "somewhere-else")
    apply(kube_client, mlserve(serve, namespace, env, "v1"))
    body = wait_condition(kube_client, serve, namespace, "ArtifactResolved", "False", reason="WrongNamespace")
    assert "somewhere-else" in body["status"]["message"]
    assert children(kube_client, namespace) == {}
    assert (
        await darwin.query("SELECT d.id FROM deployments d JOIN serves s ON s.id = d.serve_id WHERE s.name = ?", serve)
        == []
    )


async def test_an_environment_of_another_cluster_is_left_alone(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, ours, theirs = unique("fraud"), unique("here"), unique("there")
    mine = await darwin.seed_api_serve(serve, ours, namespace)
    other = await darwin.seed_api_serve(serve, theirs, namespace, cluster="another-cluster", versions=())

    # An MLServe applied here for the other cluster's environment is refused...
    apply(kube_client, mlserve("foreign", namespace, theirs, "v1", serve=serve))
    wait_condition(kube_client, "foreign", namespace, "ArtifactResolved", "False", reason="ForeignCluster")
    assert await darwin.deployments(other.serve, other.environment) == []

    # ...and the database sync creates MLServes for this cluster's deployments only.
    kube_client.delete(MLServe, "foreign", namespace=namespace)
    wait_for(lambda: gone(kube_client, MLServe, "foreign", namespace), timeout=30, what="the foreign MLServe gone")
    for seed in (other, mine):
        deployment = await darwin.insert(
            "deployments",
            serve_id=seed.serve,
            artifact_id=mine.artifacts["v1"],
            environment_id=seed.environment,
            created_by_id=seed.user,
            status="ACTIVE",
            created_at=darwin._now(),
        )
        await darwin.insert(
            "active_deployments",
            deployment_id=deployment,
            environment_id=seed.environment,
            serve_id=seed.serve,
            created_at=darwin._now(),
            updated_at=darwin._now(),
        )
    wait_condition(kube_client, f"{serve}-{ours}", namespace, "Ready", timeout=90)
    names = {m.metadata.name for m in kube_client.list(MLServe, namespace=namespace)}
    assert names == {f"{serve}-{ours}"}


@pytest.mark.parametrize("protected", [False, True])
async def test_host_names_follow_darwins_rule(
    operator_db: OperatorProcess, kube_client: Client, namespace: str, protected: bool
) -> None:
    serve, env = unique("fraud"), unique("prod")
    await darwin.seed_api_serve(serve, env, namespace, is_protected=protected, additional_hosts="api.example.org")
    apply(kube_client, mlserve(serve, namespace, env, "v1"))
    body = wait_condition(kube_client, serve, namespace, "Synced")
    primary = f"{serve}.models.example.com" if protected else f"{serve}-{env}.models.example.com"
    assert body["status"]["hosts"] == [primary, "api.example.org"]
    ingress = kube_client.get(Ingress, f"{serve}-{env}", namespace=namespace)
    assert [rule.host for rule in ingress.spec.rules] == [primary, "api.example.org"]


async def test_two_environments_share_a_namespace(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, staging, prod = unique("fraud"), unique("stg"), unique("prod")
    a = await darwin.seed_api_serve(serve, staging, namespace, versions=("v1", "v2"))
    b = await darwin.seed_api_serve(serve, prod, namespace, versions=())
    apply(kube_client, mlserve(f"{serve}-{staging}", namespace, staging, "v2", serve=serve))
    apply(kube_client, mlserve(f"{serve}-{prod}", namespace, prod, "v1", serve=serve))
    one = wait_condition(kube_client, f"{serve}-{staging}", namespace, "Ready", timeout=90)
    two = wait_condition(kube_client, f"{serve}-{prod}", namespace, "Ready", timeout=90)
    assert one["status"]["artifactVersion"] == "v2" and two["status"]["artifactVersion"] == "v1"
    assert one["status"]["deploymentId"] != two["status"]["deploymentId"]
    names = set(children(kube_client, namespace))
    assert {f"Deployment/{serve}-{staging}", f"Deployment/{serve}-{prod}"} <= names
    assert len(await darwin.active_rows(a.serve, a.environment)) == 1
    assert len(await darwin.active_rows(b.serve, b.environment)) == 1
    assert get(kube_client, f"{serve}-{prod}", namespace)["metadata"]["labels"]["mlserve.darwin.io/environment"] == prod
