"""The Kubernetes API as the reconcile sees it: one lightkube client, resource classes, counters.

The MLServe and KubeRay kinds are lightkube generic resources; the core kinds of the
children come from lightkube's models. :class:`RequestCounter` counts the requests the
client sends by verb, so tests and ``bench/`` can show how many requests (and writes) a
reconcile costs.
"""

from __future__ import annotations

import collections
import contextvars
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Service
from lightkube.resources.networking_v1 import Ingress
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import CascadeType, PatchType

from mlserve.operator import metrics
from mlserve.operator.spec import api
from mlserve.operator.spec.api import Reason

from .errors import TemporaryFailure

T = TypeVar("T")

__all__ = [
    "API_KINDS",
    "WORKFLOW_KINDS",
    "MLServe",
    "RayCronJob",
    "RayJob",
    "RequestCounter",
    "api_version_kind",
    "apply_object",
    "as_dict",
    "delete_object",
    "get_object",
    "install_hint",
    "kind_not_served",
    "kind_served",
    "make_client",
    "resource_class",
    "resource_for",
]

MLServe = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)
RayJob = create_namespaced_resource(api.RAYJOB.group, api.RAYJOB.version, api.RAYJOB.kind, api.RAYJOB.plural)
RayCronJob = create_namespaced_resource(
    api.RAYCRONJOB.group, api.RAYCRONJOB.version, api.RAYCRONJOB.kind, api.RAYCRONJOB.plural
)

# The lightkube class of every kind of the registry (spec/api.py): the core kinds' typed models,
# generic resources for KubeRay's. tests/operator/test_reconcile_units.py checks that every kind
# of the registry has its class here.
_RESOURCES: dict[api.ChildKind, type[NamespacedResource]] = {
    api.DEPLOYMENT: Deployment,
    api.SERVICE: Service,
    api.HORIZONTAL_POD_AUTOSCALER: HorizontalPodAutoscaler,
    api.POD_DISRUPTION_BUDGET: PodDisruptionBudget,
    api.INGRESS: Ingress,
    api.RAYJOB: RayJob,
    api.RAYCRONJOB: RayCronJob,
}

# The kinds each serve type may render, so pruning knows where to look.
API_KINDS: tuple[type[NamespacedResource], ...] = tuple(_RESOURCES[kind] for kind in api.API_CHILD_KINDS)
WORKFLOW_KINDS: tuple[type[NamespacedResource], ...] = tuple(_RESOURCES[kind] for kind in api.WORKFLOW_CHILD_KINDS)


def resource_class(kind: api.ChildKind) -> type[NamespacedResource]:
    """The lightkube class of a kind of the registry."""
    return _RESOURCES[kind]


def resource_for(manifest: Mapping[str, Any]) -> type[NamespacedResource]:
    """The lightkube class of a rendered manifest; ValueError for a kind we never render."""
    return _RESOURCES[api.child_kind(str(manifest.get("apiVersion")), str(manifest.get("kind")))]


def api_version_kind(resource: type[NamespacedResource]) -> tuple[str, str]:
    info = resource._api_info.resource
    api_version = f"{info.group}/{info.version}" if info.group else info.version
    return api_version, info.kind


@dataclass
class RequestCounter:
    """Counts the requests a client sends, by HTTP method (watches included as GET)."""

    by_method: collections.Counter[str] = field(default_factory=collections.Counter)
    log: list[tuple[str, str]] = field(default_factory=list)
    keep_log: bool = False

    async def __call__(self, request: httpx2.Request) -> None:
        self.by_method[request.method] += 1
        if self.keep_log:
            self.log.append((request.method, str(request.url.path)))

    @property
    def total(self) -> int:
        return sum(self.by_method.values())

    @property
    def writes(self) -> int:
        return sum(n for method, n in self.by_method.items() if method != "GET")

    def reset(self) -> None:
        self.by_method.clear()
        self.log.clear()


current_counter: contextvars.ContextVar[RequestCounter | None] = contextvars.ContextVar("current_counter", default=None)
"""The counter of the reconcile running in this task (requests are counted per reconcile)."""


async def _count_in_context(request: httpx2.Request) -> None:
    counter = current_counter.get()
    if counter is not None:
        await counter(request)


def make_client(field_manager: str, counter: RequestCounter | None = None) -> AsyncClient:
    """A lightkube client from the in-cluster config, ``KUBECONFIG`` or ``~/.kube/config``.

    Every request is counted by ``counter`` (all requests) and by the counter set in
    :data:`current_counter` for the running task (one reconcile's requests).
    """
    client = AsyncClient(field_manager=field_manager, timeout=httpx2.Timeout(30.0))
    hooks = client._client._client.event_hooks["request"]
    hooks.append(_count_in_context)
    if counter is not None:
        hooks.append(counter)
    client._client._client.event_hooks["response"].append(metrics.observe_api_response)
    return client


# --- writes: one server-side apply and one delete for every object the operator owns -----------


def as_dict(obj: object, kind: str | None = None) -> dict[str, Any]:
    """A lightkube object (typed model or generic resource) as a plain dict; with ``kind``,
    its ``kind`` field set when the server left it out (items of a list, typed models)."""
    to_dict: Callable[[], dict[str, Any]] | None = getattr(obj, "to_dict", None)
    found = to_dict() if to_dict is not None else dict(cast(Mapping[str, Any], obj))
    if kind is not None:
        found.setdefault("kind", kind)
    return found


def kind_not_served(exc: Exception) -> bool:
    """The API server does not serve the kind at all (its CRD is not installed).

    It then answers 404 with a plain-text body ("404 page not found"), which lightkube
    raises as an ``httpx`` error rather than an :class:`ApiError`; a 404 of a served kind
    (an object or a namespace not found) is a JSON ``Status`` and an :class:`ApiError`.
    """
    return isinstance(exc, httpx2.HTTPStatusError) and not isinstance(exc, ApiError) and exc.response.status_code == 404


async def kind_served(client: AsyncClient, api_version: str, kind: str) -> bool:
    """Whether the API server serves ``kind`` of ``api_version``, from discovery: one GET of
    the group version's resource list (every authenticated user may read it), not a LIST."""
    prefix = "/api" if "/" not in api_version else "/apis"
    http: httpx2.AsyncClient = client._client._client  # lightkube has no call for discovery
    response = await http.get(f"{prefix}/{api_version}")
    if response.status_code == 404:
        return False
    response.raise_for_status()
    resources = response.json().get("resources") or []
    return any(r.get("kind") == kind and "/" not in str(r.get("name")) for r in resources)


def install_hint(api_version: str, kind: str) -> str:
    """What to install so that the cluster serves ``kind``."""
    if api_version.startswith(f"{api.RAYJOB.group}/"):
        extra = " (RayCronJob needs KubeRay 1.6 or later)" if kind == api.RAYCRONJOB.kind else ""
        return f"install KubeRay's CRDs{extra}"
    return f"install the CRD of {kind} ({api_version})"


async def _unless_absent(request: Awaitable[T], doing: str, failure_reason: Reason) -> T | None:
    """The request's answer; None when the object is not there or its kind is not served.
    Any other failure becomes :class:`~.errors.TemporaryFailure` (``doing`` says what failed)."""
    try:
        return await request
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise TemporaryFailure(failure_reason, f"{doing} failed: {exc.status.message}") from exc
    except httpx2.HTTPStatusError as exc:
        if kind_not_served(exc):
            return None
        raise TemporaryFailure(failure_reason, f"{doing} failed: HTTP {exc.response.status_code}") from exc


async def get_object(
    client: AsyncClient,
    resource: type[NamespacedResource],
    name: str,
    *,
    namespace: str,
    what: str,
    failure_reason: Reason = Reason.API_ERROR,
) -> dict[str, Any] | None:
    """The object as the server holds it, or None when there is none (or its kind is not
    served). Other failures become :class:`~.errors.TemporaryFailure` with ``failure_reason``."""
    _, kind = api_version_kind(resource)
    found = await _unless_absent(client.get(resource, name, namespace=namespace), f"reading {what}", failure_reason)
    if found is None:
        return None
    return as_dict(found, kind)


async def apply_object(
    client: AsyncClient,
    resource: type[NamespacedResource],
    manifest: Mapping[str, Any],
    *,
    namespace: str,
    field_manager: str,
    what: str,
    failure_reason: Reason = Reason.APPLY_FAILED,
) -> dict[str, Any]:
    """Server-side apply ``manifest`` (forcing conflicts: the operator owns these fields) and
    return the object as the server holds it.

    Failures become :class:`~.errors.TemporaryFailure`: ``KindNotInstalled`` when the cluster
    does not serve the kind (with what to install), ``failure_reason`` otherwise; ``what``
    names the object in the message (e.g. ``Deployment/checkout-prod``).
    """
    api_version, kind = str(manifest.get("apiVersion")), str(manifest.get("kind"))
    name = str((manifest.get("metadata") or {}).get("name"))
    try:
        applied = await client.patch(
            resource,
            name,
            dict(manifest),
            namespace=namespace,
            patch_type=PatchType.APPLY,
            field_manager=field_manager,
            force=True,
        )
    except ApiError as exc:
        raise TemporaryFailure(
            failure_reason, f"server-side apply of {what} was refused: {exc.status.message}"
        ) from exc
    except httpx2.HTTPStatusError as exc:
        if kind_not_served(exc):
            raise TemporaryFailure(
                Reason.KIND_NOT_INSTALLED,
                f"this cluster does not serve {api_version} {kind}, so {what} cannot be "
                f"created: {install_hint(api_version, kind)}; retried until it is served",
            ) from exc
        raise TemporaryFailure(
            failure_reason, f"server-side apply of {what} failed: HTTP {exc.response.status_code}"
        ) from exc
    return as_dict(applied, kind)


async def delete_object(
    client: AsyncClient,
    resource: type[NamespacedResource],
    name: str,
    *,
    namespace: str,
    what: str,
    failure_reason: Reason = Reason.PRUNE_FAILED,
) -> bool:
    """Delete an object (dependents in the background); False when it was already gone or its
    kind is not served. Other failures become :class:`~.errors.TemporaryFailure` with
    ``failure_reason``."""

    async def deleted() -> bool:
        await client.delete(resource, name, namespace=namespace, cascade=CascadeType.BACKGROUND)
        return True

    return await _unless_absent(deleted(), f"deleting {what}", failure_reason) is True
