"""The children's cache (reconcile/cache.py) fed by a real list + watch, and the apply that
reads it: a converged apply sends no request, and only changes the reconcile reads enqueue
the owner. The requests are counted on the real API server."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType
from mlserve_testing.operator import install_crds
from mlserve_testing.wait import async_wait_for, wait_for

from mlserve.operator.dev.cluster import ClusterHandle
from mlserve.operator.reconcile.apply import NameTaken, Owner, apply_children
from mlserve.operator.reconcile.cache import UNKNOWN, ChildCache, Informer
from mlserve.operator.reconcile.controller import CHILD_SELECTOR, OTHERS_SELECTOR
from mlserve.operator.reconcile.kube import MLServe, RequestCounter
from mlserve.operator.render import names
from mlserve.operator.spec.api import API_VERSION, KIND

pytestmark = pytest.mark.cluster

MANAGER = "mlserve-operator"


class Notified:
    """The owners the cache asked to enqueue, and a way to wait for one."""

    def __init__(self) -> None:
        self.uids: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, uids: Iterable[str]) -> None:
        self.uids.extend(uids)
        self.changed.set()

    async def wait_for(self, uid: str, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while uid not in self.uids:
                self.changed.clear()
                await self.changed.wait()


COUNTER = RequestCounter(keep_log=True)
"""The requests of the reconcile's client (the watches have a client of their own)."""


@pytest.fixture
async def client(cluster: ClusterHandle, mlserve_crd: None, kube_client: Client) -> AsyncIterator[AsyncClient]:
    wait_for(
        lambda: list(kube_client.list(MLServe, namespace="default")) is not None,
        60,
        "MLServes listable",
        ignore=(ApiError,),
    )
    client = cluster.async_client(field_manager=MANAGER)
    client._client._client.event_hooks["request"].append(COUNTER)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def watch_client(cluster: ClusterHandle) -> AsyncIterator[AsyncClient]:
    client = cluster.async_client(field_manager=MANAGER)
    try:
        yield client
    finally:
        await client.close()


async def _owner(client: AsyncClient, namespace: str, name: str) -> Owner:
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"serve": "iris", "environment": name, "type": "api", "artifactVersion": "v1"},
    }
    created = (await client.create(MLServe.from_dict(body))).to_dict()
    return Owner(API_VERSION, KIND, name, namespace, created["metadata"]["uid"])


def _labels(environment: str) -> dict[str, str]:
    return names.labels("iris", environment)


def _service(environment: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"iris-{environment}", "labels": _labels(environment)},
        "spec": {"selector": {"app": "iris"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def _hpa(environment: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"iris-{environment}", "labels": _labels(environment)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"iris-{environment}"},
            "minReplicas": 1,
            "maxReplicas": 3,
        },
    }


@pytest.fixture
async def informers(watch_client: AsyncClient, namespace: str) -> AsyncIterator[tuple[ChildCache, Notified]]:
    notified = Notified()
    cache = ChildCache(notified)
    running = []
    for resource, kind in ((Service, "Service"), (HorizontalPodAutoscaler, "HorizontalPodAutoscaler")):
        # As the controller runs them: the children, and the metadata of the kind's other objects.
        cache.watch_others(kind)
        for informer in (
            Informer(
                watch_client,
                resource,
                namespace,
                put=cache.put,
                remove=lambda ns, name, _uid, kind=kind: cache.remove(ns, kind, name),
                labels=CHILD_SELECTOR,
            ),
            Informer(
                watch_client,
                resource,
                namespace,
                put=cache.other_seen(kind),
                remove=cache.other_gone(kind),
                labels=OTHERS_SELECTOR,
                metadata_only=True,
            ),
        ):
            running.append((informer, asyncio.create_task(informer.run())))
    try:
        async with asyncio.timeout(30):
            for informer, _ in running:
                await informer.synced.wait()
        yield cache, notified
    finally:
        for _, task in running:
            task.cancel()
        await asyncio.gather(*(task for _, task in running), return_exceptions=True)


async def _apply(
    client: AsyncClient, cache: ChildCache, owner: Owner, manifests: list[dict[str, Any]]
) -> tuple[Any, RequestCounter]:
    COUNTER.reset()
    selector = {**names.selector("iris", owner.name), "app.kubernetes.io/managed-by": "mlserve-operator"}
    result = await apply_children(
        client, manifests, owner, selector, (Service, HorizontalPodAutoscaler), MANAGER, cache=cache
    )
    counter = RequestCounter(collections.Counter(COUNTER.by_method), list(COUNTER.log))
    return result, counter


async def test_a_converged_apply_from_the_cache_sends_no_request(
    client: AsyncClient, namespace: str, informers: tuple[ChildCache, Notified]
) -> None:
    cache, notified = informers
    owner = await _owner(client, namespace, "dev")
    manifests = [_service("dev"), _hpa("dev")]

    first, counter = await _apply(client, cache, owner, manifests)
    assert sorted(first.applied) == ["HorizontalPodAutoscaler/iris-dev", "Service/iris-dev"]
    assert counter.writes == 2, counter.log

    # At once (the watch may not have delivered yet: the answers of the applies are cached).
    second, counter = await _apply(client, cache, owner, manifests)
    assert not second.changed and counter.total == 0, counter.log

    # A hand edit reaches the cache through the watch, enqueues the owner and is put back.
    notified.uids.clear()
    await client.patch(
        Service,
        "iris-dev",
        {"spec": {"selector": {"app": "evil"}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
        field_manager="kubectl-edit",
    )
    await notified.wait_for(owner.uid)
    third, counter = await _apply(client, cache, owner, manifests)
    assert third.applied == ["Service/iris-dev"] and "Service/iris-dev" in third.drift
    assert counter.by_method == {"PATCH": 1}, counter.log

    # Deleted by hand: gone from the cache, the owner enqueued, created again.
    notified.uids.clear()
    await client.delete(HorizontalPodAutoscaler, "iris-dev", namespace=namespace)
    await notified.wait_for(owner.uid)
    fourth, counter = await _apply(client, cache, owner, manifests)
    assert fourth.applied == ["HorizontalPodAutoscaler/iris-dev"]


async def test_new_children_are_written_without_a_read_unless_another_object_holds_the_name(
    client: AsyncClient, namespace: str, informers: tuple[ChildCache, Notified]
) -> None:
    """The watches of every other object's metadata say which names are free: a new serve's
    children cost their writes only. A name held by an object made by hand is read, and the
    apply refuses it (NameTaken) without writing anything."""
    cache, _ = informers
    owner = await _owner(client, namespace, "dev")
    created, counter = await _apply(client, cache, owner, [_service("dev"), _hpa("dev")])
    assert sorted(created.applied) == ["HorizontalPodAutoscaler/iris-dev", "Service/iris-dev"]
    assert counter.by_method == {"PATCH": 2}, counter.log

    hand_made = _service("qa")
    hand_made["metadata"]["labels"] = {"team": "web"}
    await client.create(Service.from_dict(hand_made), namespace=namespace)

    async def name_held() -> bool:
        return cache.by_name(namespace, "Service", "iris-qa") is UNKNOWN

    await async_wait_for(name_held, 20, "the hand-made Service's name in the cache")
    other = await _owner(client, namespace, "qa")
    COUNTER.reset()
    with pytest.raises(NameTaken) as raised:
        await apply_children(
            client,
            [_service("qa"), _hpa("qa")],
            other,
            {**names.selector("iris", "qa"), "app.kubernetes.io/managed-by": "mlserve-operator"},
            (Service, HorizontalPodAutoscaler),
            MANAGER,
            cache=cache,
        )
    assert "Service/iris-qa" in str(raised.value)
    # One read, of the held name; the free HPA name is not read, and nothing is written.
    assert COUNTER.log == [("GET", f"/api/v1/namespaces/{namespace}/services/iris-qa")], COUNTER.log

    # Deleted: the name is free again, and the serve's children are written without a read.
    await client.delete(Service, "iris-qa", namespace=namespace)

    async def name_free() -> bool:
        return cache.by_name(namespace, "Service", "iris-qa") is None

    await async_wait_for(name_free, 20, "the hand-made Service's name gone from the cache")
    created, counter = await _apply(client, cache, other, [_service("qa"), _hpa("qa")])
    assert counter.by_method == {"PATCH": 2}, counter.log


async def test_only_changes_the_reconcile_reads_enqueue_the_owner(
    client: AsyncClient, namespace: str, informers: tuple[ChildCache, Notified]
) -> None:
    cache, notified = informers
    owner = await _owner(client, namespace, "dev")
    other = await _owner(client, namespace, "qa")
    await _apply(client, cache, owner, [_hpa("dev")])
    await _apply(client, cache, other, [_hpa("qa")])

    async def label_qa(step: str) -> None:
        """A change the reconcile reads, on the other HPA: once its event is in, every event
        of the same watch before it is in too."""
        await client.patch(
            HorizontalPodAutoscaler,
            "iris-qa",
            {"metadata": {"labels": {"example.com/step": step}}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        await notified.wait_for(other.uid)

    await label_qa("1")  # the watch has caught up with both creations
    notified.uids.clear()  # (the status patch below comes after: no event of it is lost)
    # What the HPA controller writes: metrics in the status, which the reconcile never reads.
    await client.patch(
        HorizontalPodAutoscaler.Status,
        "iris-dev",
        {
            "status": {
                "currentReplicas": 1,
                "desiredReplicas": 1,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 42}}}
                ],
            }
        },
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    await label_qa("2")
    assert owner.uid not in notified.uids, notified.uids


async def test_a_kind_not_served_is_looked_for_by_discovery_and_listed_once_installed(
    kube_client: Client, watch_client: AsyncClient, namespace: str
) -> None:
    """A cluster without a child kind's CRD (KubeRay's, say) is asked again with discovery
    GETs, never with a LIST per look: an idle operator lists nothing. Once the CRD is
    installed, the informer lists and watches the kind."""
    group = f"t{uuid.uuid4().hex[:10]}.mlserve.test"
    resource = create_namespaced_resource(group, "v1", "Probe", "probes")
    requests = RequestCounter(keep_log=True)
    watch_client._client._client.event_hooks["request"].append(requests)
    seen: list[str] = []
    informer = Informer(
        watch_client,
        resource,
        namespace,
        put=lambda obj: seen.append(obj["metadata"]["name"]),
        remove=lambda *_: None,
        retry_delay=0.1,
        max_delay=0.2,
    )
    task = asyncio.create_task(informer.run())
    crd = CustomResourceDefinition.from_dict(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"probes.{group}"},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"kind": "Probe", "plural": "probes", "singular": "probe", "listKind": "ProbeList"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                ],
            },
        }
    )
    listing = f"/apis/{group}/v1/namespaces/{namespace}/probes"
    try:
        async with asyncio.timeout(30):
            await informer.synced.wait()
        assert not informer.served
        discovery = ("GET", f"/apis/{group}/v1")

        async def looked_three_times() -> bool:
            return requests.log.count(discovery) >= 3

        await async_wait_for(looked_three_times, 30, "three discovery looks")
        assert [r for r in requests.log if r[1] == listing] == [("GET", listing)], requests.log

        await asyncio.to_thread(install_crds, kube_client, [crd])
        probe = resource.from_dict({"apiVersion": f"{group}/v1", "kind": "Probe", "metadata": {"name": "p1"}})
        await watch_client.create(probe, namespace=namespace)

        async def probe_seen() -> bool:
            return "p1" in seen

        await async_wait_for(probe_seen, 30, "the probe listed or watched once the CRD is served")
        assert informer.served
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(ApiError):
            kube_client.delete(CustomResourceDefinition, crd.metadata.name)
