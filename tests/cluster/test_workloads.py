"""The controllers, the scheduler and the nodes really run: a Deployment becomes a
ReplicaSet and Pods that are scheduled and become Ready, and deleting it
garbage-collects what it owned; a pod marked not Ready while its node was away is Ready
again."""

from __future__ import annotations

import pytest
from lightkube import ApiError, Client
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import CascadeType, PatchType
from mlserve_testing.wait import wait_for

pytestmark = pytest.mark.cluster

REPLICAS = 3
TIMEOUT = 90
# runs on a real kubelet too (kind): a container that starts and stays up
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def _deployment(name: str) -> Deployment:
    labels = {"app": name}
    return Deployment(
        metadata=ObjectMeta(name=name, labels=labels),
        spec=DeploymentSpec(
            replicas=REPLICAS,
            selector=LabelSelector(matchLabels=labels),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels=labels),
                spec=PodSpec(containers=[Container(name="app", image=PAUSE_IMAGE)]),
            ),
        ),
    )


def _owned_by(obj: ReplicaSet | Pod, uid: str) -> bool:
    return any(ref.uid == uid for ref in (obj.metadata.ownerReferences or []))


def _replica_sets_of(client: Client, namespace: str, owner_uid: str) -> list[ReplicaSet]:
    return [rs for rs in client.list(ReplicaSet, namespace=namespace) if _owned_by(rs, owner_uid)]


def _pod_ready(pod: Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_deployment_gets_replicaset_and_ready_pods_on_nodes(kube_client: Client, namespace: str) -> None:
    created = kube_client.create(_deployment("web"), namespace=namespace)
    deployment_uid = created.metadata.uid

    replica_set = wait_for(
        lambda: next(iter(_replica_sets_of(kube_client, namespace, deployment_uid)), None),
        TIMEOUT,
        "a ReplicaSet owned by the Deployment",
    )
    ready = wait_for(
        lambda: (kube_client.get(Deployment, "web", namespace=namespace).status.readyReplicas or 0) == REPLICAS,
        TIMEOUT,
        f"Deployment web to report readyReplicas={REPLICAS}",
    )
    assert ready

    pods = [p for p in kube_client.list(Pod, namespace=namespace) if _owned_by(p, replica_set.metadata.uid)]
    assert len(pods) == REPLICAS
    node_names = {n.metadata.name for n in kube_client.list(Node)}
    for pod in pods:
        assert pod.spec.nodeName in node_names, f"{pod.metadata.name} is not on a node of the cluster"
        assert pod.status.phase == "Running"
        assert _pod_ready(pod)


def test_deleting_a_deployment_garbage_collects_replicaset_and_pods(kube_client: Client, namespace: str) -> None:
    created = kube_client.create(_deployment("doomed"), namespace=namespace)

    def all_pods_ready() -> bool:
        pods = list(kube_client.list(Pod, namespace=namespace, labels={"app": "doomed"}))
        return len(pods) == REPLICAS and all(_pod_ready(p) for p in pods)

    wait_for(all_pods_ready, TIMEOUT, f"{REPLICAS} ready pods of Deployment doomed")

    kube_client.delete(Deployment, "doomed", namespace=namespace, cascade=CascadeType.BACKGROUND)

    def deployment_gone() -> bool:
        try:
            kube_client.get(Deployment, "doomed", namespace=namespace)
        except ApiError as exc:
            return exc.status.code == 404
        return False

    wait_for(deployment_gone, TIMEOUT, "Deployment doomed to be deleted")
    wait_for(
        lambda: not _replica_sets_of(kube_client, namespace, created.metadata.uid),
        TIMEOUT,
        "the garbage collector to delete the ReplicaSet of Deployment doomed",
    )
    wait_for(
        lambda: not list(kube_client.list(Pod, namespace=namespace, labels={"app": "doomed"})),
        TIMEOUT,
        "the pods of Deployment doomed to be deleted",
    )


def test_a_pod_marked_not_ready_while_its_node_was_away_is_ready_again(kube_client: Client, namespace: str) -> None:
    """The node lifecycle controller marks a node's pods not Ready when its heartbeats lapse
    (an etcd or API server outage); the node's kubelet, once back, reports them Ready again.
    Without that, a rollout under way during an outage of the control plane never ends."""
    kube_client.create(_deployment("back"), namespace=namespace)

    def ready_pods() -> list[Pod]:
        pods = list(kube_client.list(Pod, namespace=namespace, labels={"app": "back"}))
        return pods if len(pods) == REPLICAS and all(_pod_ready(p) for p in pods) else []

    pod = wait_for(ready_pods, TIMEOUT, f"{REPLICAS} ready pods of Deployment back")[0]
    # What the node lifecycle controller writes to each pod of a node it finds not ready.
    kube_client.patch(
        Pod.Status,
        pod.metadata.name,
        {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        namespace=namespace,
        patch_type=PatchType.STRATEGIC,
    )
    wait_for(
        lambda: _pod_ready(kube_client.get(Pod, pod.metadata.name, namespace=namespace)),
        TIMEOUT,
        f"pod {pod.metadata.name} to be Ready again",
    )
