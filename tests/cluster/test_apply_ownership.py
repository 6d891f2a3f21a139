"""Children's names: a name held by an object this MLServe does not control is never written.

A hand-made object with a child's name, or the child of another MLServe whose (serve,
environment) renders the same names (``fraud-model``/``prod`` and ``fraud``/``model-prod``),
stops the apply before anything is written (reason ``NameTaken``); the name is taken once it
is free. The requests are counted on the real API server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient, Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Service
from mlserve_testing import darwin
from mlserve_testing.wait import wait_for

from mlserve.operator.dev.cluster import ClusterHandle
from mlserve.operator.reconcile.apply import NameTaken, Owner, apply_children
from mlserve.operator.reconcile.events import RecordingEvents
from mlserve.operator.reconcile.kube import API_KINDS, MLServe, RequestCounter
from mlserve.operator.reconcile.mlserve import Report, Runtime, reconcile
from mlserve.operator.render.settings import RenderSettings
from mlserve.operator.settings import OperatorSettings
from mlserve.operator.spec.api import API_VERSION, KIND

pytestmark = pytest.mark.cluster

MANAGER = "mlserve-operator"
SELECTOR = {"mlserve.darwin.io/serve": "iris", "mlserve.darwin.io/managed-by": "mlserve-operator"}


@pytest.fixture
async def counted(
    cluster: ClusterHandle, mlserve_crd: None, kube_client: Client
) -> AsyncIterator[tuple[AsyncClient, RequestCounter]]:
    # Established is not yet servable: the new storage may answer 429 for a moment.
    wait_for(
        lambda: list(kube_client.list(MLServe, namespace="default")) is not None,
        60,
        "MLServes listable",
        ignore=(ApiError,),
    )
    counter = RequestCounter(keep_log=True)
    client = cluster.async_client(field_manager=MANAGER)
    client._client._client.event_hooks["request"].append(counter)
    try:
        yield client, counter
    finally:
        await client.close()


def _service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": dict(SELECTOR)},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def _config_map(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": dict(SELECTOR)}, "data": {}}


def _by_name(counter: RequestCounter, namespace: str) -> list[tuple[str, str]]:
    """The GETs of one object by name (a list's path ends with the plural)."""
    return [
        (method, path)
        for method, path in counter.log
        if method == "GET" and path.startswith(f"/api/v1/namespaces/{namespace}/") and path.count("/") == 6
    ]


# --- apply_children directly ---------------------------------------------------------------------


async def _owner(client: AsyncClient, namespace: str, name: str) -> Owner:
    """A real MLServe to own the children: with an owner that does not exist, the garbage
    collector would delete them at any moment of the test."""
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"serve": "iris", "environment": name, "type": "api", "artifactVersion": "v1"},
    }
    created = (await client.create(MLServe.from_dict(body))).to_dict()
    return Owner(API_VERSION, KIND, name, namespace, created["metadata"]["uid"])


async def test_a_converged_apply_reads_no_child_by_name(
    counted: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    client, counter = counted
    owner = await _owner(client, namespace, "iris-dev")
    counter.reset()
    manifests = [_service("iris-dev"), _config_map("iris-dev")]

    first = await apply_children(client, manifests, owner, SELECTOR, (Service, ConfigMap), MANAGER)
    assert sorted(first.applied) == ["ConfigMap/iris-dev", "Service/iris-dev"]
    assert sorted(_by_name(counter, namespace)) == [
        ("GET", f"/api/v1/namespaces/{namespace}/configmaps/iris-dev"),
        ("GET", f"/api/v1/namespaces/{namespace}/services/iris-dev"),
    ], "each new child is read by name once before its first apply"

    counter.reset()
    second = await apply_children(client, manifests, owner, SELECTOR, (Service, ConfigMap), MANAGER)
    assert not second.changed and sorted(second.unchanged) == ["ConfigMap/iris-dev", "Service/iris-dev"]
    assert _by_name(counter, namespace) == [], "a converged apply finds every child in the list"
    assert counter.by_method == {"GET": 2}, counter.log  # one list per kind, nothing else


async def test_a_hand_made_object_with_a_childs_name_is_left_alone(
    counted: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    client, counter = counted
    hand_made = (
        await client.create(
            Service.from_dict(
                {
                    "metadata": {"name": "iris-dev"},
                    "spec": {"selector": {"app": "mine"}, "ports": [{"port": 8000}]},
                }
            ),
            namespace=namespace,
        )
    ).to_dict()
    owner = await _owner(client, namespace, "iris-dev")
    counter.reset()

    with pytest.raises(NameTaken) as raised:
        await apply_children(
            client, [_config_map("iris-dev"), _service("iris-dev")], owner, SELECTOR, (Service, ConfigMap), MANAGER
        )
    assert raised.value.reason == "NameTaken"
    assert raised.value.taken == ["Service/iris-dev"]
    assert "Service/iris-dev" in raised.value.message and "delete it" in raised.value.message
    assert counter.writes == 0, f"checked every child before writing any: {counter.log}"

    after = (await client.get(Service, "iris-dev", namespace=namespace)).to_dict()
    assert after["metadata"]["resourceVersion"] == hand_made["metadata"]["resourceVersion"]
    assert not after["metadata"].get("ownerReferences")


async def test_a_labelled_child_of_another_owner_is_not_overwritten(
    counted: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    client, counter = counted
    other = await _owner(client, namespace, "older")
    await apply_children(client, [_service("iris-dev")], other, SELECTOR, (Service,), MANAGER)
    held = (await client.get(Service, "iris-dev", namespace=namespace)).to_dict()

    owner = await _owner(client, namespace, "iris-dev")
    counter.reset()
    with pytest.raises(NameTaken) as raised:
        await apply_children(client, [_service("iris-dev")], owner, SELECTOR, (Service,), MANAGER)
    assert f"held by MLServe {namespace}/older" in raised.value.message
    assert counter.writes == 0 and _by_name(counter, namespace) == []  # found by the list
    after = (await client.get(Service, "iris-dev", namespace=namespace)).to_dict()
    assert after["metadata"]["resourceVersion"] == held["metadata"]["resourceVersion"]
    # and not pruned either when no longer rendered: it is not ours
    result = await apply_children(client, [], owner, SELECTOR, (Service,), MANAGER)
    assert result.pruned == []


# --- through the MLServe's reconcile -------------------------------------------------------------


async def _create(client: AsyncClient, namespace: str, name: str, serve: str, environment: str) -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"serve": serve, "environment": environment, "type": "api", "artifactVersion": "v1"},
    }
    await client.create(MLServe.from_dict(body))


def _runtime(client: AsyncClient, events: RecordingEvents) -> Runtime:
    settings = OperatorSettings(cluster_name="local", render=RenderSettings(), database=None, deploy_user="admin")
    return Runtime(settings=settings, client=client, events=events, clock=lambda: datetime.now(UTC))


async def _reconcile(client: AsyncClient, runtime: Runtime, namespace: str, name: str) -> Report:
    return await reconcile((await client.get(MLServe, name, namespace=namespace)).to_dict(), runtime)


async def _condition(client: AsyncClient, namespace: str, name: str, type_: str) -> dict[str, Any]:
    status = (await client.get(MLServe, name, namespace=namespace)).to_dict().get("status") or {}
    return next(c for c in status.get("conditions") or [] if c["type"] == type_)


async def test_the_mlserve_reports_name_taken_and_converges_once_the_name_is_free(
    counted: tuple[AsyncClient, RequestCounter], namespace: str, sqlite_darwin_db: None
) -> None:
    client, _ = counted
    await darwin.seed_api_serve("checkout", "prod", namespace, min_replicas=1, max_replicas=1)
    hand_made = (
        await client.create(
            Service.from_dict({"metadata": {"name": "checkout-prod"}, "spec": {"ports": [{"port": 8000}]}}),
            namespace=namespace,
        )
    ).to_dict()
    await _create(client, namespace, "checkout-prod", "checkout", "prod")
    events = RecordingEvents()
    runtime = _runtime(client, events)

    for _ in range(2):
        report = await _reconcile(client, runtime, namespace, "checkout-prod")
        assert isinstance(report.error, NameTaken), report.error
        assert report.retry_after is not None, "retried with backoff"
        assert report.applied == []
    synced = await _condition(client, namespace, "checkout-prod", "Synced")
    assert (synced["status"], synced["reason"]) == ("False", "NameTaken")
    assert "Service/checkout-prod" in synced["message"]
    assert [(e.type, e.reason) for e in events.events if e.reason == "NameTaken"] == [("Warning", "NameTaken")]
    after = (await client.get(Service, "checkout-prod", namespace=namespace)).to_dict()
    assert after["metadata"]["resourceVersion"] == hand_made["metadata"]["resourceVersion"]
    assert not after["metadata"].get("ownerReferences")
    assert [d async for d in client.list(Deployment, namespace=namespace)] == [], "nothing written"

    await client.delete(Service, "checkout-prod", namespace=namespace)
    report = await _reconcile(client, runtime, namespace, "checkout-prod")
    assert report.error is None, report.error
    assert "Service/checkout-prod" in report.applied
    uid = (await client.get(MLServe, "checkout-prod", namespace=namespace)).to_dict()["metadata"]["uid"]
    service = (await client.get(Service, "checkout-prod", namespace=namespace)).to_dict()
    assert [ref["uid"] for ref in service["metadata"]["ownerReferences"]] == [uid]
    synced = await _condition(client, namespace, "checkout-prod", "Synced")
    assert (synced["status"], synced["reason"]) == ("True", "Applied")


async def test_two_mlserves_rendering_the_same_names_do_not_fight(
    counted: tuple[AsyncClient, RequestCounter], namespace: str, sqlite_darwin_db: None
) -> None:
    client, counter = counted
    # fraud-model/prod and fraud/model-prod: both render fraud-model-prod
    await darwin.seed_api_serve("fraud-model", "prod", namespace)
    await darwin.seed_api_serve("fraud", "model-prod", namespace)
    await _create(client, namespace, "first", "fraud-model", "prod")
    await _create(client, namespace, "second", "fraud", "model-prod")
    runtime = _runtime(client, RecordingEvents())

    first = await _reconcile(client, runtime, namespace, "first")
    assert first.error is None, first.error
    first_uid = (await client.get(MLServe, "first", namespace=namespace)).to_dict()["metadata"]["uid"]

    async def children() -> dict[str, tuple[Any, Any, list[str]]]:
        """Kind/name -> (generation, when our field manager last wrote it, its owners): the
        resourceVersion is no witness, the Deployment's status moves on as its pods start."""
        out = {}
        for kind in API_KINDS:
            async for obj in client.list(kind, namespace=namespace):
                meta = obj.to_dict()["metadata"] if hasattr(obj, "to_dict") else obj["metadata"]
                refs = [ref["uid"] for ref in meta.get("ownerReferences") or []]
                ours = [
                    entry["time"]
                    for entry in meta.get("managedFields") or []
                    if entry.get("manager") == MANAGER and not entry.get("subresource")
                ]
                out[f"{kind.__name__}/{meta['name']}"] = (meta.get("generation"), ours, refs)
        return out

    held = await children()
    assert held and all(refs == [first_uid] for _, _, refs in held.values()), held
    assert {name.split("/")[1] for name in held} == {"fraud-model-prod"}

    for _ in range(3):
        counter.reset()
        second = await _reconcile(client, runtime, namespace, "second")
        assert isinstance(second.error, NameTaken), second.error
        assert f"held by MLServe {namespace}/first" in second.error.message
        child_writes = [(m, p) for m, p in counter.log if m != "GET" and "fraud-model-prod" in p]
        assert child_writes == [], f"the second MLServe wrote the first one's children: {child_writes}"

        counter.reset()
        again = await _reconcile(client, runtime, namespace, "first")
        assert again.error is None and again.applied == [] and again.pruned == [], again
        child_writes = [(m, p) for m, p in counter.log if m != "GET" and "fraud-model-prod" in p]
        assert child_writes == [], f"the first MLServe rewrote its children: {child_writes}"

    assert await children() == held, "the first MLServe's children untouched"
    synced = await _condition(client, namespace, "second", "Synced")
    assert (synced["status"], synced["reason"]) == ("False", "NameTaken")
    assert "delete the other MLServe" in synced["message"]
