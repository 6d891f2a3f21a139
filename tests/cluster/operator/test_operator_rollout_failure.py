"""A rollout the Deployment controller gives up on is phase Failed, with the controller's
reason and message, and becomes Ready again once the cause is gone. The fault is real: a
ResourceQuota that leaves no room for the new version's pod, enforced by the API server and
reported by kube-controller-manager's Deployment controller."""

from __future__ import annotations

import pytest
from lightkube import Client
from lightkube.models.core_v1 import ResourceQuotaSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ResourceQuota
from mlserve_testing.mlserves import apply, events, mlserve, ready_at_v1, wait_condition
from mlserve_testing.operator import OperatorProcess
from mlserve_testing.wait import wait_for

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
