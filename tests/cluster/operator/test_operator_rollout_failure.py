"""A rollout the Deployment controller gives up on is phase Failed, with the controller's
reason and message, and becomes Ready again once the cause is gone. The fault is real: a
ResourceQuota that leaves no room for the new version's pod, enforced by the API server and
reported by kube-controller-manager's Deployment controller. A rollout whose pods cannot pull
their image is Failed with the kubelet's reason, read from the pods (kwok plays the kubelet)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from lightkube import Client
from lightkube.models.core_v1 import ResourceQuotaSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ResourceQuota
from mlserve_testing import darwin
from mlserve_testing.mlserves import apply, events, mlserve, ready_at_v1, unique, wait_condition
from mlserve_testing.operator import OperatorProcess
from mlserve_testing.wait import wait_for

from mlserve.operator.dev.cluster.kwok_stages import OUTCOME_LABEL, REASON_ANNOTATION
from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster]


def _quota_counted(client: Client, namespace: str) -> bool:
    quota = client.get(ResourceQuota, "no-room", namespace=namespace)
    return bool(quota.status and quota.status.used and "pods" in quota.status.used)


async def test_a_rollout_with_no_room_for_its_pods_is_failed_until_there_is(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env, _ = await ready_at_v1(kube_client, namespace)
    # One pod runs v1; the quota leaves no room for v2's surge pod.
    kube_client.create(
        ResourceQuota(
            metadata=ObjectMeta(name="no-room", namespace=namespace), spec=ResourceQuotaSpec(hard={"pods": "1"})
        )
    )
    wait_for(lambda: _quota_counted(kube_client, namespace), timeout=60, what="the quota's usage counted")

    apply(kube_client, mlserve(serve, namespace, env, "v2"))
    body = wait_condition(kube_client, serve, namespace, "Ready", "False", reason="ReplicaFailure", timeout=180)
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert body["status"]["phase"] == "Failed"
    assert "exceeded quota" in ready["message"] and "0/1 pods of this version ready" in ready["message"]
    assert body["status"]["ready"] == "0/1"  # the v1 pod is ready, but it is not this version
    assert any(e.reason == "ReplicaFailure" for e in events(kube_client, namespace, serve))

    kube_client.delete(ResourceQuota, "no-room", namespace=namespace)
    body = wait_condition(kube_client, serve, namespace, "Ready", timeout=180)
    assert body["status"]["phase"] == "Ready" and body["status"]["ready"] == "1/1"


async def test_a_rollout_whose_pods_cannot_pull_their_image_is_failed_with_the_kubelets_reason(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    """kwok reports the serve's pods as a kubelet does for an image it cannot pull (the pod label
    of ``kwok_stages``, given through ``env_configs.pod_labels``); the Deployment controller
    would only give up at its progress deadline (600 s)."""
    serve, env = unique("pull"), unique("prod")
    config: dict[str, Any] = {
        **darwin.env_configs(namespace),
        "pod_labels": {OUTCOME_LABEL: "image-pull-error"},
        "pod_annotations": {REASON_ANNOTATION: "ImagePullBackOff"},
    }
    seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1, env_config=config)
    deployment_id = await darwin.deploy(seed, "v1")
    await darwin.insert("app_layer_deployments", deployment_id=deployment_id, environment_variables={})
    name = names.mlserve_name(serve, env)

    body = wait_condition(kube_client, name, namespace, "Ready", "False", reason="ImagePullError", timeout=90)
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert body["status"]["phase"] == "Failed"
    image = f"registry.example.com/{serve}:v1"
    assert f"cannot pull image '{image}'" in ready["message"] and "ImagePullBackOff" in ready["message"]
    assert "0/1 pods of this version ready" in ready["message"]
    wait_for(
        lambda: any(e.reason == "ImagePullError" for e in events(kube_client, namespace, name)),
        timeout=30,
        what="the ImagePullError Event",
    )

    # Fixed (here: the environment no longer makes kwok fail the pull): Ready again.
    await darwin.query(
        "UPDATE environments SET env_configs = ?, updated_at = ? WHERE id = ?",
        json.dumps(darwin.env_configs(namespace)),
        darwin._now(),
        seed.environment,
    )
    body = wait_condition(kube_client, name, namespace, "Ready", timeout=120)
    assert body["status"]["phase"] == "Ready"
