"""Children of a kind the cluster does not serve (its CRD is not installed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from lightkube import AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import ConfigMap

from mlserve.operator.dev.cluster import ClusterHandle
from mlserve.operator.reconcile.apply import Owner, apply_children, list_children
from mlserve.operator.reconcile.errors import TemporaryFailure

# No CRD ever defines these: one in a group the server does not know at all, one in a
# group it may serve (KubeRay's) under a resource name it never serves.
Absent = create_namespaced_resource("absent.mlserve.darwin.io", "v1", "Absent", "absents")
AbsentRay = create_namespaced_resource("ray.io", "v1", "RayAbsentJob", "rayabsentjobs")
SELECTOR = {"mlserve.darwin.io/serve": "etl"}


@pytest.fixture
async def aclient(cluster: ClusterHandle) -> AsyncIterator[AsyncClient]:
    client = cluster.async_client(field_manager="mlserve-tests")
    try:
        yield client
    finally:
        await client.close()


async def test_a_kind_the_cluster_does_not_serve_has_no_children(aclient: AsyncClient, namespace: str) -> None:
    live = await list_children(aclient, (ConfigMap, Absent, AbsentRay), namespace, SELECTOR)
    assert live == {}


async def test_applying_a_child_of_a_missing_kind_says_to_install_its_crd(aclient: AsyncClient, namespace: str) -> None:
    owner = Owner("mlserve.darwin.io/v1alpha1", "MLServe", "etl-dev", namespace, "uid-1")
    manifest = {
        "apiVersion": "ray.io/v1",
        "kind": "RayAbsentJob",
        "metadata": {"name": "etl-dev", "labels": dict(SELECTOR)},
        "spec": {},
    }
    with pytest.raises(TemporaryFailure) as raised:
        await apply_children(aclient, [manifest], owner, SELECTOR, (ConfigMap, AbsentRay), "mlserve-tests")
    assert raised.value.reason == "KindNotInstalled"
    assert "RayAbsentJob" in raised.value.message and "install KubeRay's CRDs" in raised.value.message
