"""The caches (reconcile/cache.py) without a server: projections, which events enqueue which
MLServe, the claims index."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from mlserve.operator.reconcile.cache import (
    UNKNOWN,
    ChildCache,
    IngressHosts,
    MLServeCache,
    pack,
    project_child,
    unpack,
)
from mlserve.operator.reconcile.identity import Claim
from mlserve.operator.render import names
from mlserve.operator.spec import api


class Enqueued(list[str]):
    def __call__(self, uids: Iterable[str]) -> None:
        self.extend(uids)


def _deployment(owner: str = "uid-1", ready: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "iris-dev",
            "namespace": "team",
            "uid": "d-1",
            "resourceVersion": "10",
            "generation": 1,
            "labels": names.labels("iris", "dev"),
            "ownerReferences": [{"apiVersion": api.API_VERSION, "kind": api.KIND, "name": "iris", "uid": owner}],
            "managedFields": [{"manager": "mlserve-operator", "fieldsV1": {"f:spec": {}}}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}" * 100},
        },
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "app", "image": "img:v1"}]}}},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": ready,
            "conditions": [{"type": "Available", "lastUpdateTime": "2026-01-01T00:00:00Z"}],
            **status,
        },
    }


def _selector(serve: str = "iris", env: str = "dev") -> dict[str, str]:
    return {**names.selector(serve, env), api.LABEL_MANAGED_BY: api.MANAGED_BY}


def test_pack_round_trips() -> None:
    obj = _deployment()
    assert unpack(pack(obj)) == obj


def test_a_child_keeps_what_the_reconcile_reads_only() -> None:
    projected = project_child(_deployment())
    meta = projected["metadata"]
    assert "managedFields" not in meta and "resourceVersion" not in meta
    assert "kubectl.kubernetes.io/last-applied-configuration" not in meta.get("annotations", {})
    assert meta["ownerReferences"] and meta["labels"] == names.labels("iris", "dev")
    assert projected["spec"] == _deployment()["spec"]
    assert projected["status"] == {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "conditions": [{"type": "Available"}],  # the rollout's verdict, without the times that move
    }


def test_children_are_found_by_namespace_and_selector() -> None:
    cache = ChildCache(Enqueued())
    cache.put(_deployment())
    other = _deployment()
    other["metadata"].update(name="iris-qa", labels=names.labels("iris", "qa"))
    cache.put(other)
    found = cache.children("team", _selector(), ["Deployment", "Service"])
    assert list(found) == [("Deployment", "iris-dev")]
    assert found[("Deployment", "iris-dev")]["spec"]["replicas"] == 1
    assert cache.children("team", _selector(), ["Service"]) == {}
    assert cache.children("elsewhere", _selector(), ["Deployment"]) == {}
    cache.remove("team", "Deployment", "iris-dev")
    assert cache.children("team", _selector(), ["Deployment"]) == {}


def test_only_a_change_the_reconcile_reads_enqueues_the_owner() -> None:
    enqueued = Enqueued()
    cache = ChildCache(enqueued)
    cache.put(_deployment())
    assert enqueued == ["uid-1"]
    enqueued.clear()

    bumped = _deployment(conditions=[{"type": "Available", "lastUpdateTime": "2026-02-02T00:00:00Z"}])
    bumped["metadata"]["resourceVersion"] = "11"
    bumped["metadata"]["managedFields"] = []
    cache.put(bumped)
    assert enqueued == [], "resourceVersion, managedFields, unread status: nothing to do"

    cache.put(_deployment(ready=0))
    assert enqueued == ["uid-1"], "readyReplicas is read by the status"
    enqueued.clear()

    edited = _deployment(ready=0)
    edited["spec"]["replicas"] = 3
    edited["metadata"]["resourceVersion"] = "12"
    cache.put_written(edited, "10")  # our own write, as the server answered it
    assert enqueued == []
    assert cache.children("team", _selector(), ["Deployment"])[("Deployment", "iris-dev")]["spec"]["replicas"] == 3

    cache.remove("team", "Deployment", "iris-dev")
    assert enqueued == ["uid-1"]


def test_a_child_that_changes_owner_enqueues_both() -> None:
    enqueued = Enqueued()
    cache = ChildCache(enqueued)
    cache.put(_deployment(owner="uid-1"))
    enqueued.clear()
    cache.put(_deployment(owner="uid-2"))
    assert sorted(enqueued) == ["uid-1", "uid-2"]


def _mlserve(
    uid: str = "m-1", name: str = "iris", created: str = "2026-01-01T00:00:00Z", generation: int = 1, **meta: Any
) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": uid,
            "resourceVersion": "1",
            "generation": generation,
            "creationTimestamp": created,
            **meta,
        },
        "spec": {"serve": "iris", "environment": "dev", "type": "api", "artifactVersion": "v1"},
    }


def test_an_mlserve_is_enqueued_when_new_when_its_request_changes_or_when_deleted() -> None:
    enqueued = Enqueued()
    cache = MLServeCache(enqueued)
    cache.put(_mlserve())
    assert enqueued == ["m-1"]
    enqueued.clear()

    with_status = _mlserve()
    with_status["status"] = {"phase": "Ready"}
    with_status["metadata"]["resourceVersion"] = "2"
    cache.put(with_status)
    assert enqueued == [], "our own status write"
    assert cache.body("m-1")["status"] == {"phase": "Ready"}  # type: ignore[index]

    cache.put(_mlserve(generation=2))
    cache.put(_mlserve(generation=2, annotations={api.ANNOTATION_ROLLBACK: "t1"}))
    cache.put(_mlserve(generation=2, annotations={api.ANNOTATION_ROLLBACK: "t1"}, deletionTimestamp="now"))
    assert enqueued == ["m-1", "m-1", "m-1"]


def test_the_claims_index_and_the_rivals_of_a_holder_that_goes() -> None:
    enqueued = Enqueued()
    cache = MLServeCache(enqueued)
    cache.put(_mlserve("m-1", "iris", "2026-01-01T00:00:00Z"))
    cache.put(_mlserve("m-2", "iris-copy", "2026-01-02T00:00:00Z"))
    claims = cache.claims(_mlserve())
    assert sorted(claims) == [
        Claim("2026-01-01T00:00:00Z", "team", "iris", "m-1"),
        Claim("2026-01-02T00:00:00Z", "team", "iris-copy", "m-2"),
    ]
    enqueued.clear()
    deleting = _mlserve("m-1", "iris", "2026-01-01T00:00:00Z", deletionTimestamp="now")
    cache.put(deleting)
    assert sorted(enqueued) == ["m-1", "m-2"]
    enqueued.clear()
    cache.remove("m-1")
    assert enqueued == ["m-2"]
    assert [c.uid for c in cache.claims(_mlserve())] == ["m-2"]
    assert cache.body("m-1") is None


def test_remember_keeps_our_writes_until_the_watch_brings_newer() -> None:
    cache = MLServeCache(Enqueued())
    cache.put(_mlserve())
    ours = copy.deepcopy(_mlserve())
    ours["metadata"]["resourceVersion"] = "5"
    ours["status"] = {"phase": "Ready"}
    cache.remember("m-1", "1", ours)
    assert cache.body("m-1")["status"] == {"phase": "Ready"}  # type: ignore[index]
    newer = _mlserve(generation=3)
    newer["metadata"]["resourceVersion"] = "7"
    cache.put(newer)
    cache.remember("m-1", "5", ours)  # the watch moved on: not overwritten
    assert cache.body("m-1")["metadata"]["generation"] == 3  # type: ignore[index]


def test_the_answer_to_our_write_never_replaces_what_the_watch_delivered_since() -> None:
    cache = ChildCache(Enqueued())
    cache.put(_deployment(ready=0))  # read by the reconcile at version 10
    written = _deployment(ready=0)
    written["metadata"]["resourceVersion"] = "11"
    written["spec"]["replicas"] = 2
    # Before the answer is in, the watch brings our write and the status after it.
    later = copy.deepcopy(written)
    later["metadata"]["resourceVersion"] = "12"
    later["status"]["readyReplicas"] = 2
    cache.put(later)
    cache.put_written(written, "10")
    found = cache.children("team", _selector(), ["Deployment"])[("Deployment", "iris-dev")]
    assert found["status"]["readyReplicas"] == 2 and found["metadata"]["resourceVersion"] == "12"
    # A child the cache did not hold: stored only while it still holds none.
    fresh = ChildCache(Enqueued())
    fresh.put_written(written, None)
    assert fresh.children("team", _selector(), ["Deployment"])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _names(found: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {ns: sorted(b["metadata"]["name"] for b in bodies) for ns, bodies in found.items()}


def test_the_sync_reads_the_mlserves_of_its_namespaces_from_the_cache() -> None:
    cache = MLServeCache(Enqueued())
    cache.put(_mlserve("m-1", "iris"))
    elsewhere = _mlserve("m-2", "wine")
    elsewhere["metadata"]["namespace"] = "other"
    cache.put(elsewhere)
    assert _names(cache.by_namespace(["team", "empty"])) == {"team": ["iris"], "empty": []}
    found = cache.by_namespace(["team"])["team"][0]
    assert found["metadata"]["resourceVersion"] == "1", "the sync's generation test needs the body as read"
    assert "managedFields" not in found["metadata"]


def test_an_mlserve_the_sync_created_is_seen_before_the_watch_delivers_it() -> None:
    """The interleaving of a stale cache: a pass creates ``iris``; the next pass runs before
    the watch has delivered it. Without the expectation it would create ``iris`` again."""
    clock = Clock()
    enqueued = Enqueued()
    cache = MLServeCache(enqueued, clock=clock, expect_for=60)
    created = _mlserve("m-1", "iris")
    cache.expect(created)
    assert _names(cache.by_namespace(["team"])) == {"team": ["iris"]}
    assert enqueued == [], "the watch's event enqueues it, as any new MLServe"
    cache.put(created)  # the watch delivers it: one MLServe, not two
    assert _names(cache.by_namespace(["team"])) == {"team": ["iris"]}
    assert enqueued == ["m-1"]


def test_an_expectation_ends_with_the_deletion_or_its_time() -> None:
    clock = Clock()
    cache = MLServeCache(Enqueued(), clock=clock, expect_for=60)
    cache.expect(_mlserve("m-1", "iris"))
    cache.remove("m-1")  # delivered and deleted already (a relist that missed it)
    assert _names(cache.by_namespace(["team"])) == {"team": []}
    # The answer to a create that comes after the watch delivered the object and its deletion
    cache.put(_mlserve("m-2", "wine"))
    cache.remove("m-2")
    cache.expect(_mlserve("m-2", "wine"))
    assert _names(cache.by_namespace(["team"])) == {"team": []}, "a deleted MLServe expected again"
    # A watch that never brings it: the expectation ends (the next create answers 409).
    cache.expect(_mlserve("m-3", "lost"))
    clock.now += 59
    assert _names(cache.by_namespace(["team"])) == {"team": ["lost"]}
    clock.now += 2
    assert _names(cache.by_namespace(["team"])) == {"team": []}


def test_an_mlserve_the_sync_changed_is_read_as_it_left_it() -> None:
    """remember() also updates an MLServe that is only expected yet (created, then set to a
    newer deployment, before the watch delivered either)."""
    cache = MLServeCache(Enqueued())
    cache.expect(_mlserve("m-1", "iris"))
    patched = _mlserve("m-1", "iris", generation=2)
    patched["metadata"]["resourceVersion"] = "2"
    cache.remember("m-1", "1", patched)
    assert cache.by_namespace(["team"])["team"][0]["metadata"]["generation"] == 2


def test_a_changed_request_is_urgent_and_a_rival_only_looks_again() -> None:
    looks, urgent = Enqueued(), Enqueued()
    cache = MLServeCache(looks, urgent=urgent)
    cache.put(_mlserve("m-1", "iris", "2026-01-01T00:00:00Z"))
    cache.put(_mlserve("m-2", "iris-copy", "2026-01-02T00:00:00Z"))
    cache.put(_mlserve("m-1", "iris", "2026-01-01T00:00:00Z", generation=2))
    assert urgent == ["m-1", "m-2", "m-1"] and looks == []
    cache.remove("m-1")
    assert looks == ["m-2"], "the rival of a holder that goes looks again"


def test_the_sync_reads_a_small_view_with_everything_it_decides_on() -> None:
    body = _mlserve(
        "m-1",
        labels={api.LABEL_SERVE: "iris", api.LABEL_ENVIRONMENT: "dev"},
        annotations={api.ANNOTATION_DEPLOYMENT_ID: "7", "team": "a"},
        finalizers=[api.FINALIZER],
        managedFields=[{"manager": "x"}],
    )
    body["spec"].update(replicas=3, env={"A": "1"})
    resolved = {"type": "ArtifactResolved", "status": "False", "reason": "ArtifactBuilding"}
    body["status"] = {"phase": "Building", "conditions": [{"type": "Ready", "status": "False"}, resolved]}
    cache = MLServeCache(Enqueued())
    cache.put(body)
    view = cache.by_namespace(["team"])["team"][0]
    assert view["spec"] == {"serve": "iris", "environment": "dev", "type": "api", "artifactVersion": "v1"}
    assert view["status"] == {"conditions": [resolved]}
    meta = view["metadata"]
    assert meta["annotations"] == body["metadata"]["annotations"], "the version patch adds to the annotations"
    assert (meta["labels"], meta["generation"], meta["resourceVersion"], meta["uid"]) == (
        body["metadata"]["labels"],
        1,
        "1",
        "m-1",
    )
    assert "managedFields" not in meta


def _ingress(namespace: str, name: str, *hosts: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"rules": [{"host": host} for host in hosts] + [{"http": {"paths": []}}]},
    }


def test_the_ingress_hosts_index_names_who_claims_a_host_in_the_namespace() -> None:
    hosts = IngressHosts()
    hosts.put(_ingress("team", "release-iris", "iris.example.com", "www.example.com"))
    hosts.put(_ingress("team", "iris-prod", "iris.example.com"))
    hosts.put(_ingress("other", "elsewhere", "iris.example.com"))
    hosts.put(_ingress("team", "no-host"))

    assert hosts.claims("team", {"iris.example.com", "api.example.com"}, excluding={"iris-prod"}) == {
        "release-iris": ["iris.example.com"]
    }
    assert hosts.claims("team", {"api.example.com"}, excluding=()) == {}
    assert len(hosts) == 3  # an Ingress without a host is not held

    hosts.put(_ingress("team", "release-iris", "www.example.com"))  # edited: the host freed
    assert hosts.claims("team", {"iris.example.com"}, excluding={"iris-prod"}) == {}
    hosts.remove("team", "iris-prod", "uid")
    hosts.remove("team", "release-iris", "uid")
    assert hosts.claims("team", {"www.example.com", "iris.example.com"}, excluding=()) == {}
    assert len(hosts) == 1


def test_a_name_is_free_only_when_no_child_and_no_other_watched_object_holds_it() -> None:
    cache = ChildCache(Enqueued())
    cache.put(_deployment())
    # Before the kind's other objects are watched, a name the cache lacks must be read.
    assert cache.by_name("team", "Deployment", "iris-qa") is UNKNOWN
    cache.watch_others("Deployment")
    assert cache.by_name("team", "Deployment", "iris-qa") is None
    held = cache.by_name("team", "Deployment", "iris-dev")
    assert isinstance(held, dict) and held["metadata"]["resourceVersion"] == "10"

    seen, gone = cache.other_seen("Deployment"), cache.other_gone("Deployment")
    seen({"kind": "PartialObjectMetadata", "metadata": {"name": "iris-qa", "namespace": "team"}})
    assert cache.by_name("team", "Deployment", "iris-qa") is UNKNOWN  # made by someone else: read it
    assert cache.by_name("other", "Deployment", "iris-qa") is None
    assert cache.by_name("team", "Service", "iris-qa") is UNKNOWN  # Services' others are not watched
    gone("team", "iris-qa", "uid")
    assert cache.by_name("team", "Deployment", "iris-qa") is None
