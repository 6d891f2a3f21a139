"""Children: server-side apply of the rendered manifests, pruning of the ones no longer rendered.

One call per reconcile. It reads the live children (label selector of the MLServe's
identity) from the operator's cache (:class:`~.cache.ChildCache`, fed by watches), or with
one list per kind when it runs without one (tests, tools), applies only the manifests whose
live object no longer matches (:mod:`.diff`), and deletes the children that carry the
MLServe's labels and ownerReference but are no longer rendered (the HPA when min = max, the
PDB when one replica). A converged MLServe costs no request with the cache (one list per
kind without it) and no write. What it writes goes into the cache as the server answered,
so the next reconcile does not wait for the watch to see it.

Ownership: a name is only written when this MLServe controls the object or there is none.
Before anything is written, every rendered child the list did not find is read by name
(one GET each; a converged MLServe finds all of them in the list and sends none; one found
so that matches the rendering is not written again), and
every child found is checked for its controller. An object of that name that another
MLServe controls (``fraud-model``/``prod`` and ``fraud``/``model-prod`` render the same
names) or that nobody controls but lacks our labels (made by hand) stops the apply with
:class:`NameTaken`: nothing is written, and the reconcile retries with backoff until the
name is free. A child carrying our labels and no controller is adopted, as before (e.g.
left behind by an MLServe deleted with ``--cascade=orphan``). The read by name, the check
and the writes that follow hold a lock per name (taken in sorted order), so two MLServes of
one operator rendering the same new names cannot both find them free: the first holds them
all; MLServes of other names in the namespace go on at the same time.

A new child is read by name and then applied, not created with a POST (which would answer
409 for a taken name and spare the read): the fields of a POST are recorded under our field
manager's operation ``Update``, an owner apart from its ``Apply``, so a later apply of a
rendering that dropped one of them (an env var, a limit) would leave it in place
(``tests/cluster/test_server_side_apply.py`` shows it). Created by apply, the child's fields
are ours to remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource

from mlserve.operator.spec import api
from mlserve.operator.spec.api import Reason

from .cache import UNKNOWN, ChildCache
from .diff import manifest_hash, matches, mismatches
from .errors import TemporaryFailure
from .kube import (
    api_version_kind,
    apply_object,
    as_dict,
    delete_object,
    get_object,
    kind_not_served,
    resource_for,
)

__all__ = ["ApplyResult", "NameTaken", "Owner", "apply_children", "list_children", "live_children", "stamp"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Owner:
    """The MLServe that owns the children."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def owns(self, live: Mapping[str, Any]) -> bool:
        refs = (live.get("metadata") or {}).get("ownerReferences") or []
        return any(ref.get("uid") == self.uid for ref in refs)

    def controls(self, live: Mapping[str, Any]) -> bool:
        """``live`` names this MLServe as its controller."""
        controller = controller_of(live)
        return controller is not None and controller.get("uid") == self.uid


def controller_of(live: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference of ``live`` with ``controller: true`` (there is at most one)."""
    refs = (live.get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in refs if ref.get("controller")), None)


class NameTaken(TemporaryFailure):
    """A rendered child's name is held by an object this MLServe does not control.

    A :class:`TemporaryFailure` (condition ``Synced``, reason ``NameTaken``, a Warning Event,
    retried with backoff): the name frees itself when the object or the other MLServe is
    deleted, and the next retry then applies without anyone touching the MLServe.
    ``taken`` lists the objects as ``Kind/name``.
    """

    def __init__(self, message: str, taken: Sequence[str]) -> None:
        super().__init__(Reason.NAME_TAKEN, message)
        self.taken = list(taken)


def _taken_by(live: Mapping[str, Any], owner: Owner, *, labelled: bool) -> str | None:
    """Why ``live`` may not be written by ``owner`` (None: it may).

    ``labelled``: it carries the MLServe's labels (found by the list), so without any
    controller it is ours to adopt; found only by name it must be controlled by us.
    """
    controller = controller_of(live)
    if controller is None:
        return None if labelled else "made by hand (it has no controller)"
    if controller.get("uid") == owner.uid:
        return None
    kind, name = controller.get("kind"), controller.get("name")
    if kind == owner.kind and controller.get("apiVersion") == owner.api_version:
        if name == owner.name:
            # A deleted MLServe of the same name: its children wait for the garbage collector.
            return (
                f"still held by a deleted MLServe of the same name (uid {controller.get('uid')}) "
                "until the garbage collector removes it"
            )
        return f"held by MLServe {owner.namespace}/{name}"
    return f"controlled by {kind}/{name}"


def _name_taken(owner: Owner, taken: Mapping[str, str]) -> NameTaken:
    objects = "; ".join(f"{what} is {why}" for what, why in taken.items())
    other = any(why.startswith("held by MLServe") for why in taken.values())
    if other:
        fix = (
            "delete the other MLServe, or rename this one's serve or environment (their names render the same children)"
        )
    elif all(why.startswith("still held by a deleted MLServe") for why in taken.values()):
        fix = "nothing: once the garbage collector has removed them, this MLServe takes the names"
    else:
        fix = "delete it or rename it, or rename this MLServe's serve or environment"
    return NameTaken(
        f"the name of a child is taken in namespace {owner.namespace}: {objects}; nothing was written; "
        f"to fix, {fix}; retried until the name is free",
        list(taken),
    )


@dataclass
class ApplyResult:
    applied: list[str] = field(default_factory=list)
    """``Kind/name`` of the children written (created or changed)."""
    pruned: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    live: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(kind, name) -> the child as the server holds it after this reconcile."""
    drift: dict[str, list[str]] = field(default_factory=dict)
    """``Kind/name`` -> the paths that differed from the rendering (edits by hand)."""

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.pruned)


def stamp(manifest: Mapping[str, Any], owner: Owner) -> dict[str, Any]:
    """The manifest as applied: namespace, ownerReference and the hash annotation set."""
    out = copy.deepcopy(dict(manifest))
    metadata = out.setdefault("metadata", {})
    metadata["namespace"] = owner.namespace
    metadata["ownerReferences"] = [owner.reference()]
    metadata.setdefault("annotations", {}).pop(api.ANNOTATION_APPLIED_HASH, None)
    digest = manifest_hash(out)
    metadata["annotations"][api.ANNOTATION_APPLIED_HASH] = digest
    return out


def _hash_of(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(api.ANNOTATION_APPLIED_HASH)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(obj.get("kind")), str((obj.get("metadata") or {}).get("name"))


def _label(kind: str, name: str) -> str:
    return f"{kind}/{name}"


async def _list_kind(
    client: AsyncClient, resource: type[NamespacedResource], namespace: str, selector: Mapping[str, str]
) -> dict[tuple[str, str], dict[str, Any]]:
    _, kind = api_version_kind(resource)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        async for item in client.list(resource, namespace=namespace, labels=dict(selector)):
            obj = as_dict(item, kind)
            found[(kind, obj["metadata"]["name"])] = obj
    except httpx2.HTTPStatusError as exc:
        if kind_not_served(exc) or (isinstance(exc, ApiError) and exc.status.code == 404):
            return {}  # the kind is not installed (e.g. no KubeRay CRDs): no children of it
        if not isinstance(exc, ApiError):
            raise TemporaryFailure(
                Reason.LIST_FAILED, f"listing {kind} in {namespace} failed: HTTP {exc.response.status_code}"
            ) from exc
        raise TemporaryFailure(
            Reason.LIST_FAILED, f"listing {kind} in {namespace} failed: {exc.status.message}"
        ) from exc
    return found


async def list_children(
    client: AsyncClient,
    kinds: Iterable[type[NamespacedResource]],
    namespace: str,
    selector: Mapping[str, str],
) -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of ``kinds`` in ``namespace`` carrying ``selector``, as dicts (one list
    request per kind, sent concurrently)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for part in await asyncio.gather(*(_list_kind(client, r, namespace, selector) for r in kinds)):
        found.update(part)
    return found


async def live_children(
    client: AsyncClient,
    cache: ChildCache | None,
    kinds: Iterable[type[NamespacedResource]],
    namespace: str,
    selector: Mapping[str, str],
) -> dict[tuple[str, str], dict[str, Any]]:
    """The children of ``kinds`` carrying ``selector``: from ``cache`` (no request) when there
    is one, else listed."""
    if cache is None:
        return await list_children(client, kinds, namespace, selector)
    return cache.children(namespace, selector, [api_version_kind(r)[1] for r in kinds])


def _resource_of(manifest: Mapping[str, Any], kinds: Sequence[type[NamespacedResource]]) -> type[NamespacedResource]:
    key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
    return next((r for r in kinds if api_version_kind(r) == key), None) or resource_for(manifest)


async def _by_name(
    client: AsyncClient,
    cache: ChildCache | None,
    namespace: str,
    keys: Sequence[tuple[str, str]],
    resources: Mapping[tuple[str, str], type[NamespacedResource]],
) -> list[dict[str, Any] | None]:
    """The objects holding these (kind, name)s (None: free): from the cache where its watches
    can tell (a new serve's children, whose names nobody holds, cost no request), else read."""
    known = [cache.by_name(namespace, *key) if cache is not None else UNKNOWN for key in keys]
    unknown = [key for key, obj in zip(keys, known, strict=True) if obj is UNKNOWN]
    read = await asyncio.gather(
        *(get_object(client, resources[key], key[1], namespace=namespace, what=_label(*key)) for key in unknown)
    )
    answers = dict(zip(unknown, read, strict=True))
    return [answers[key] if obj is UNKNOWN else obj for key, obj in zip(keys, known, strict=True)]


async def apply_children(
    client: AsyncClient,
    manifests: Sequence[Mapping[str, Any]],
    owner: Owner,
    selector: Mapping[str, str],
    kinds: Iterable[type[NamespacedResource]],
    field_manager: str,
    cache: ChildCache | None = None,
) -> ApplyResult:
    """Make the owner's children exactly ``manifests``, writing only what differs; the live
    children come from ``cache`` when given (see :func:`live_children`)."""
    kinds = tuple(kinds)
    live = await live_children(client, cache, kinds, owner.namespace, selector)
    result = ApplyResult(live=dict(live))
    desired = [stamp(m, owner) for m in manifests]
    wanted = {_key(m) for m in desired}

    resources = {_key(m): _resource_of(m, kinds) for m in desired}
    unlisted = [key for key in resources if key not in live]
    if not unlisted:  # every rendered child is in the list: no read by name
        _check_names(owner, resources, live, [])
        await _write(client, desired, resources, live, owner, field_manager, result, cache, live)
    else:
        # Read, check and write under the names' locks, so that of two MLServes of this
        # process rendering the same new names, the first to take the locks holds them all.
        async with _names_locked(owner.namespace, list(resources)):
            found = await _by_name(client, cache, owner.namespace, unlisted, resources)
            _check_names(owner, resources, live, found)
            # Found by name and ours to write (a child the cache has not seen yet): compared
            # like a listed one, so it is not written again when it matches.
            current = {**live, **{key: obj for key, obj in zip(unlisted, found, strict=True) if obj is not None}}
            await _write(client, desired, resources, current, owner, field_manager, result, cache, live)

    for key, obj in live.items():
        if key in wanted or not owner.owns(obj):
            continue
        resource = next(r for r in kinds if api_version_kind(r)[1] == key[0])
        await delete_object(client, resource, key[1], namespace=owner.namespace, what=_label(*key))
        if cache is not None:
            cache.remove(owner.namespace, key[0], key[1], notify=False)
        result.live.pop(key, None)
        result.pruned.append(_label(*key))
    if result.changed:
        log.info(
            "children of %s/%s: applied %s, pruned %s",
            owner.namespace,
            owner.name,
            result.applied or "nothing",
            result.pruned or "nothing",
        )
    return result


_NAME_LOCKS: weakref.WeakValueDictionary[tuple[int, str, str, str], asyncio.Lock] = weakref.WeakValueDictionary()
"""The lock of each child name being written for the first time (one per event loop: an
asyncio lock belongs to one); a lock nobody holds or waits for is dropped."""


@contextlib.asynccontextmanager
async def _names_locked(namespace: str, keys: Sequence[tuple[str, str]]) -> AsyncIterator[None]:
    """Hold the locks of the (kind, name) ``keys`` in ``namespace``, taken in sorted order (two
    MLServes sharing some names never wait for each other in a circle)."""
    loop = id(asyncio.get_running_loop())
    locks = []
    for kind, name in sorted(set(keys)):
        key = (loop, namespace, kind, name)
        lock = _NAME_LOCKS.get(key)
        if lock is None:
            lock = asyncio.Lock()
            _NAME_LOCKS[key] = lock
        locks.append(lock)
    async with contextlib.AsyncExitStack() as stack:
        for lock in locks:
            await stack.enter_async_context(lock)
        yield


def _check_names(
    owner: Owner,
    resources: Mapping[tuple[str, str], type[NamespacedResource]],
    live: Mapping[tuple[str, str], dict[str, Any]],
    found: Sequence[dict[str, Any] | None],
) -> None:
    """Raise :class:`NameTaken` when a rendered child's name is held by an object ``owner``
    may not write. The children the list found are judged by their controller; ``found``
    holds the others as read by name, in the order of the rendered children missing from
    ``live`` (None: absent)."""
    unlisted = iter(found)
    taken: dict[str, str] = {}
    for key in resources:
        labelled = key in live
        current = live[key] if labelled else next(unlisted)
        why = None if current is None else _taken_by(current, owner, labelled=labelled)
        if why is not None:
            taken[_label(*key)] = why
    if taken:
        raise _name_taken(owner, taken)


async def _write(
    client: AsyncClient,
    desired: Sequence[dict[str, Any]],
    resources: Mapping[tuple[str, str], type[NamespacedResource]],
    live: Mapping[tuple[str, str], dict[str, Any]],
    owner: Owner,
    field_manager: str,
    result: ApplyResult,
    cache: ChildCache | None,
    cached: Mapping[tuple[str, str], dict[str, Any]],
) -> None:
    """Apply every rendered child whose live object differs from the rendering; ``cached``:
    the children as the cache (or the list) held them when the reconcile read them.

    The applies are sent together (a new version rewrites four or five children: one round
    trip instead of five); each is independent of the others. When some fail, the ones that
    succeeded are recorded and the first failure is raised."""
    writes: list[tuple[tuple[str, str], dict[str, Any]]] = []
    for manifest in desired:
        key = _key(manifest)
        current = live.get(key)
        if matches(manifest, current, api.ANNOTATION_APPLIED_HASH):
            assert current is not None
            result.live[key] = current
            result.unchanged.append(_label(*key))
            continue
        if current is not None and _hash_of(current) == _hash_of(manifest):
            # Same rendering as last applied, yet the live object differs: changed by hand.
            body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
            body["metadata"] = {k: v for k, v in manifest["metadata"].items() if k in ("labels", "annotations")}
            result.drift[_label(*key)] = mismatches(body, current) or ["metadata"]
        writes.append((key, manifest))
    answers = await asyncio.gather(
        *(
            apply_object(
                client,
                resources[key],
                manifest,
                namespace=owner.namespace,
                field_manager=field_manager,
                what=_label(*key),
            )
            for key, manifest in writes
        ),
        return_exceptions=True,
    )
    failure: BaseException | None = None
    for (key, _), answer in zip(writes, answers, strict=True):
        if isinstance(answer, BaseException):
            failure = failure or answer
            continue
        result.live[key] = answer
        if cache is not None:
            read = (cached.get(key) or {}).get("metadata") or {}
            cache.put_written(answer, read.get("resourceVersion"))
        result.applied.append(_label(*key))
    if failure is not None:
        raise failure
