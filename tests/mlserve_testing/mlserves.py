"""Helpers to drive MLServes as a user would (``kubectl apply``) and read what the operator did."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Event, Service
from lightkube.resources.networking_v1 import Ingress
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from mlserve_testing import darwin
from mlserve_testing.wait import wait_for

MLServe = create_namespaced_resource("mlserve.darwin.io", "v1alpha1", "MLServe", "mlserves")
CHILD_KINDS = (Deployment, Service, HorizontalPodAutoscaler, Ingress, PodDisruptionBudget)
USER_MANAGER = "kubectl-client-side-apply"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def mlserve(name: str, namespace: str, environment: str, version: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlserve.darwin.io/v1alpha1",
        "kind": "MLServe",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"environment": environment, "type": "api", "artifactVersion": version, **spec},
    }


def apply(client: Client, body: Mapping[str, Any], manager: str = "kubectl") -> Any:
    """Server-side apply as ``kubectl apply --server-side`` does."""
    meta = body["metadata"]
    return client.patch(
        MLServe,
        meta["name"],
        dict(body),
        namespace=meta["namespace"],
        patch_type=PatchType.APPLY,
        field_manager=manager,
        force=True,
    )


def get(client: Client, name: str, namespace: str) -> dict[str, Any]:
    obj = client.get(MLServe, name, namespace=namespace)
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def condition(body: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def wait_condition(
    client: Client,
    name: str,
    namespace: str,
    type_: str,
    status: str = "True",
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = get(client, name, namespace)
        cond = condition(body, type_)
        if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
            return body
        return None

    what = f"MLServe {namespace}/{name} condition {type_}={status}" + (f" reason {reason}" if reason else "")
    return wait_for(check, timeout=timeout, what=what, ignore=(ApiError,))


def children(client: Client, namespace: str) -> dict[str, Any]:
    """Kind/name -> object, of everything the operator labelled in the namespace."""
    found: dict[str, Any] = {}
    for kind in CHILD_KINDS:
        for obj in client.list(kind, namespace=namespace, labels={"app.kubernetes.io/managed-by": "mlserve-operator"}):
            found[f"{kind.__name__}/{obj.metadata.name}"] = obj
    return found


def events(client: Client, namespace: str, name: str) -> list[Any]:
    return [e for e in client.list(Event, namespace=namespace) if e.involvedObject and e.involvedObject.name == name]


def gone(client: Client, resource: Any, name: str, namespace: str) -> bool:
    try:
        client.get(resource, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return True
        raise
    return False


async def ready_at_v1(client: Client, namespace: str, prefix: str = "fraud") -> tuple[str, str, darwin.Seed]:
    """A one-pod API serve seeded as Darwin writes it, applied at v1 and Ready: (serve, env, seed)."""
    serve, env = unique(prefix), unique("prod")
    seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
    apply(client, mlserve(serve, namespace, env, "v1"))
    wait_condition(client, serve, namespace, "Ready", timeout=90)
    return serve, env, seed
