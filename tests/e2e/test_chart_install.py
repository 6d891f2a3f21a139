"""The chart installed into a real API server (the local control plane, or $KUBECONFIG's).

Every object of the release is accepted and readable afterwards, kopf's peering CRDs come
from the chart's crds/ folder, and the operator's pod is scheduled on a kwok node and
reported Running by kwok (kwok plays the kubelet: the image is never pulled or run).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client, codecs
from lightkube.generic_resource import load_in_cluster_generic_resources
from lightkube.resources.core_v1 import Node, Pod
from mlserve_testing.chart import CHART, VALUES_DIR, Helm, objects_of, one
from mlserve_testing.wait import wait_for

from mlserve.operator.dev.cluster import ClusterHandle

pytestmark = pytest.mark.cluster

POD_TIMEOUT = 90.0


class Release:
    def __init__(self, helm: Helm, cluster: ClusterHandle, name: str, namespace: str) -> None:
        self.helm, self.cluster, self.name, self.namespace = helm, cluster, name, namespace

    def run(self, *args: str, check: bool = True) -> Any:
        context = ["--kube-context", self.cluster.context] if self.cluster.context else []
        return self.helm.run(
            *args, "--namespace", self.namespace, *context, kubeconfig=self.cluster.kubeconfig, check=check
        )

    def manifest(self) -> list[dict[str, Any]]:
        return [doc for doc in yaml.safe_load_all(self.run("get", "manifest", self.name).stdout) if doc]


@pytest.fixture
def release(helm: Helm, cluster: ClusterHandle, namespace: str) -> Iterator[Release]:
    installed = Release(helm, cluster, f"mls-{uuid.uuid4().hex[:6]}", namespace)
    yield installed
    installed.run("uninstall", installed.name, "--wait", "--timeout", "60s", check=False)


def _pods(client: Client, release: Release) -> list[Pod]:
    return list(client.list(Pod, namespace=release.namespace, labels={"app.kubernetes.io/instance": release.name}))


def _running_on_kwok_node(client: Client, release: Release) -> list[Pod] | None:
    pods = _pods(client, release)
    if not pods or any(p.status is None or p.status.phase != "Running" or not p.spec.nodeName for p in pods):
        return None
    return pods


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_chart_installs_and_the_operator_pod_runs_on_a_kwok_node(
    release: Release, kube_client: Client, mode: str
) -> None:
    args = ["--values", str(VALUES_DIR / "kwok.yaml"), "--set", f"clusterName={release.name}"]
    # The MLServe CRD is shared by the session's other tests; the next test applies the
    # chart's rendering of it with a server-side dry run instead.
    args += ["--set", "crds.install=false"]
    if mode == "namespaced":
        args += ["--set", f"watchNamespaces[0]={release.namespace}"]
    installed = release.run("install", release.name, str(CHART), *args)
    assert f"is installed as release {release.name} in {release.namespace}" in installed.stdout  # NOTES.txt

    load_in_cluster_generic_resources(kube_client)  # kopf's peering kinds, from the chart's crds/
    manifest = release.manifest()
    assert {"Deployment", "ServiceAccount", "ConfigMap"} <= {o["kind"] for o in manifest}
    assert objects_of(manifest, "KopfPeering" if mode == "namespaced" else "ClusterKopfPeering")
    for obj in manifest:
        resource = type(codecs.from_dict(obj))
        metadata = obj["metadata"]
        live = kube_client.get(resource, metadata["name"], namespace=metadata.get("namespace"))
        assert live.metadata.labels["app.kubernetes.io/instance"] == release.name

    pods = wait_for(
        lambda: _running_on_kwok_node(kube_client, release),
        timeout=POD_TIMEOUT,
        what=f"the operator pod of release {release.name} Running on a node",
    )
    deployment = one(manifest, "Deployment")
    assert len(pods) == deployment["spec"]["replicas"]
    for pod in pods:
        node = kube_client.get(Node, pod.spec.nodeName)
        assert node.metadata.labels.get("type") == "kwok", f"{pod.metadata.name} landed on {node.metadata.name}"
        assert pod.spec.serviceAccountName == deployment["spec"]["template"]["spec"]["serviceAccountName"]
        assert pod.spec.containers[0].securityContext.readOnlyRootFilesystem is True


def test_chart_crd_is_accepted_by_the_api_server(helm: Helm, kube_client: Client) -> None:
    crd = one(helm.template(), "CustomResourceDefinition")
    try:
        kube_client.apply(codecs.from_dict(crd), field_manager="mlserve-chart-test", force=True, dry_run=True)
    except ApiError as exc:
        raise AssertionError(f"the API server refused the chart's CRD: {exc.status.message}") from None
