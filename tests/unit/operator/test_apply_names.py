"""Who may write a child's name, and what it costs to find out: apply_children against an
in-memory API server (an httpx mock transport), its requests counted by method and path."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.config.models import User
from lightkube.resources.core_v1 import ConfigMap, Service

from mlserve.operator.reconcile.apply import NameTaken, Owner, apply_children
from mlserve.operator.reconcile.kube import RequestCounter
from mlserve.operator.reconcile.status import Observation, compute_status

NS = "team-a"
OWNER = Owner("mlserve.darwin.io/v1alpha1", "MLServe", "fraud", NS, "uid-fraud")
OTHER = Owner("mlserve.darwin.io/v1alpha1", "MLServe", "fraud-model", NS, "uid-other")
SELECTOR = {"mlserve.darwin.io/serve": "fraud", "app.kubernetes.io/managed-by": "mlserve-operator"}
KINDS = (Service, ConfigMap)
PLURALS = {"services": "Service", "configmaps": "ConfigMap"}


class FakeServer:
    """Just enough of the API server for apply_children: list by labels, get, apply."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0

    def put(self, plural: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj = {**obj, "kind": PLURALS[plural], "apiVersion": "v1"}
        obj["metadata"] = {**obj["metadata"], "namespace": NS, "resourceVersion": str(self.version)}
        self.objects[(plural, obj["metadata"]["name"])] = obj

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        parts = request.url.path.strip("/").split("/")  # api v1 namespaces NS plural [name]
        plural = parts[4]
        if request.method == "GET" and len(parts) == 5:
            wanted = dict(
                pair.split("=", 1) for pair in (request.url.params.get("labelSelector") or "").split(",") if pair
            )
            items = [
                obj
                for (p, _), obj in sorted(self.objects.items())
                if p == plural and all(obj["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
            ]
            return httpx2.Response(200, json={"kind": f"{PLURALS[plural]}List", "apiVersion": "v1", "items": items})
        name = parts[5]
        if request.method == "GET":
            if (plural, name) not in self.objects:
                status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}
                return httpx2.Response(404, json=status)
            return httpx2.Response(200, json=self.objects[(plural, name)])
        assert request.method == "PATCH", request
        self.put(plural, json.loads(request.content))
        return httpx2.Response(200, json=self.objects[(plural, name)])


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def counted(server: FakeServer) -> AsyncIterator[tuple[AsyncClient, RequestCounter]]:
    counter = RequestCounter(keep_log=True)
    config = KubeConfig.from_server("http://api.invalid").get()._replace(user=User(token="t"))
    client = AsyncClient(config, transport=httpx2.MockTransport(server.handle))
    client._client._client.event_hooks["request"].append(counter)
    try:
        yield client, counter
    finally:
        await client.close()


def _rendered(name: str = "fraud-prod") -> list[dict[str, Any]]:
    labels = dict(SELECTOR)
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels}, "spec": {"ports": []}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"a": "b"}},
    ]


def _controlled_by(owner: Owner, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "fraud-prod", "ownerReferences": [owner.reference()]}
    if labels is not None:
        meta["labels"] = labels
    return {"metadata": meta, "spec": {"ports": []}}


def _by_name(counter: RequestCounter) -> list[str]:
    return [path for method, path in counter.log if method == "GET" and path.count("/") == 6]


async def test_a_converged_apply_reads_no_child_by_name(counted: tuple[AsyncClient, RequestCounter]) -> None:
    client, counter = counted
    first = await apply_children(client, _rendered(), OWNER, SELECTOR, KINDS, "mlserve-operator")
    assert sorted(first.applied) == ["ConfigMap/fraud-prod", "Service/fraud-prod"]
    assert sorted(_by_name(counter)) == [
        f"/api/v1/namespaces/{NS}/configmaps/fraud-prod",
        f"/api/v1/namespaces/{NS}/services/fraud-prod",
    ]

    counter.reset()
    second = await apply_children(client, _rendered(), OWNER, SELECTOR, KINDS, "mlserve-operator")
    assert not second.changed
    assert dict(counter.by_method) == {"GET": 2}, counter.log  # one list per kind
    assert _by_name(counter) == []


async def test_a_hand_made_object_stops_the_apply_before_any_write(
    server: FakeServer, counted: tuple[AsyncClient, RequestCounter]
) -> None:
    client, counter = counted
    server.put("services", {"metadata": {"name": "fraud-prod"}, "spec": {"ports": [{"port": 1}]}})
    before = dict(server.objects[("services", "fraud-prod")])
    with pytest.raises(NameTaken) as raised:
        await apply_children(client, _rendered(), OWNER, SELECTOR, KINDS, "mlserve-operator")
    assert raised.value.reason == "NameTaken" and raised.value.taken == ["Service/fraud-prod"]
    assert "Service/fraud-prod is made by hand" in raised.value.message
    assert "delete it" in raised.value.message
    assert counter.writes == 0, "the ConfigMap, free, is not written either"
    assert server.objects[("services", "fraud-prod")] == before


async def test_another_mlserves_child_is_never_overwritten_nor_pruned(
    server: FakeServer, counted: tuple[AsyncClient, RequestCounter]
) -> None:
    client, counter = counted
    # found by name (other labels), and found by our labels: both held by the other MLServe
    server.put("services", _controlled_by(OTHER, {"mlserve.darwin.io/serve": "fraud-model"}))
    server.put("configmaps", _controlled_by(OTHER, dict(SELECTOR)))
    with pytest.raises(NameTaken) as raised:
        await apply_children(client, _rendered(), OWNER, SELECTOR, KINDS, "mlserve-operator")
    assert sorted(raised.value.taken) == ["ConfigMap/fraud-prod", "Service/fraud-prod"]
    assert f"held by MLServe {NS}/fraud-model" in raised.value.message
    assert "delete the other MLServe" in raised.value.message
    assert counter.writes == 0

    result = await apply_children(client, [], OWNER, SELECTOR, KINDS, "mlserve-operator")
    assert result.pruned == [] and counter.writes == 0


async def test_a_deleted_mlserve_of_the_same_name_holds_its_children_until_collected(
    server: FakeServer, counted: tuple[AsyncClient, RequestCounter]
) -> None:
    client, counter = counted
    # Deleted and created again (the sync re-creates an MLServe by name): a new uid, and the
    # old one's children not yet removed by the garbage collector.
    earlier = Owner(OWNER.api_version, OWNER.kind, OWNER.name, NS, "uid-deleted")
    server.put("services", _controlled_by(earlier, dict(SELECTOR)))
    with pytest.raises(NameTaken) as raised:
        await apply_children(client, _rendered(), OWNER, SELECTOR, KINDS, "mlserve-operator")
    assert "deleted MLServe of the same name (uid uid-deleted)" in raised.value.message
    assert "garbage collector" in raised.value.message and "delete the other MLServe" not in raised.value.message
    assert counter.writes == 0


async def test_our_own_child_and_a_labelled_orphan_are_written(
    server: FakeServer, counted: tuple[AsyncClient, RequestCounter]
) -> None:
    client, _ = counted
    # ours with its labels removed by hand (found by name); ours to adopt (our labels, no controller)
    server.put("services", _controlled_by(OWNER))
    server.put("configmaps", {"metadata": {"name": "fraud-prod", "labels": dict(SELECTOR)}, "data": {}})
    result = await apply_children(client, _rendered(), OWNER, SELECTOR, KINDS, "mlserve-operator")
    assert sorted(result.applied) == ["ConfigMap/fraud-prod", "Service/fraud-prod"]
    for key in (("services", "fraud-prod"), ("configmaps", "fraud-prod")):
        assert server.objects[key]["metadata"]["ownerReferences"] == [OWNER.reference()]


def test_name_taken_is_a_synced_condition_and_is_retried() -> None:
    error = NameTaken("Service/fraud-prod is made by hand", ["Service/fraud-prod"])
    now = datetime(2026, 1, 2, tzinfo=UTC)
    status = compute_status(None, Observation(generation=2, serve="fraud", error=error), now)
    synced = next(c for c in status["conditions"] if c["type"] == "Synced")
    assert (synced["status"], synced["reason"]) == ("False", "NameTaken")
    assert status["phase"] == "Pending", "not Invalid: nothing is wrong with the MLServe itself"


async def test_two_owners_applying_the_same_new_names_at_once_end_with_one_holder(
    server: FakeServer, counted: tuple[AsyncClient, RequestCounter]
) -> None:
    client, _ = counted
    other_selector = {**SELECTOR, "mlserve.darwin.io/serve": "fraud-model"}
    results = await asyncio.gather(
        apply_children(client, _rendered(), OWNER, SELECTOR, KINDS, "mlserve-operator"),
        apply_children(client, _rendered(), OTHER, other_selector, KINDS, "mlserve-operator"),
        return_exceptions=True,
    )
    # Without the lock both would read "absent", and the later apply would take over the names.
    winners = [owner for owner, r in zip((OWNER, OTHER), results, strict=True) if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert isinstance(losers[0], NameTaken), losers[0]
    for obj in server.objects.values():
        assert obj["metadata"]["ownerReferences"] == [winners[0].reference()]
