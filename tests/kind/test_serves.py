"""Serves on kind, through the operator running in-cluster from its image: a database deploy
becomes pods that answer HTTP through the Service, an upgrade rolls without a moment of
zero ready pods, and a rollback brings the previous version back the same way."""

from __future__ import annotations

from lightkube import Client
from lightkube.types import PatchType
from mlserve_testing import darwin
from mlserve_testing.kind import ReadyWatch, deployment_ready, http_from_pod, seed_model_serve
from mlserve_testing.mlserves import MLServe, get, unique, wait_condition
from mlserve_testing.wait import async_wait_for, wait_for

from mlserve.models.settings import DatabaseSettings
from mlserve.operator.render import names

ROLL_TIMEOUT = 240.0


def _url(serve: str, env: str, namespace: str, path: str) -> str:
    return f"http://{names.child_name(serve, env)}.{namespace}.svc.cluster.local{path}"


async def test_a_database_deploy_becomes_pods_that_answer_through_the_service(
    darwin_db: DatabaseSettings, kube_client: Client, namespace: str, kind_images: dict[str, str]
) -> None:
    serve, env = unique("iris"), unique("dev")
    seed = await seed_model_serve(serve, env, namespace, kind_images)
    await darwin.deploy(seed, "v1")
    name = names.child_name(serve, env)

    wait_condition(kube_client, names.mlserve_name(serve, env), namespace, "Ready", timeout=ROLL_TIMEOUT)
    wait_for(lambda: deployment_ready(kube_client, name, namespace, ":v1"), timeout=ROLL_TIMEOUT, what="v1 pods ready")

    client_image = kind_images["model_v1"]
    health = http_from_pod(kube_client, namespace, client_image, _url(serve, env, namespace, "/healthcheck"))
    assert health == {"status": "ok"}
    answer = http_from_pod(
        kube_client, namespace, client_image, _url(serve, env, namespace, "/predict"), {"features": [1, 2, 3.5]}
    )
    assert answer["prediction"] == 6.5
    assert answer["model"] == "v1"


async def test_an_upgrade_and_a_rollback_never_leave_the_service_without_a_ready_pod(
    darwin_db: DatabaseSettings, kube_client: Client, namespace: str, kind_images: dict[str, str]
) -> None:
    serve, env = unique("churn"), unique("prod")
    seed = await seed_model_serve(serve, env, namespace, kind_images)
    await darwin.deploy(seed, "v1")
    name, mls = names.child_name(serve, env), names.mlserve_name(serve, env)
    wait_condition(kube_client, mls, namespace, "Ready", timeout=ROLL_TIMEOUT)
    wait_for(lambda: deployment_ready(kube_client, name, namespace, ":v1"), timeout=ROLL_TIMEOUT, what="v1 pods ready")
    client_image = kind_images["model_v1"]

    # Upgrade: Darwin's deploy of v2 (rows only); the operator rolls the Deployment.
    with ReadyWatch(kube_client, name, namespace) as upgrade:
        wait_for(lambda: upgrade.samples and upgrade.samples[-1][1] >= 1, timeout=30, what="the watch's first sample")
        await darwin.deploy(seed, "v2")
        wait_for(
            lambda: deployment_ready(kube_client, name, namespace, ":v2"), timeout=ROLL_TIMEOUT, what="v2 rolled out"
        )
    assert not upgrade.errors, upgrade.errors
    assert len(upgrade.samples) > 10, "too few samples to see the roll"
    assert upgrade.minimum >= 1, f"a moment with no ready pod during the upgrade: {upgrade.samples}"
    after = http_from_pod(
        kube_client, namespace, client_image, _url(serve, env, namespace, "/predict"), {"features": [2]}
    )
    assert after["model"] == "v2"

    # Rollback by the MLServe's annotation: a new deployment row of v1, and v1's pods again.
    with ReadyWatch(kube_client, name, namespace) as rollback:
        wait_for(lambda: rollback.samples, timeout=30, what="the watch's first sample")
        kube_client.patch(
            MLServe,
            mls,
            {"metadata": {"annotations": {"mlserve.darwin.io/rollback": "kind-e2e"}}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        wait_for(
            lambda: deployment_ready(kube_client, name, namespace, ":v1"), timeout=ROLL_TIMEOUT, what="v1 rolled back"
        )
    assert not rollback.errors, rollback.errors
    assert rollback.minimum >= 1, f"a moment with no ready pod during the rollback: {rollback.samples}"

    async def three_rows() -> list[dict[str, object]] | None:
        rows = await darwin.deployments(seed.serve, seed.environment)
        return rows if len(rows) == 3 else None

    rows = await async_wait_for(three_rows, timeout=60, what="the rollback recorded as a third deployment")
    assert [r["status"] for r in rows] == ["ENDED", "ENDED", "ACTIVE"]
    assert rows[2]["artifact_id"] == seed.artifacts["v1"]
    assert get(kube_client, mls, namespace)["spec"]["artifactVersion"] == "v1"
    back = http_from_pod(
        kube_client, namespace, client_image, _url(serve, env, namespace, "/predict"), {"features": [2]}
    )
    assert back["model"] == "v1"
