"""Children: server-side apply of the rendered manifests, pruning of the ones no longer rendered.

One call per reconcile. It reads the live children with one list per kind (label
selector of the MLServe's identity), applies only the manifests whose live object no
longer matches (:mod:`.diff`), and deletes the children that carry the MLServe's labels
and ownerReference but are no longer rendered (the HPA when min = max, the PDB when one
replica). A converged MLServe costs one list per kind and no write.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource

from mlserve.operator.spec import api
from mlserve.operator.spec.api import Reason

from .diff import manifest_hash, matches, mismatches
from .errors import TemporaryFailure
from .kube import api_version_kind, apply_object, as_dict, delete_object, kind_not_served, resource_for

__all__ = ["ApplyResult", "Owner", "apply_children", "list_children", "stamp"]

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
            obj = as_dict(item)
            obj.setdefault("kind", kind)
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


async def apply_children(
    client: AsyncClient,
    manifests: Sequence[Mapping[str, Any]],
    owner: Owner,
    selector: Mapping[str, str],
    kinds: Iterable[type[NamespacedResource]],
    field_manager: str,
) -> ApplyResult:
    """Make the owner's children exactly ``manifests``, writing only what differs."""
    kinds = tuple(kinds)
    live = await list_children(client, kinds, owner.namespace, selector)
    result = ApplyResult(live=dict(live))
    desired = [stamp(m, owner) for m in manifests]
    wanted = {_key(m) for m in desired}

    for manifest in desired:
        key = _key(manifest)
        current = live.get(key)
        if matches(manifest, current, api.ANNOTATION_APPLIED_HASH):
            result.unchanged.append(_label(*key))
            continue
        if current is not None and _hash_of(current) == _hash_of(manifest):
            # Same rendering as last applied, yet the live object differs: changed by hand.
            body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
            body["metadata"] = {k: v for k, v in manifest["metadata"].items() if k in ("labels", "annotations")}
            result.drift[_label(*key)] = mismatches(body, current) or ["metadata"]
        api_version = str(manifest.get("apiVersion"))
        resource = next((r for r in kinds if api_version_kind(r) == (api_version, key[0])), None) or resource_for(
            manifest
        )
        result.live[key] = await apply_object(
            client, resource, manifest, namespace=owner.namespace, field_manager=field_manager, what=_label(*key)
        )
        result.applied.append(_label(*key))

    for key, obj in live.items():
        if key in wanted or not owner.owns(obj):
            continue
        resource = next(r for r in kinds if api_version_kind(r)[1] == key[0])
        await delete_object(client, resource, key[1], namespace=owner.namespace, what=_label(*key))
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
