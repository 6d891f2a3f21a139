"""Caches of the MLServes and their children, fed by list + watch, read by the reconcile.

controller-runtime's informers, small: one :class:`Informer` per kind (and per namespace when
the operator serves namespaces by name) lists the objects, then watches from the list's
``resourceVersion``; a watch that ends is resumed, one that expired (410) or failed is
listed again, and a relist that misses an object deletes it from the cache. Each informer
sets :attr:`Informer.synced` after its first list, so the workers start only when every
cache holds what the API server holds: a restart among thousands of converged MLServes
then reads every child from memory and writes nothing.

What is kept is what the reconcile reads, and nothing else, compressed (:func:`pack`):

- a child (:class:`ChildCache`): its metadata without ``managedFields`` and ``kubectl``'s
  last-applied copy (its ``resourceVersion`` kept apart), its spec, and only the status fields the reconcile
  reads (:data:`STATUS_READ`; a Deployment's replica counts, a RayJob's job status; nothing
  of an HPA's metrics), indexed by namespace and the serve's selector labels, so one
  MLServe's children are one dict lookup. An event whose projection is unchanged (an HPA
  status update, a ``resourceVersion`` bump) enqueues nothing; any other enqueues the
  MLServes named in its ownerReferences.
- an MLServe (:class:`MLServeCache`): its body without ``managedFields``, the claims index
  of :mod:`.identity` (who holds which (serve, environment)), and the fingerprint that says
  whether an event enqueues it: a new object, a change of ``metadata.generation``, of the
  rollback annotation or a deletion; the deletion of a holder enqueues its rivals.

A child the reconcile has just applied is put into the cache as the server answered it, unless
the watch delivered a version of it meanwhile (:meth:`ChildCache.put_written`), and an MLServe the reconcile patched is kept
as the reconcile left it until the watch brings a newer one (:meth:`MLServeCache.remember`):
the next reconcile does not read its own writes as stale.

The database sync reads the MLServes here too (:meth:`MLServeCache.by_namespace`), instead of
listing them from the API server on every pass. An MLServe the sync has just created is
*expected* (:meth:`MLServeCache.expect`, controller-runtime's expectations): the sync's next
pass sees it although the watch has not delivered it yet, so a pass that runs in between never
creates the pair's MLServe a second time. The expectation ends when the watch delivers the
object (or its deletion), or after ``expect_for`` seconds (a watch that never brings it: the
next create answers 409 and the pair is retried, never duplicated: the name is the same).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from lightkube import ALL_NS, AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.generic_client import BasicRequest, transform_exception
from lightkube.core.resource import NamespacedResource
from lightkube.core.selector import build_selector

from mlserve.operator.spec import api
from mlserve.operator.spec.namespaces import Scope, scope_of, watches_namespace

from .identity import Claim, Pair, claim_of
from .kube import api_version_kind, as_dict, kind_not_served, kind_served

__all__ = [
    "STATUS_READ",
    "UNKNOWN",
    "ChildCache",
    "Informer",
    "IngressHosts",
    "MLServeCache",
    "pack",
    "sync_view",
    "unpack",
    "watched_namespaces",
]

log = logging.getLogger(__name__)

Notify = Callable[[Iterable[str]], None]
"""Enqueue the MLServes of these uids."""

STATUS_READ: dict[str, tuple[str, ...] | None] = {
    api.DEPLOYMENT.kind: ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "conditions"),
    api.SERVICE.kind: (),
    api.HORIZONTAL_POD_AUTOSCALER.kind: (),
    api.POD_DISRUPTION_BUDGET.kind: (),
    api.INGRESS.kind: (),
    api.RAYJOB.kind: None,
    api.RAYCRONJOB.kind: None,
}
"""The status fields the reconcile reads, per child kind (``observe.workload_of``,
``spec.schedule.cron_job_status``); None: the whole status (KubeRay's, small and read by
the scheduler)."""

_DROPPED_METADATA = ("managedFields", "resourceVersion", "selfLink")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_SELECTOR_LABELS = (api.LABEL_NAME, api.LABEL_SERVE, api.LABEL_ENVIRONMENT)
"""The labels of a serve's selector (``render.names.selector``): the children's index."""


def pack(obj: Mapping[str, Any]) -> bytes:
    """A compact encoding of a projection: JSON, compressed (a Deployment: about 1 KB)."""
    return zlib.compress(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode(), 1)


def unpack(blob: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(zlib.decompress(blob))
    return decoded


def _metadata(obj: Mapping[str, Any], *, keep_version: bool) -> dict[str, Any]:
    meta = dict(obj.get("metadata") or {})
    for key in _DROPPED_METADATA:
        if key != "resourceVersion" or not keep_version:
            meta.pop(key, None)
    annotations = meta.get("annotations")
    if annotations and _LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != _LAST_APPLIED}
    return meta


def project_child(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the reconcile reads of a child (see :data:`STATUS_READ`)."""
    kind = str(obj.get("kind"))
    out = {key: value for key, value in obj.items() if key not in ("metadata", "status")}
    out["metadata"] = _metadata(obj, keep_version=False)
    status = obj.get("status")
    wanted = STATUS_READ.get(kind)
    if status:
        if wanted is None:
            out["status"] = status
        elif wanted:
            kept = {key: status[key] for key in wanted if key in status}
            if "conditions" in kept:
                # A rollout's verdict (observe.workload_of: ProgressDeadlineExceeded,
                # ReplicaFailure), without the times that move on every update.
                kept["conditions"] = [
                    {k: c[k] for k in ("type", "status", "reason", "message") if k in c} for c in kept["conditions"]
                ]
            if kept:
                out["status"] = kept
    return out


def _owner_uids(obj: Mapping[str, Any]) -> tuple[str, ...]:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return tuple(str(ref.get("uid")) for ref in refs if ref.get("kind") == api.KIND)


def _index_key(namespace: str, labels: Mapping[str, str]) -> tuple[str, ...]:
    return (namespace, *(str(labels.get(key, "")) for key in _SELECTOR_LABELS))


@dataclass(frozen=True, slots=True)
class _Child:
    blob: bytes
    version: str
    """The object's resourceVersion (kept apart: a bare version change is no change)."""
    index: tuple[str, ...]
    owners: tuple[str, ...]


class Unknown(enum.Enum):
    UNKNOWN = "unknown"


UNKNOWN = Unknown.UNKNOWN
"""What :meth:`ChildCache.by_name` answers for a name the watches can't tell about."""


class ChildCache:
    """The children of every kind (see the module's docstring)."""

    def __init__(self, notify: Notify) -> None:
        self._notify = notify
        self._objects: dict[tuple[str, str, str], _Child] = {}
        """(namespace, kind, name) -> the child."""
        self._by_selector: dict[tuple[str, ...], set[tuple[str, str]]] = {}
        """(namespace, *selector label values) -> {(kind, name)}."""
        self._others: dict[tuple[str, str], set[str]] = {}
        """(namespace, kind) -> the names of the objects of that kind not labelled as ours."""
        self._others_watched: set[str] = set()
        """The kinds whose other objects a watch reports (:meth:`watch_others`)."""

    def __len__(self) -> int:
        return len(self._objects)

    # --- every other object's name: which names a new child may take without a read ----------
    def watch_others(self, kind: str) -> None:
        """A watch of ``kind``'s objects not labelled as ours reports to :meth:`other_seen`
        and :meth:`other_gone` (their metadata only): a name held by none of them, nor by a
        child of the cache, is free, and the reconcile reads nothing to know it."""
        self._others_watched.add(kind)

    def other_seen(self, kind: str) -> Callable[[Mapping[str, Any]], None]:
        """The informer's ``put`` for the other objects of ``kind`` (their metadata only)."""

        def seen(obj: Mapping[str, Any]) -> None:
            meta = obj.get("metadata") or {}
            self._others.setdefault((str(meta.get("namespace")), kind), set()).add(str(meta.get("name")))

        return seen

    def other_gone(self, kind: str) -> Callable[[str, str, str], None]:
        """The informer's ``remove`` for the other objects of ``kind``."""

        def gone(namespace: str, name: str, _uid: str) -> None:
            names = self._others.get((namespace, kind))
            if names is not None:
                names.discard(name)
                if not names:
                    del self._others[(namespace, kind)]

        return gone

    def by_name(self, namespace: str, kind: str, name: str) -> dict[str, Any] | Unknown | None:
        """The object holding this name, as far as the watches know: a child of the cache
        (whichever MLServe's), None when no object of the kind has it, or :data:`UNKNOWN`
        when it must be read (held by an object not labelled as ours, whose metadata alone
        is watched, or a kind whose other objects are not watched)."""
        child = self._objects.get((namespace, kind, name))
        if child is not None:
            obj = unpack(child.blob)
            obj["metadata"]["resourceVersion"] = child.version
            return obj
        if kind not in self._others_watched or name in self._others.get((namespace, kind), ()):
            return UNKNOWN
        return None

    def _child(self, obj: Mapping[str, Any]) -> tuple[tuple[str, str, str], _Child]:
        meta = obj.get("metadata") or {}
        kind, name, namespace = str(obj.get("kind")), str(meta.get("name")), str(meta.get("namespace"))
        projection = project_child(obj)
        child = _Child(
            pack(projection),
            str(meta.get("resourceVersion") or ""),
            _index_key(namespace, meta.get("labels") or {}),
            _owner_uids(projection),
        )
        return (namespace, kind, name), child

    def _store(self, key: tuple[str, str, str], old: _Child | None, child: _Child) -> bool:
        """Store ``child``; whether anything the reconcile reads changed."""
        if old is not None and old.blob == child.blob:
            if old.version != child.version:
                self._objects[key] = child  # same index, same owners
            return False
        self._unindex(key, old)
        self._objects[key] = child
        self._by_selector.setdefault(child.index, set()).add((key[1], key[2]))
        return True

    def put(self, obj: Mapping[str, Any]) -> None:
        """A child as the watch delivered it: its owners are enqueued when something the
        reconcile reads changed."""
        key, child = self._child(obj)
        old = self._objects.get(key)
        if self._store(key, old, child):
            self._notify({*child.owners, *(old.owners if old else ())})

    def put_written(self, obj: Mapping[str, Any], read_version: str | None) -> None:
        """A child as the server answered our write of it, stored only if the cache still
        holds the version the reconcile read (``read_version``; None: it held none): when the
        watch has delivered anything since, that may be newer than the answer (the watch and
        the answer travel apart), and the watch brings our write in any case."""
        key, child = self._child(obj)
        old = self._objects.get(key)
        if (old.version if old is not None else None) != read_version:
            return
        self._store(key, old, child)

    def remove(self, namespace: str, kind: str, name: str, *, notify: bool = True) -> None:
        key = (namespace, kind, name)
        old = self._objects.pop(key, None)
        self._unindex(key, old)
        if old is not None and notify:
            self._notify(old.owners)

    def _unindex(self, key: tuple[str, str, str], old: _Child | None) -> None:
        if old is None:
            return
        members = self._by_selector.get(old.index)
        if members is not None:
            members.discard((key[1], key[2]))
            if not members:
                del self._by_selector[old.index]

    def children(
        self, namespace: str, selector: Mapping[str, str], kinds: Iterable[str]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Like a list of each of ``kinds`` in ``namespace`` by the label ``selector``: every
        cached child carrying those labels, (kind, name) -> the child."""
        wanted = set(kinds)
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, name in self._by_selector.get(_index_key(namespace, selector), ()):
            if kind not in wanted:
                continue
            child = self._objects[(namespace, kind, name)]
            obj = unpack(child.blob)
            obj["metadata"]["resourceVersion"] = child.version
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if all(labels.get(k) == v for k, v in selector.items()):
                found[(kind, name)] = obj
        return found


_SYNC_SPEC = ("serve", "environment", "type", "artifactVersion")


def sync_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the database sync reads of an MLServe (``sync_plan``, ``status.waits_for_artifact``,
    the object of an Event, the version patch): the metadata as kept, the spec's fields the
    sync writes, and the ``ArtifactResolved`` condition. A pass reads this small copy of every
    MLServe, not the whole body."""
    spec = body.get("spec") or {}
    view: dict[str, Any] = {
        "apiVersion": body.get("apiVersion", api.API_VERSION),
        "kind": body.get("kind", api.KIND),
        "metadata": _metadata(body, keep_version=True),
        "spec": {key: spec[key] for key in _SYNC_SPEC if key in spec},
    }
    conditions = [
        condition
        for condition in ((body.get("status") or {}).get("conditions") or [])
        if condition.get("type") == api.ConditionType.ARTIFACT_RESOLVED
    ]
    if conditions:
        view["status"] = {"conditions": conditions}
    return view


def _view_bytes(body: Mapping[str, Any]) -> bytes:
    return json.dumps(sync_view(body), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class _Serve:
    blob: bytes
    version: str
    namespace: str
    fingerprint: tuple[Any, ...]
    pair: Pair | None
    view: bytes
    """:func:`sync_view`, as JSON: what a database sync pass reads."""


class IngressHosts:
    """The hosts each Ingress of the watched namespaces claims, the operator's and everyone
    else's (fed by an informer of every Ingress, no label selector): which other Ingress holds
    a host is then a look-up, not a LIST of the namespace's Ingresses per new MLServe."""

    def __init__(self) -> None:
        self._hosts: dict[str, dict[str, frozenset[str]]] = {}
        """namespace -> name -> the hosts of its rules (Ingresses without any are left out)."""

    def __len__(self) -> int:
        return sum(len(names) for names in self._hosts.values())

    def put(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        rules = (obj.get("spec") or {}).get("rules") or []
        hosts = frozenset(str(rule["host"]) for rule in rules if isinstance(rule, Mapping) and rule.get("host"))
        if hosts:
            self._hosts.setdefault(namespace, {})[name] = hosts
        else:
            self.remove(namespace, name, "")

    def remove(self, namespace: str, name: str, _uid: str) -> None:
        names = self._hosts.get(namespace)
        if names is not None:
            names.pop(name, None)
            if not names:
                del self._hosts[namespace]

    def claims(self, namespace: str, hosts: Collection[str], excluding: Collection[str]) -> dict[str, list[str]]:
        """The Ingresses of ``namespace`` (but those named in ``excluding``) claiming any of
        ``hosts``: name -> the hosts it claims, sorted."""
        wanted = set(hosts)
        found = {
            name: sorted(claimed & wanted)
            for name, claimed in self._hosts.get(namespace, {}).items()
            if name not in excluding and claimed & wanted
        }
        return dict(sorted(found.items()))


class MLServeCache:
    """The MLServes and the claims index (see the module's docstring), keyed by uid."""

    def __init__(
        self,
        notify: Notify,
        *,
        urgent: Notify | None = None,
        clock: Callable[[], float] = time.monotonic,
        expect_for: float = 60.0,
    ) -> None:
        self._notify = notify
        self._urgent = urgent if urgent is not None else notify
        """Enqueue the MLServes whose request changed (new, a new spec or rollback token, a
        deletion): before those that only look again."""
        self._objects: dict[str, _Serve] = {}
        self._claims: dict[Pair, dict[str, Claim]] = {}
        self._clock = clock
        self._expect_for = expect_for
        self._expected: dict[str, tuple[float, str, bytes]] = {}
        """uid -> (until when, its namespace, :func:`sync_view` of the server's answer to its
        creation): created by this process, not delivered by the watch yet."""
        self._gone: dict[str, float] = {}
        """uid -> when the watch said it was deleted (kept ``expect_for`` seconds): an answer
        to a create that arrives after its deletion's event expects nothing."""

    def __len__(self) -> int:
        return len(self._objects)

    def uids(self) -> list[str]:
        return list(self._objects)

    def body(self, uid: str) -> dict[str, Any] | None:
        found = self._objects.get(uid)
        return unpack(found.blob) if found is not None else None

    def uids_of(self, pair: Pair) -> list[str]:
        """The MLServes that claim ``pair`` (the holder and its rivals)."""
        return list(self._claims.get(pair, {}))

    def claims(self, body: Mapping[str, Any]) -> list[Claim]:
        """Every claim on the pair ``body`` claims (its own included), as kopf's index gave."""
        got = claim_of(body)
        if got is None:
            return []
        return list(self._claims.get(got[0], {}).values())

    def _rivals(self, serve: _Serve | None, uid: str) -> list[str]:
        if serve is None or serve.pair is None:
            return []
        return [other for other in self._claims.get(serve.pair, {}) if other != uid]

    def _store(self, uid: str, body: Mapping[str, Any]) -> tuple[_Serve | None, _Serve]:
        meta = body.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        got = claim_of(body)
        serve = _Serve(
            blob=pack({**body, "metadata": _metadata(body, keep_version=True)}),
            version=str(meta.get("resourceVersion") or ""),
            namespace=str(meta.get("namespace") or ""),
            fingerprint=(
                meta.get("generation"),
                annotations.get(api.ANNOTATION_ROLLBACK),
                bool(meta.get("deletionTimestamp")),
            ),
            pair=got[0] if got else None,
            view=_view_bytes(body),
        )
        old = self._objects.get(uid)
        if old is not None and old.pair is not None and old.pair != serve.pair:
            self._drop_claim(old.pair, uid)
        self._objects[uid] = serve
        if got is not None:
            self._claims.setdefault(got[0], {})[uid] = got[1]
        return old, serve

    def _drop_claim(self, pair: Pair, uid: str) -> None:
        claims = self._claims.get(pair)
        if claims is not None:
            claims.pop(uid, None)
            if not claims:
                del self._claims[pair]

    def put(self, body: Mapping[str, Any]) -> None:
        """An MLServe from the watch: enqueue it when its request changed, its rivals when it
        is being deleted."""
        uid = str((body.get("metadata") or {}).get("uid"))
        self._expected.pop(uid, None)
        old, new = self._store(uid, body)
        if old is None or old.fingerprint != new.fingerprint:
            self._urgent([uid])
        if new.fingerprint[2] and (old is None or not old.fingerprint[2]):
            self._notify(self._rivals(new, uid))

    def remove(self, uid: str) -> None:
        """The MLServe is gone: its rivals may take over its pair."""
        self._expected.pop(uid, None)
        self._gone[uid] = self._clock()
        self._prune()
        old = self._objects.pop(uid, None)
        if old is None:
            return
        rivals = self._rivals(old, uid)
        if old.pair is not None:
            self._drop_claim(old.pair, uid)
        self._notify(rivals)

    def remember(self, uid: str, basis_version: str | None, body: Mapping[str, Any]) -> None:
        """Keep ``body`` (the MLServe as a reconcile that started from ``basis_version`` left
        it) unless the watch has brought a newer version meanwhile."""
        current = self._objects.get(uid)
        if current is None:
            expected = self._expected.get(uid)
            if expected is not None and json.loads(expected[2])["metadata"].get("resourceVersion") == basis_version:
                self._expected[uid] = (expected[0], expected[1], _view_bytes(body))
            return
        if current.version != (basis_version or ""):
            return
        self._store(uid, body)

    # --- what the database sync reads -----------------------------------------------------------

    def expect(self, body: Mapping[str, Any]) -> None:
        """The server's answer to a create of this process: listed by :meth:`by_namespace`
        until the watch delivers the object (or its deletion), at most ``expect_for`` seconds."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid"))
        self._prune()
        if uid in self._objects or uid in self._gone:
            return  # the watch was first
        self._expected[uid] = (self._clock() + self._expect_for, str(meta.get("namespace")), _view_bytes(body))

    def _prune(self) -> None:
        now = self._clock()
        for uid in [uid for uid, (until, _, _) in self._expected.items() if until <= now]:
            del self._expected[uid]
        for uid in [uid for uid, at in self._gone.items() if now - at > self._expect_for]:
            del self._gone[uid]

    def by_namespace(self, namespaces: Collection[str]) -> dict[str, list[dict[str, Any]]]:
        """The MLServes of each of ``namespaces`` (every one of them a key, maybe with no
        MLServe) as the database sync reads them (:func:`sync_view`): the ones the watch
        delivered and the ones this process created that it has not delivered yet
        (:meth:`expect`)."""
        found: dict[str, list[dict[str, Any]]] = {namespace: [] for namespace in namespaces}
        for serve in self._objects.values():
            views = found.get(serve.namespace)
            if views is not None:
                views.append(json.loads(serve.view))
        self._prune()
        for _, namespace, view in self._expected.values():
            views = found.get(namespace)
            if views is not None:
                views.append(json.loads(view))
        return found


def watched_namespaces(namespaces: tuple[str, ...]) -> list[str]:
    """The namespaces to list and watch in: each name when the operator serves names, else
    every namespace (patterns are then filtered by :func:`watches_namespace`)."""
    if scope_of(namespaces) is Scope.NAMESPACES:
        return list(namespaces)
    return [ALL_NS]


_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
_METADATA_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


class Informer:
    """List then watch one kind in one namespace (or all), feeding ``put`` (the object) and
    ``remove`` (namespace, name and uid of an object gone). ``metadata_only``: the API server
    sends each object's metadata alone (``PartialObjectMetadata``), for a cache of names."""

    def __init__(
        self,
        client: AsyncClient,
        resource: type[NamespacedResource],
        namespace: str,
        *,
        put: Callable[[dict[str, Any]], None],
        remove: Callable[[str, str, str], None],
        labels: Mapping[str, str] | None = None,
        served_namespaces: tuple[str, ...] = (),
        retry_delay: float = 1.0,
        max_delay: float = 60.0,
        server_timeout: int = 300,
        metadata_only: bool = False,
    ) -> None:
        self.client = client
        self.resource = resource
        self.api_version, self.kind = api_version_kind(resource)
        self.namespace = namespace
        self.labels: dict[str, Any] = dict(labels or {})
        self._metadata_only = metadata_only
        self._put = put
        self._remove = remove
        self._served_namespaces = served_namespaces
        self._retry_delay = retry_delay
        self._max_delay = max_delay
        self._server_timeout = server_timeout
        self._known: dict[tuple[str, str], str] = {}
        """(namespace, name) -> uid of every object listed or watched."""
        self.synced = asyncio.Event()
        """Set after the first complete list (or once the kind is found not served)."""
        self.served = True

    @property
    def what(self) -> str:
        where = "all namespaces" if self.namespace == ALL_NS else f"namespace {self.namespace}"
        return f"{self.kind} in {where}"

    def _wanted(self, obj: Mapping[str, Any]) -> tuple[str, str] | None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        if self.namespace == ALL_NS and not watches_namespace(self._served_namespaces, namespace):
            return None
        return namespace, name

    def _dict(self, item: object) -> dict[str, Any]:
        """The object as a dict with its kind and apiVersion (a list's items may omit them)."""
        obj = as_dict(item, self.kind)
        obj.setdefault("apiVersion", self.api_version)
        return obj

    def _seen(self, item: object) -> None:
        obj = self._dict(item)
        key = self._wanted(obj)
        if key is None:
            return
        self._known[key] = str(obj["metadata"].get("uid"))
        self._put(obj)

    def _gone(self, item: object) -> None:
        obj = self._dict(item)
        key = self._wanted(obj)
        if key is None:
            return
        self._known.pop(key, None)
        self._remove(*key, str(obj["metadata"].get("uid")))

    def _request(self, *, watch: bool, **params: Any) -> BasicRequest:
        """lightkube's list or watch request, asking for the objects' metadata alone when the
        informer is ``metadata_only`` (the API server's ``PartialObjectMetadata``)."""
        accept = _METADATA_WATCH if watch else _METADATA_LIST
        return self.client._client.prepare_request(
            "list",
            res=self.resource,
            namespace=self.namespace,
            watch=watch,
            params={"labelSelector": build_selector(self.labels) if self.labels else None, **params},
            headers={"Accept": accept} if self._metadata_only else None,
        )

    async def _list(self) -> str:
        before = self._known
        self._known = {}
        version = await (self._list_metadata() if self._metadata_only else self._list_objects())
        for key, uid in before.items():
            if key not in self._known:
                self._remove(*key, uid)
        return version

    async def _list_objects(self) -> str:
        listing = self.client._client.list(self._request(watch=False, limit=500))
        async for item in listing:
            self._seen(item)
        return listing.resourceVersion

    async def _list_metadata(self) -> str:
        """The pages of a metadata list, read as JSON: lightkube's typed lists refuse the
        ``"items": null`` the API server sends for an empty ``PartialObjectMetadataList``."""
        generic = self.client._client
        http: httpx2.AsyncClient = generic._client
        pages: dict[str, Any] = {"limit": 500}
        while True:
            response = await http.send(generic.build_adapter_request(self._request(watch=False, **pages)))
            try:
                response.raise_for_status()
            except httpx2.HTTPStatusError as exc:
                raise transform_exception(exc) from exc  # a Status answer as lightkube's ApiError
            page = response.json()
            for item in page.get("items") or ():
                self._seen(item)
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                return str(meta.get("resourceVersion") or "")
            pages["continue"] = meta["continue"]

    async def _until_served(self) -> None:
        """Wait until the API server serves the kind, asking discovery every ``max_delay``
        seconds: a GET of the group version, where another LIST would count as one for
        every idle cluster without KubeRay. A failed discovery is asked again."""
        while True:
            await asyncio.sleep(self._max_delay)
            try:
                if await kind_served(self.client, self.api_version, self.kind):
                    log.info("%s: the kind is served now; listing", self.what)
                    return
            except (httpx2.HTTPError, OSError) as exc:
                log.debug("%s: discovery failed (%s); asked again in %gs", self.what, exc, self._max_delay)

    async def run(self) -> None:
        """List and watch until cancelled; failures are logged and retried with backoff."""
        delay = self._retry_delay
        while True:
            try:
                version = await self._list()
                self.served = True
                self.synced.set()
                delay = self._retry_delay
                watch = self.client._client.watch(
                    self._request(watch=True, timeoutSeconds=self._server_timeout, resourceVersion=version)
                )
                async for type_, item in watch:
                    if type_ == "DELETED":
                        self._gone(item)
                    elif type_ in ("ADDED", "MODIFIED"):
                        self._seen(item)
            except asyncio.CancelledError:
                raise
            except httpx2.HTTPStatusError as exc:
                if kind_not_served(exc):
                    # No CRD (e.g. no KubeRay): no objects of the kind; looked for again later.
                    if self.served:
                        log.info(
                            "%s: the kind is not served by this cluster; looking again every %gs",
                            self.what,
                            self._max_delay,
                        )
                    self.served = False
                    for key, uid in self._known.items():
                        self._remove(*key, uid)
                    self._known.clear()
                    self.synced.set()
                    await self._until_served()
                    continue
                if isinstance(exc, ApiError) and exc.status.code == 410:
                    log.debug("%s: the watch expired; listing again", self.what)
                    continue
                log.warning("%s: list or watch failed (%s); retried in %gs", self.what, exc, delay)
            except (httpx2.HTTPError, OSError) as exc:
                log.warning("%s: list or watch failed (%s); retried in %gs", self.what, exc, delay)
            except Exception:  # an answer that could not be read: the cache must not stop with it
                log.exception("%s: list or watch failed; retried in %gs", self.what, delay)
            await asyncio.sleep(delay)
            delay = min(self._max_delay, delay * 2)
