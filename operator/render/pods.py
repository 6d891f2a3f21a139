"""Pieces shared by every pod the renderers build: quantities, node selectors, env lists."""

from __future__ import annotations

from typing import Any

from mlserve.models.enums import NodeCapacityType
from mlserve.operator.spec.env import EnvVar
from mlserve.operator.spec.pods import PodExtras, merge_pod_extras

from .settings import RenderSettings

__all__ = [
    "container_env",
    "cpu_quantity",
    "memory_quantity",
    "node_selector",
    "pod_extras",
    "pod_metadata",
    "pod_spec_extras",
    "resources",
]

# Karpenter's values of the karpenter.sh/capacity-type label.
_CAPACITY_LABEL_VALUES = {
    NodeCapacityType.SPOT: "spot",
    NodeCapacityType.ON_DEMAND: "on-demand",
}


def cpu_quantity(cores: float) -> str:
    """Whole cores as ``"2"``, fractions in millicores (``0.5`` → ``"500m"``)."""
    millis = round(cores * 1000)
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis}m"


def memory_quantity(gigabytes: int) -> str:
    """Whole gigabytes as Darwin writes them: ``"4G"`` (10^9 bytes, not Gi)."""
    return f"{gigabytes}G"


def resources(cores: float, memory: int) -> dict[str, dict[str, str]]:
    """Requests equal to limits (Guaranteed QoS), as Darwin renders them."""
    amounts = {"cpu": cpu_quantity(cores), "memory": memory_quantity(memory)}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def node_selector(capacity: NodeCapacityType, settings: RenderSettings) -> dict[str, str] | None:
    """``{karpenter.sh/capacity-type: spot|on-demand}``, or None when the setting turns it off."""
    if settings.capacity_type_label is None:
        return None
    return {settings.capacity_type_label: _CAPACITY_LABEL_VALUES[capacity]}


def container_env(env: tuple[EnvVar, ...]) -> list[dict[str, Any]]:
    """A container's ``env`` list, in the (sorted) order given; a secret reference becomes
    ``valueFrom.secretKeyRef``."""
    result: list[dict[str, Any]] = []
    for var in env:
        if var.secret is not None:
            ref = {"name": var.secret.name, "key": var.secret.key}
            result.append({"name": var.name, "valueFrom": {"secretKeyRef": ref}})
        elif var.value:
            result.append({"name": var.name, "value": var.value})
        else:
            # An empty value is stored without the field (it is omitempty): render it the same
            # way, or every drift check would see a difference and apply again.
            result.append({"name": var.name})
    return result


def pod_extras(environment: PodExtras, settings: RenderSettings) -> PodExtras:
    """The settings' pod extras with the environment's merged over them."""
    return merge_pod_extras(settings.pod_extras, environment)


def pod_metadata(extras: PodExtras, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    """A pod template's metadata: the extras' labels and annotations, the operator's over them."""
    metadata: dict[str, Any] = {"labels": {**extras.labels, **labels}}
    merged_annotations = {**extras.annotations, **annotations}
    if merged_annotations:
        metadata["annotations"] = merged_annotations
    return metadata


def pod_spec_extras(extras: PodExtras, selector: dict[str, str] | None) -> dict[str, Any]:
    """The pod spec fields the extras set (service account, pull secrets, tolerations) and the
    node selector: the extras' merged under the capacity-type selector."""
    fields: dict[str, Any] = {}
    if extras.service_account:
        fields["serviceAccountName"] = extras.service_account
    if extras.image_pull_secrets:
        fields["imagePullSecrets"] = [{"name": name} for name in extras.image_pull_secrets]
    if extras.tolerations:
        fields["tolerations"] = [toleration.manifest() for toleration in extras.tolerations]
    nodes = {**extras.node_selector, **(selector or {})}
    if nodes:
        fields["nodeSelector"] = nodes
    return fields
